"""Bridges from agentgym to other tools: an OpenEnv-protocol server and its Gymnasium client, TRL's
``environment_factory``, and Ray. Each module imports its tool lazily at the top of its own file, so
``import agentgym`` never needs them."""
