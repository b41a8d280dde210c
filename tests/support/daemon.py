"""A real server program started by a test in a temporary directory, and stopped with it."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any


class TempDaemon:
    """Owns ``self.process`` (a Popen, once started) and ``self.dir`` (removed at stop)."""

    process: subprocess.Popen[Any] | None = None
    dir: Any = None

    def start(self) -> Any:  # pragma: no cover - each daemon starts its own way
        raise NotImplementedError

    def stop(self) -> None:
        """Terminate the program (kill it if it does not go within 10 s) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
