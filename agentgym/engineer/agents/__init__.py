"""Reference agents for ``agentgym engineer``, each runnable inside the sandbox as
``python -m agentgym.engineer.agents.NAME``:

- ``sft_grpo``: a scripted engineer: SFT warm start on oracle trajectories of the train split, then GRPO,
  with ``agentgym train``; submits every checkpoint as it appears.
- ``copy_base``: copies the base model to ``output/v1`` and submits it (reported as ``copy_model_fallback``).
- ``crash``: fails with a Python exception (``code_error_runtime``).
- ``idle``: never submits and waits for the deadline (``timeout_no_submission``).
"""
