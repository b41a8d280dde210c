"""Whatever a client sends, every command line gets an answer and the server never crashes (hypothesis)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.imap.harness import Harness

_HARNESS: dict[str, Harness] = {}


def harness() -> Harness:
    if "h" not in _HARNESS:
        h = Harness(Path(tempfile.mkdtemp(prefix="imap-fuzz-")))
        h.deliver("alice@example.test", b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n")
        _HARNESS["h"] = h
    return _HARNESS["h"]


COMMANDS = ["FETCH", "UID FETCH", "STORE", "UID STORE", "SEARCH", "COPY", "MOVE", "LIST", "LSUB", "STATUS", "SELECT",
            "EXAMINE", "CREATE", "RENAME", "APPEND", "ENABLE", "ID", "EXPUNGE", "UID EXPUNGE", "NOOP", "CHECK", "NAMESPACE", "UNSELECT"]
TOKENS = ["1", "*", "1:*", "2:4", "0", "4294967296", "(", ")", "[", "]", "BODY[", "BODY.PEEK[HEADER.FIELDS (", "<0.10>", '"', '"x"',
          "{3}", "INBOX", "\\Seen", "FLAGS", "+FLAGS.SILENT", "(CHANGEDSINCE 1)", "(UNCHANGEDSINCE 0)", "NIL", "RETURN", "%", "&Jjo-", "&", "~{1}", "\x00", "\xff"]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(COMMANDS), st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=6))
def test_any_command_gets_one_tagged_answer(command, tokens):
    h = harness()
    conn = h.connect("alice@example.test")
    conn.send("s SELECT INBOX\r\n")
    line = ("t " + command + " " + " ".join(tokens)).encode("utf-8", "surrogateescape")
    line = line.replace(b"\r", b"").replace(b"\n", b"")
    out = conn.send(line + b"\r\n")
    if out.startswith(b"+ ") or out.endswith(b"+ OK\r\n"):
        out = conn.send(b"xyz\r\n")  # satisfy a literal the fuzzed line announced
    assert b"SERVERBUG" not in out, (line, out)
    assert re.search(rb"(^|\r\n)(t|\*) (OK|NO|BAD)", out) or conn.closed, (line, out)
    assert conn.send("z NOOP\r\n").endswith(b"z OK NOOP completed.\r\n") or conn.closed, line
    conn.protocol.connectionLost(None)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_binary_garbage_never_crashes(data):
    h = harness()
    conn = h.connect()
    conn.send(data + b"\r\n")
    assert not conn.closed or conn.protocol._errors > 0
    if not conn.closed:
        assert conn.send(b"z NOOP\r\n").endswith(b"z OK NOOP completed.\r\n") or conn.send(b"\r\n\r\nz NOOP\r\n").endswith(b"z OK NOOP completed.\r\n")
    conn.protocol.connectionLost(None)
