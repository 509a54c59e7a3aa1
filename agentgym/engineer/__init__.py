"""``agentgym engineer``: an agent engineers the post-training of a base model in an isolated workspace
within a budget, and a grading server scores its submissions on a held-out split (as Agent^2 RL-Bench).

The package sits above ``agentgym.eval`` and ``agentgym.trainers`` (nothing below imports it;
``tests/test_layering.py`` keeps it so). Its modules:

- ``tasks``: the tasks (GSM8K, HumanEval, FrozenLake, Sokoban, ALFWorld, WebShop): environment, train
  split (written into the workspace), held-out split (never), description, evaluation settings.
- ``grader``: ``Grader``: the cached baseline, submissions checked (inside the workspace, loadable),
  scored through ``agentgym.eval`` on the held-out split, each recorded in ``submissions.jsonl``.
- ``server``: ``GradingServer``: the grader over HTTP on 127.0.0.1 and/or a Unix socket inside the
  workspace (one evaluation at a time, submissions queue, "budget over" after the deadline);
  ``GradingClient`` and a small command line to talk to it.
- ``reports``: ``summary.jsonl`` (one line per attempt, with its failure type), ``metrics.json`` (the
  process metrics), ``report.html`` (score trajectory, attempts, metrics), ``results.csv`` across runs
  and the leaderboard entry of a run.
- ``workspace``, ``isolation``, ``run``, ``cli``, ``agents``: the workspace, the sandbox, the budget, the
  agent runner, the command line and the reference agents.
"""
