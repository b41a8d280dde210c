"""A scripted milter on loopback (a thread with plain sockets), for the actions rspamd does not take.

It negotiates version 6 with the flags it is given, answers "continue" to
every event, records what it was sent, and at the end of each message sends
the modification packets of ``script`` followed by its final answer.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any


def pkt(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + command + data


def cstr(*values: str) -> bytes:
    return b"".join(v.encode() + b"\0" for v in values)


class FakeMilter:
    """``script``: packets sent before the final answer at end of message; ``final``: that answer's packet."""

    def __init__(self, host: str = "127.0.0.1", *, script: list[bytes] | None = None, final: bytes = b"c",
                 protocol: int = 0, actions: int = 0x3F, silent: bool = False) -> None:
        self.script = script or []
        self.final = final
        self.protocol = protocol
        self.actions = actions
        self.silent = silent  # accept connections but never answer (timeouts)
        self.answers: dict[bytes, bytes] = {}  # event command -> answer other than "continue"
        self.reply_text = ""  # the text of a "y" (reply code) answer
        self.events: list[tuple[bytes, bytes]] = []  # every session's, in arrival order
        self.sessions: list[list[tuple[bytes, bytes]]] = []  # each connection's own
        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self.host, self.port = self._sock.getsockname()[:2]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = False

    @property
    def address(self) -> str:
        return f"inet:{self.host}:{self.port}"

    def commands(self) -> bytes:
        """The command bytes of the newest connection, in order (macros left out)."""
        return b"".join(c for c, _ in (self.sessions[-1] if self.sessions else []) if c != b"D")

    def start(self) -> "FakeMilter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._sock.close()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        buf = b""
        mine: list[tuple[bytes, bytes]] = []
        self.sessions.append(mine)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack("!I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    command, payload, buf = buf[4:5], buf[5:4 + n], buf[4 + n:]
                    self.events.append((command, payload))
                    mine.append((command, payload))
                    if self.silent:
                        continue
                    out = self._answer(command)
                    if out:
                        conn.sendall(out)

    def _answer(self, command: bytes) -> bytes:
        if command == b"O":
            return pkt(b"O", struct.pack("!III", 6, self.actions, self.protocol))
        if command in (b"D", b"A", b"Q"):
            return b""
        if command == b"E":
            return b"".join(self.script) + pkt(self.final)
        answer = self.answers.get(command, b"c")
        return pkt(answer, cstr(self.reply_text) if answer == b"y" else b"")

    def __enter__(self) -> "FakeMilter":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
