"""Sending a reply at once when nothing is queued ahead of it on the connection.

Implementation notes:

- Why: Twisted's ``transport.write`` only queues the bytes and asks the
  reactor to watch the socket; they leave on the next reactor iteration,
  after two ``epoll_ctl`` calls.  For a server whose client waits for each
  small reply, that iteration is latency on every reply (about 100 us
  between the SMTP 250 being made and being sent, measured at the SMTP
  benchmark's one client) and reactor-thread CPU twice per message.
- :func:`write_now` sends with one ``send()`` when the connection is plain
  TCP (no TLS layer), open, not closing, and has nothing queued.  What the
  socket does not take, or any error, goes to ``transport.write`` as usual,
  so the byte order is kept and Twisted's flow control and error handling
  see the rest exactly as before.  Every other transport (TLS, test
  transports, a wrapper that changes what is written) gets ``transport.write``.
- Whether the shortcut applies is read from Twisted's own connection
  attributes (the write buffers, the TLS flag) by
  :func:`mailsuite.compat.idle_tcp_socket`; a Twisted without them only loses
  the shortcut.
"""

from __future__ import annotations

from typing import Any

from mailsuite.compat import idle_tcp_socket


def write_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``, sending it immediately when that keeps every guarantee of ``write``."""
    sock = idle_tcp_socket(transport)
    if sock is not None:
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # would block, or an error that Twisted's own write will meet and report
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
