"""Registration of every agentgym environment with Gymnasium under the ``agentgym`` namespace.

Entry points are strings, so ``import agentgym`` stays cheap: an environment's module (and its heavy
dependencies, such as Playwright or TextWorld) is imported only when ``gymnasium.make`` builds it.
"""

from __future__ import annotations

import gymnasium as gym

# id -> (entry point, one-line description). Add a line here when you add an environment.
ENVS: dict[str, tuple[str, str]] = {
    "agentgym/Sokoban-v0": ("agentgym.envs.sokoban:SokobanEnv", "push boxes onto targets (RAGEN's Sokoban)"),
    "agentgym/FrozenLake-v0": ("agentgym.envs.frozenlake:FrozenLakeEnv", "cross a frozen lake without falling in"),
    "agentgym/GSM8K-v0": ("agentgym.envs.gsm8k:GSM8KEnv", "grade-school math word problems"),
    "agentgym/WebShop-v0": ("agentgym.envs.webshop:WebShopEnv", "find and buy a product on a web shop in a real browser"),
}


def register_all() -> None:
    """Register every environment of ``ENVS`` that is not registered yet."""
    for env_id, (entry_point, _) in ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)
