"""agentgym: Gymnasium-native multi-turn environments, trainers and eval suites for LLM agents."""

from agentgym.env import AgentEnv, Applied
from agentgym.formats import FORMATS, ResponseFormat, Tool, get_format
from agentgym.registry import ENVS, register_all

register_all()

__version__ = "0.1.0"
__all__ = ["AgentEnv", "Applied", "ENVS", "FORMATS", "ResponseFormat", "Tool", "get_format", "register_all"]
