"""RFC 3501 grammar corners found with Dovecot's imaptest, over real TCP with a raw socket.

Each test speaks exact bytes to the real server so the rule under test is the
one on the wire, not a client library's idea of it.
"""

from __future__ import annotations

import socket

import pytest


class RawClient:
    """A line-level IMAP client: send one tagged command, collect lines up to its tagged reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.counter = 0
        self.greeting = self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"server closed the connection; pending {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def command(self, text: str | bytes) -> tuple[list[bytes], bytes]:
        """(untagged lines, tagged line) for one command (no literals in ``text``)."""
        self.counter += 1
        tag = b"t%d" % self.counter
        data = text.encode() if isinstance(text, str) else text
        self.sock.sendall(tag + b" " + data + b"\r\n")
        untagged: list[bytes] = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return untagged, line[len(tag) + 1 :]
            untagged.append(line)

    def ok(self, text: str | bytes) -> list[bytes]:
        untagged, done = self.command(text)
        assert done.startswith(b"OK"), (text, untagged, done)
        return untagged

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(imap_server, request):
    """A logged-in raw client; the user is named after the test (capture mode accepts any password)."""
    client = RawClient(imap_server.ports["imap"])
    user = request.node.name.replace("_", "-")[:40] + "@example.test"
    client.ok(f"LOGIN {user} secret")
    yield client
    client.close()


def test_tilde_starts_an_atom_unless_a_literal8_brace_follows(raw):
    """RFC 3501 9: "~" is an ATOM-CHAR; only "~{" opens BINARY's literal8 (RFC 3516).

    A mailbox called ~drafts must be creatable, listable and selectable as a
    bare atom, and a LIST pattern starting with ~ must not be a syntax error.
    """
    untagged = raw.ok('LIST "" ~drafts')
    assert untagged == []
    untagged, done = raw.command("SELECT ~drafts")
    assert done.startswith(b"NO"), done  # no such folder yet: NO, not BAD
    raw.ok("CREATE ~drafts")
    raw.ok("CREATE back~slash~")
    untagged = raw.ok('LIST "" ~*')
    assert [line.rsplit(b" ", 1)[1].strip(b'"') for line in untagged] == [b"~drafts"], untagged
    untagged = raw.ok("SELECT ~drafts")
    assert any(line.endswith(b" EXISTS") for line in untagged), untagged
    raw.ok("STATUS back~slash~ (MESSAGES)")
    raw.ok("NOOP")  # the connection is still in step


def test_every_atom_char_is_a_plain_mailbox_name(raw):
    """RFC 3501 9: any CHAR but atom-specials may appear in a bare-atom mailbox name."""
    name = "!#$'+,-.0123456789:;<=>?@^_`|[}~x"
    untagged, done = raw.command(f"SELECT {name}")
    assert done.startswith(b"NO"), done
    raw.ok(f"CREATE {name}")
    untagged = raw.ok(f'LIST "" {name}%*')
    assert len(untagged) == 1 and untagged[0].startswith(b"* LIST "), untagged
    raw.ok(f"SELECT {name}")


def test_a_name_that_is_not_modified_utf7_gets_no_not_bad(raw):
    """RFC 3501 5.1.3: modified UTF-7 is a naming rule, not grammar.

    ``x&'+,-y`` is a well-formed atom whose ``&...-`` shift is no valid
    modified base64: commands naming it are refused with NO (not BAD, which
    tells a client its command was malformed), and a LIST pattern like it
    simply matches nothing.
    """
    bogus = "x&'+,-y"
    for command in (f"SELECT {bogus}", f"CREATE {bogus}", f"STATUS {bogus} (MESSAGES)", f"DELETE {bogus}",
                    f"SUBSCRIBE {bogus}", f"RENAME INBOX {bogus}"):
        untagged, done = raw.command(command)
        assert done.startswith(b"NO"), (command, done)
    assert raw.ok(f'LIST "" {bogus}*') == []
    assert raw.ok(f'LIST {bogus} *') == []
    assert raw.ok(f'LSUB "" {bogus}') == []
    # a valid shift next to a broken pattern: the valid one is still answered
    raw.ok("CREATE caf&AOk-")
    untagged = raw.ok(f'LIST "" (caf&AOk- {bogus})')
    assert [line.rsplit(b" ", 1)[1].strip(b'"') for line in untagged] == [b"caf&AOk-"], untagged
