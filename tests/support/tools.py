"""The external tools some tests run, installed on demand: a test that needs one never skips for
want of it, and the fast tier (`make test-unit`, `-m "unit and not tools"`) never installs them.

- deploy validators (helm, kubectl for kustomize, kubernetes-validate, promtool, prometheus):
  deploy/tools/install.sh, prebuilt and pinned, into SCHEDULER_TOOLS_DIR or .local/tools.
- Chromium for the console's browser tests: devservers/install_chromium.sh (Debian's package:
  root or sudo).

Each installer runs at most once per test session; a failed install fails the test that asked,
with the installer's output.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = Path(os.environ.get("SCHEDULER_TOOLS_DIR") or ROOT / ".local/tools") / "bin"
CHROMIUM = "/usr/bin/chromium"


@functools.cache
def _install(script: str) -> tuple[int, str]:
    # Run even when the tools are there: the script is idempotent (~0.1 s) and moves stale pins.
    done = subprocess.run(
        ["bash", str(ROOT / script)], capture_output=True, text=True, check=False, timeout=600
    )
    return done.returncode, done.stdout + done.stderr


def _ensure(script: str) -> None:
    rc, output = _install(script)
    if rc != 0:
        pytest.fail(f"{script} failed (exit {rc}); this test needs what it installs:\n{output}")


def deploy_tool(name: str) -> Path:
    """The path of a pinned deploy validator, installed first if needed."""
    _ensure("deploy/tools/install.sh")
    path = TOOLS_BIN / name
    assert path.is_file(), f"{path} is missing after deploy/tools/install.sh"
    return path


def chromium() -> str:
    """Debian's chromium, installed first if needed."""
    if shutil.which("chromium") is None:
        _ensure("devservers/install_chromium.sh")
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing after install_chromium.sh"
    return CHROMIUM
