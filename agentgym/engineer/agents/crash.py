"""The crashing agent: reads its instructions, then fails with an exception before it submits anything."""

from __future__ import annotations

import os
from pathlib import Path


def main() -> None:
    workspace = Path(os.environ.get("AGENTGYM_WORKSPACE", "."))
    print(f"read {len((workspace / 'instructions.md').read_text())} characters of instructions", flush=True)
    raise RuntimeError("the crash agent fails on purpose (a bug in its training code)")


if __name__ == "__main__":
    main()
