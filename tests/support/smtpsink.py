"""A scriptable SMTP sink on loopback: the "other MTA" for queue tests and benchmarks.

Why: relay tests need a real SMTP server that answers what the test asks
(4xx then 2xx, 5xx, a refusing greeting, STARTTLS, AUTH) and records what
arrived.  Stdlib only (socketserver threads), so it runs inside a synchronous
pytest test next to a ``twistd`` subprocess; ``python -m tests.support.smtpsink``
runs it alone (prints ``PORT <n>``, counts messages) for the benchmark.

Scripting: ``greetings``, ``data_replies`` and ``rcpt_replies[address]`` are
deques consumed one reply per use, falling back to success when empty.
"""

from __future__ import annotations

import base64
import collections
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_to: list[str]
    data: bytes
    mail_params: str = ""
    tls: bool = False
    auth_user: str | None = None
    helo: str = ""


@dataclass
class SinkState:
    """What the sink answers and what it saw (shared by every connection)."""

    extensions: list[str] = field(default_factory=lambda: ["PIPELINING", "SIZE 20000000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"])
    greetings: collections.deque[str] = field(default_factory=collections.deque)
    data_replies: collections.deque[str] = field(default_factory=collections.deque)
    rcpt_replies: dict[str, collections.deque[str]] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # AUTH credentials; empty: no AUTH offered
    require_auth: bool = False
    ssl_context: ssl.SSLContext | None = None
    implicit_tls: bool = False
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    active: int = 0
    max_active: int = 0
    commands: list[str] = field(default_factory=list)
    record_commands: bool = True
    keep_data: bool = True
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Session(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        state = self.server.state
        self.counted = True
        with state.lock:
            state.active += 1
            state.max_active = max(state.max_active, state.active)
        try:
            self._handle(state)
        finally:
            self._session_over(state)

    def _session_over(self, state: SinkState) -> None:
        """The client's session ends at QUIT (counted before the 221 goes out) or when the socket does."""
        with state.lock:
            if self.counted:
                self.counted = False
                state.active -= 1

    def _handle(self, state: SinkState) -> None:
        with state.lock:
            state.connections += 1
            greeting = state.greetings.popleft() if state.greetings else "220 sink.test ESMTP ready"
        sock: Any = self.request
        tls = False
        if state.implicit_tls and state.ssl_context is not None:
            sock = state.ssl_context.wrap_socket(sock, server_side=True)
            tls = True
        reader = sock.makefile("rb")

        def send(line: str) -> None:
            sock.sendall(line.encode("utf-8") + b"\r\n")

        send(greeting)
        if not greeting.startswith("2"):
            self._drain_quit(reader, send)
            return
        mail_from: str | None = None
        params = ""
        rcpts: list[str] = []
        auth_user: str | None = None
        helo = ""
        while True:
            raw = reader.readline(100000)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if state.record_commands:
                with state.lock:
                    state.commands.append(line if not verb == "AUTH" else "AUTH ***")
            if verb == "EHLO":
                helo = line[5:]
                ext = list(state.extensions)
                if state.ssl_context is not None and not tls:
                    ext.append("STARTTLS")
                if state.users:
                    ext.append("AUTH PLAIN LOGIN")
                lines = ["sink.test hello"] + ext
                for i, text in enumerate(lines):
                    send(f"250{'-' if i < len(lines) - 1 else ' '}{text}")
            elif verb == "HELO":
                helo = line[5:]
                send("250 sink.test")
            elif verb == "STARTTLS" and state.ssl_context is not None and not tls:
                send("220 2.0.0 go ahead")
                reader.close()
                sock = state.ssl_context.wrap_socket(sock, server_side=True)
                reader = sock.makefile("rb")
                tls = True
                mail_from, rcpts = None, []
            elif verb == "AUTH" and state.users:
                auth_user = self._auth(line, reader, send, state)
            elif verb == "MAIL":
                if state.require_auth and auth_user is None:
                    send("530 5.7.0 Authentication required")
                    continue
                address, _, params = line[10:].partition(">")
                mail_from, rcpts = address.lstrip("<"), []
                params = params.strip()
                send("250 2.1.0 ok")
            elif verb == "RCPT":
                if mail_from is None:
                    send("503 5.5.1 MAIL first")
                    continue
                address = line[8:].strip().lstrip("<").rstrip(">")
                with state.lock:
                    script = state.rcpt_replies.get(address.lower())
                    reply = script.popleft() if script else "250 2.1.5 ok"
                if reply.startswith("2"):
                    rcpts.append(address)
                send(reply)
            elif verb == "DATA":
                if not rcpts:
                    send("554 5.5.1 no valid recipients")
                    continue
                send("354 go ahead")
                data = self._read_data(reader)
                if data is None:
                    return
                with state.lock:
                    reply = state.data_replies.popleft() if state.data_replies else "250 2.0.0 queued"
                    if reply.startswith("2"):
                        state.count += 1
                        state.messages.append(Received(mail_from or "", rcpts, data if state.keep_data else b"", params, tls, auth_user, helo))
                send(reply)
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                send("250 2.0.0 ok")
            elif verb == "NOOP":
                send("250 2.0.0 ok")
            elif verb == "QUIT":
                self._session_over(state)
                send("221 2.0.0 bye")
                return
            else:
                send("502 5.5.2 command not recognized")

    @staticmethod
    def _drain_quit(reader: Any, send: Any) -> None:
        while True:
            raw = reader.readline(10000)
            if not raw:
                return
            if raw.strip().upper() == b"QUIT":
                send("221 bye")
                return
            send("503 5.5.1 not now")

    @staticmethod
    def _read_data(reader: Any) -> bytes | None:
        chunks = []
        while True:
            raw = reader.readline(1 << 20)
            if not raw:
                return None
            if raw == b".\r\n":
                return b"".join(chunks)
            chunks.append(raw[1:] if raw.startswith(b".") else raw)

    @staticmethod
    def _auth(line: str, reader: Any, send: Any, state: SinkState) -> str | None:
        parts = line.split()
        mech = parts[1].upper() if len(parts) > 1 else ""
        try:
            if mech == "PLAIN":
                blob = parts[2] if len(parts) > 2 else None
                if blob is None:
                    send("334 ")
                    blob = reader.readline().decode().strip()
                _, user, password = base64.b64decode(blob).decode().split("\0")
            elif mech == "LOGIN":
                send("334 VXNlcm5hbWU6")
                user = base64.b64decode(reader.readline().strip()).decode()
                send("334 UGFzc3dvcmQ6")
                password = base64.b64decode(reader.readline().strip()).decode()
            else:
                send("504 5.5.4 unknown mechanism")
                return None
        except ValueError:
            send("501 5.5.2 bad AUTH data")
            return None
        if state.users.get(user) == password:
            send("235 2.7.0 Authentication successful")
            return user
        send("535 5.7.8 Authentication credentials invalid")
        return None


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog of 5 drops connections when 50 arrive at once
    state: SinkState


class SMTPSink:
    """A sink on 127.0.0.1 (ephemeral port) running in background threads."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **state: Any) -> None:
        self.state = SinkState(**state)
        self.server = _Server((host, port), _Session)
        self.server.state = self.state
        self.host = host
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> "SMTPSink":
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "SMTPSink":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def messages(self) -> list[Received]:
        """Messages accepted so far."""
        with self.state.lock:
            return list(self.state.messages)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until ``count`` messages arrived (AssertionError with what came otherwise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.02)
        raise AssertionError(f"expected {count} message(s) at the sink, got {len(self.messages)}; commands: {self.state.commands[-20:]}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on (bound then released): for 'unreachable MX' tests."""
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


if __name__ == "__main__":
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="SMTP sink for benchmarks: accepts everything, counts messages")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sink = SMTPSink(args.host, args.port, record_commands=False, keep_data=False)
    print(f"PORT {sink.port}", flush=True)
    import os

    def finish(*_: object) -> None:
        print(f"COUNT {sink.state.count}", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, finish)
    sink.server.serve_forever(poll_interval=0.05)
