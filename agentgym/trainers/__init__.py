"""RL and SFT trainers."""
