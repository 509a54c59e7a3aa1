"""WebShop as a local shop web app driven through Playwright in a real Chromium (``agentgym/WebShop-v0``)."""

from agentgym.envs.webshop.env import WebShopEnv

__all__ = ["WebShopEnv"]
