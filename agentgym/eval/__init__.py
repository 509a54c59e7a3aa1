"""Evaluation: the eval runner, metrics and reports.

The modules form a one-way stack (``tests/test_layering.py`` keeps it so); each imports only from the
lines above it:

- ``scoring``, ``mi``: model scoring passes and the MI estimators (no agentgym imports).
- ``metrics``: metrics of stored episodes (success interval, turn states, success curve, spike aggregation).
- ``control_tokens``: the wrong control-token mass of a reply, from a format's marker grammar.
- ``run_files``: the files of a run directory (``run.json``, ``trajectories.jsonl``, ``summary.json``).
- ``diagnostics``: MI, entropy and control-token mass of episodes scored with the policy's model.
- ``summary``: ``summary.json`` from stored records.
- ``worker_pool``: playing seeds here or in worker processes.
- ``runner``: ``evaluate``, the ``agentgym eval`` command's engine.
- ``format_variants``: the same policy under schema variants of its format.
- ``pytest_plugin``, ``leaderboard``: entry points.
"""

from agentgym.eval.mi import MutualInformationEMA, mutual_information

__all__ = ["MutualInformationEMA", "mutual_information"]
