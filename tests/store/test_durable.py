"""durable.make_dirs / make_dir: directories holding mail are exactly 0700 whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailsuite.store.durable import make_dir, make_dirs


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o277])
def test_make_dirs_gives_every_new_directory_0700(tmp_path: Path, umask: int) -> None:
    """Parents included (os.makedirs would give them the umask's default), even under a umask that takes owner bits."""
    existing = tmp_path / "data"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    old = os.umask(umask)
    try:
        make_dirs(existing / "mail" / "example.test" / "alice")
        make_dirs(existing / "mail" / "example.test" / "alice")  # idempotent
        make_dir(existing / "mail" / "example.test" / "alice" / "cur")
        with pytest.raises(FileExistsError):
            make_dir(existing / "mail" / "example.test" / "alice" / "cur")
    finally:
        os.umask(old)
    assert _mode(existing) == 0o755  # what existed is left alone
    for path in ("mail", "mail/example.test", "mail/example.test/alice", "mail/example.test/alice/cur"):
        assert _mode(existing / path) == 0o700, path


def test_make_dirs_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        make_dirs(tmp_path / "file" / "sub")
