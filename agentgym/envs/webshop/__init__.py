"""WebShop as a local shop web app driven through Playwright in a real Chromium (``agentgym/WebShop-v0``)."""

from __future__ import annotations

from typing import Any

__all__ = ["WebShopEnv"]


def __getattr__(name: str) -> Any:
    # lazy, so that ``agentgym.envs.webshop.chromium`` can be imported without Playwright or Flask
    if name == "WebShopEnv":
        from agentgym.envs.webshop.env import WebShopEnv

        return WebShopEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
