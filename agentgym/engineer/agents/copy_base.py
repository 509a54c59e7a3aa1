"""The "copy the base model" agent: submits an untouched copy of ``models/base`` as ``output/v1``.

The grader scores it as the baseline, and the run's report classifies it as ``copy_model_fallback``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    workspace = Path(os.environ.get("AGENTGYM_WORKSPACE", "."))
    target = workspace / "output" / "v1"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(workspace / "models" / "base", target)
    print(f"copied the base model to {target}; submitting it", flush=True)
    return subprocess.run([str(workspace / "submit"), str(target)], cwd=workspace).returncode


if __name__ == "__main__":
    sys.exit(main())
