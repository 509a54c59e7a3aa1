"""The idle agent: never submits, and waits until the harness stops it at the deadline."""

from __future__ import annotations

import os
import time


def main() -> None:
    deadline = float(os.environ.get("AGENTGYM_DEADLINE", time.time() + 3600))
    print(f"idling until the deadline ({deadline - time.time():.0f}s from now)", flush=True)
    while True:  # the harness stops it; it never ends by itself
        time.sleep(60)


if __name__ == "__main__":
    main()
