"""Incoming messages spill to disk, and large messages are stored and read with bounded memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from mailsuite.interfaces import Delivery
from mailsuite.store import IncomingMessage

from .conftest import result

ALICE = "alice@example.test"
CHUNK = b"0123456789abcdef" * 4095 + b"0123456789abcd\r\n"  # 65,536 bytes, CRLF-terminated lines


def test_small_messages_stay_in_memory_and_big_ones_spill(tmp_path: Path):
    """Below the threshold no file is made; above it the bytes go to a temp file that discard removes."""
    small = IncomingMessage(str(tmp_path), spill_threshold=100)
    small.write(b"x" * 100)
    small.finish()
    assert small.path is None and small.open().read() == b"x" * 100
    big = IncomingMessage(str(tmp_path), spill_threshold=100)
    big.write(b"a" * 60)
    big.write(b"b" * 60)
    big.finish()
    assert big.path is not None and os.path.exists(big.path)
    with big.open() as one, big.open() as two:  # independent readers
        assert one.read(60) == b"a" * 60
        assert two.read() == b"a" * 60 + b"b" * 60
    assert big.size == 120
    big.discard()
    big.discard()
    assert not os.path.exists(big.path)
    with pytest.raises(ValueError):
        big.open()


def test_large_message_is_delivered_and_read_with_bounded_memory(store, tmp_path: Path):
    """A 32 MiB message goes SMTP-chunks -> spill file -> Maildir -> chunked reads without ever being held in memory."""
    total = 32 * 1024 * 1024
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        message = store.new_incoming()
        message.write(b"Subject: big\r\n\r\n")
        digest.update(b"Subject: big\r\n\r\n")
        for _ in range(total // len(CHUNK)):
            message.write(CHUNK)
            digest.update(CHUNK)
        message.finish()
        assert message.path is not None and message.path.startswith(str(tmp_path))
        (res,) = result(store.deliver(message, [Delivery(ALICE)]))
        assert res.error is None
        message.discard()
        folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
        (info,) = folder.messages()
        assert info.size == total + len(b"Subject: big\r\n\r\n")
        assert result(folder.read_headers([info.uid])) == {info.uid: b"Subject: big\r\n\r\n"}
        check = hashlib.sha256()
        reader = result(folder.open_reader(info.uid))
        position = 0
        while chunk := result(reader.read(position, 65536)):
            check.update(chunk)
            position += len(chunk)
        reader.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert check.hexdigest() == digest.hexdigest()
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes for a {total} byte message"
