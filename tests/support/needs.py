"""What a test needs from the machine: skipped where it is missing, a failure in CI.

``.ci/run`` installs every program the tests drive and runs as root, so in
CI (``CI`` set in the environment) a missing program or a refused mount is a
broken installation, never a reason to skip: the test fails and says why.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it when running in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (.ci/run installs the programs and runs as root)")
    pytest.skip(reason)


def mount_tmpfs(path: Path, size: str, mode: str | None = None) -> None:
    """Mount a tmpfs of ``size`` (e.g. "4m") on ``path`` (made if missing), for real full-disk tests."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",mode={mode}" if mode else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")


def unmount(path: Path) -> None:
    """Lazily unmount what :func:`mount_tmpfs` mounted (nothing happens if it is not mounted)."""
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill_disk(path: Path) -> None:
    """Write zeros into the new file ``path`` until its file system is full (to the last block)."""
    for size, mode in ((256 * 1024, "wb"), (512, "ab")):
        block = b"\0" * size
        with open(path, mode, buffering=0) as f:
            try:
                while True:
                    f.write(block)
            except OSError:
                pass
