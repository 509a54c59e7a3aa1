"""RL and SFT trainers: token-exact rollouts, PPO / GRPO / Dr.GRPO, SNR-aware filtering, SFT and
interleaved SFT + RL, driven by ``agentgym train --config FILE``.

``snr_filter`` needs only numpy; the rest (``agentgym.trainers.trainer`` and friends) imports torch.
"""

from agentgym.trainers.snr import filter_stats, group_scores, snr_filter

__all__ = ["filter_stats", "group_scores", "snr_filter"]
