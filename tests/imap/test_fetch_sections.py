"""FETCH's content items as worked out on the store's threads (mailsuite.imap.mime_fetch).

The reference for every section is :func:`mailsuite.imap.mime.section` (tested
against Python's email package in test_mime.py): FETCH must answer the same
octets while streaming spans from the file, reading only a partial's octets,
parsing a message once per FETCH however many items ask for it, and keeping
memory bounded.  The protocol runs on a StringTransport over the real Maildir
store (tests/imap/harness.py).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from mailsuite.imap import mime
from mailsuite.imap.mime import sections as mime_sections
from tests.imap.harness import Harness
from tests.imap.test_fetch import NESTED
from tests.support.imapwire import parse_untagged

ALICE = "alice@example.test"
CORPUS = sorted((Path(__file__).parent.parent / "data" / "cpython-email").glob("msg_*.txt"))


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def big_multipart(size: int) -> bytes:
    """A multipart/mixed message with a text part and a big attachment (bigger than the store reads whole)."""
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n"
    return (
        b"From: a@example.test\r\nTo: b@example.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + line * (size // len(line))
        + b"--B--\r\n"
    )


def connect(tmp_path: Path, *messages: bytes) -> tuple[Harness, object]:
    h = Harness(tmp_path)
    for data in messages:
        h.deliver(ALICE, data)
    conn = h.connect(ALICE)
    conn.send("s SELECT INBOX\r\n")
    return h, conn


def fetch_items(conn, command: str) -> tuple[dict[str, object], bytes]:
    """The items of a one-message FETCH (parsed by the strict response grammar) and the raw response."""
    out = conn.send(f"f {command}\r\n")
    assert out.endswith(b"f OK FETCH completed.\r\n"), out[-300:]
    raw = out[: -len(b"f OK FETCH completed.\r\n") - 2]
    return parse_untagged(raw).fetch_items(), raw


def sections_of(data: bytes) -> list[str]:
    """Every section text worth asking of ``data``: top level, each part with each specifier, and a missing part."""
    out = ["", "HEADER", "TEXT", "HEADER.FIELDS (SUBJECT FROM)", "HEADER.FIELDS.NOT (SUBJECT)"]
    for numbers, _part in mime.parse(data).walk():
        if numbers:
            n = ".".join(map(str, numbers))
            out += [n, f"{n}.MIME", f"{n}.HEADER", f"{n}.TEXT", f"{n}.HEADER.FIELDS (CONTENT-TYPE)"]
    return out + ["9.9"]


@pytest.mark.parametrize("name", [p.name for p in CORPUS] + ["nested", "big"])
def test_every_section_equals_the_reference(tmp_path, name):
    """BODY[section] and BODY[section]<origin.count> of every part, BODYSTRUCTURE, BODY and
    ENVELOPE, asked in one FETCH, answer exactly what mime.section/bodystructure/envelope give
    (a message above the store's read-whole size is memory-mapped, the others read)."""
    special = {"nested": NESTED, "big": big_multipart(400 * 1024)}
    data = special[name] if name in special else crlf((CORPUS[0].parent / name).read_bytes())
    _, conn = connect(tmp_path, data)
    sections = sections_of(data)
    items = [f"BODY.PEEK[{s}]" for s in sections] + [f"BODY.PEEK[{s}]<3.40>" for s in sections]
    got, raw = fetch_items(conn, "FETCH 1 (" + " ".join(items) + " BODYSTRUCTURE BODY ENVELOPE RFC822.SIZE)")
    for s in sections:
        numbers, specifier, names = mime_sections._parse_section_text(s)
        expected = mime.section(data, numbers, specifier, names)
        key = f"BODY[{s}]".upper()
        assert got[key] == expected, s
        assert got[key + "<3>"] == expected[3:43], s
    assert b"BODYSTRUCTURE " + mime.bodystructure(data, extended=True) in raw
    assert b" BODY " + mime.bodystructure(data, extended=False) in raw
    assert b"ENVELOPE " + mime.envelope(mime.read_header(data)) in raw
    assert got["RFC822.SIZE"] == len(data)


def test_partials_of_a_big_message_hold_only_what_they_return(tmp_path):
    """BODY[1]<o.n>, BODY[TEXT]<o.n> and BODY[]<o.n> deep inside a 6 MB message: the answer
    is right, and the FETCH allocates far less than the section (it reads only the octets a
    partial returns instead of copying the section, then slicing)."""
    data = big_multipart(6 * 1024 * 1024)
    _, conn = connect(tmp_path, data)
    root = mime.parse(data)
    attachment = root.children[1]
    tracemalloc.start()
    try:
        got, _ = fetch_items(conn, "FETCH 1 (BODY.PEEK[2]<4000000.10> BODY.PEEK[TEXT]<5000000.7> BODY.PEEK[]<3000000.12>)")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got["BODY[2]<4000000>"] == data[attachment.body_start + 4000000 : attachment.body_start + 4000010]
    assert got["BODY[TEXT]<5000000>"] == data[root.body_start + 5000000 : root.body_start + 5000007]
    assert got["BODY[]<3000000>"] == data[3000000:3000012]
    assert peak < 1024 * 1024, f"FETCH of 29 octets allocated {peak} bytes at its peak"


def test_many_items_of_one_message_parse_it_once(tmp_path, monkeypatch):
    """Sixty section items, BODYSTRUCTURE and BODY of one message cost one MIME parse, not one per item."""
    _, conn = connect(tmp_path, NESTED, NESTED)
    parses = []
    from mailsuite.imap.mime import tree

    real = tree.parse_octets

    def counting(buf):
        parses.append(len(buf))
        return real(buf)

    monkeypatch.setattr(tree, "parse_octets", counting)
    items = " ".join(["BODY.PEEK[1]", "BODY.PEEK[2.1]<0.5>", "BODY.PEEK[3.HEADER.FIELDS (SUBJECT)]"] * 20)
    out = conn.send(f"f FETCH 1:2 ({items} BODYSTRUCTURE BODY)\r\n")
    assert out.endswith(b"f OK FETCH completed.\r\n")
    assert out.count(b"BODY[2.1]<0> {5}\r\ninner") == 40
    assert len(parses) == 2, parses  # one per message


def test_a_message_removed_in_the_middle_of_its_literal_is_sent_whole(tmp_path):
    """Another program removes the file while BODY[] of it is being sent (the client is slow, so
    the writer waits for the transport): the literal still carries the message's octets, read
    through the reader opened before its length was announced."""
    data = big_multipart(800 * 1024)
    h, conn = connect(tmp_path, data)
    transport, write = conn.transport, conn.transport.write

    def small_window(chunk: bytes) -> None:  # the client reads slowly: the buffer fills after the first chunk
        write(chunk)
        if len(transport.value()) > 64 * 1024:
            conn.protocol.pauseProducing()

    transport.write = small_window  # type: ignore[method-assign]
    conn.protocol.dataReceived(b"f FETCH 1 (UID BODY.PEEK[])\r\n")
    conn.harness.clock.advance(0)
    sent = conn.transport.value()
    assert sent.startswith(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(data)) and len(sent) < len(data), len(sent)
    removed = [p for p in (tmp_path / "mail").rglob("*") if p.is_file() and p.parent.name in ("cur", "new") and p.stat().st_size == len(data)]
    assert len(removed) == 1
    removed[0].unlink()
    transport.write = write  # type: ignore[method-assign]  # the client now reads everything
    conn.protocol.resumeProducing()
    out = conn.read()  # everything sent, the part before the pause included
    assert out == b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(data) + data + b")\r\nf OK FETCH completed.\r\n"


def test_computed_items_beyond_the_budget_come_in_later_trips(tmp_path, monkeypatch):
    """A hundred distinct HEADER.FIELDS.NOT items of a message with a 30 KB header (3 MB of
    answers) are worked out a budget at a time, in several trips to the store's threads, and
    every answer is right."""
    from mailsuite.store.maildir import MaildirFolder

    header = b"".join(b"X-Field-%d: %s\r\n" % (n, b"v" * 80) for n in range(300))
    data = b"From: a@example.test\r\nSubject: wide\r\n" + header + b"\r\nbody\r\n"
    _, conn = connect(tmp_path, data)
    trips = []
    real = MaildirFolder.map_messages

    def counting(self, uids, fn):
        trips.append(list(uids))
        return real(self, uids, fn)

    monkeypatch.setattr(MaildirFolder, "map_messages", counting)
    items = [f"BODY.PEEK[HEADER.FIELDS.NOT (X-FIELD-{n})]" for n in range(100)]
    got, _ = fetch_items(conn, "FETCH 1 (" + " ".join(items) + " BODY.PEEK[TEXT])")  # TEXT: not a header-only FETCH
    assert got["BODY[TEXT]"] == b"body\r\n"
    for n in range(100):
        assert got[f"BODY[HEADER.FIELDS.NOT (X-FIELD-{n})]"] == mime.section(data, (), "HEADER.FIELDS.NOT", (f"X-Field-{n}",)), n
    assert 3 <= len(trips) <= 10, trips
