"""Evaluation: the eval runner, metrics and reports."""

from agentgym.eval.mi import MutualInformationEMA, mutual_information

__all__ = ["MutualInformationEMA", "mutual_information"]
