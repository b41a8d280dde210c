"""POP3 retrieval of a user's INBOX: port 110 with STLS, port 995 with implicit TLS.

Modules:
- listener: the factory service.py puts behind the "pop3" and "pop3s" listeners.
- protocol: the session state machine (RFC 1939, 2449, 2595, 3206, 5034).
- maildrop: a session's numbered snapshot of INBOX, DELE marks, the UPDATE state.
- encoding: stored bytes -> byte-stuffed CRLF multi-line responses, chunk by chunk.
- streaming: a push producer writing long responses with flat memory.

Rules a contributor must keep: the session reaches the store only through
IUserMailbox / IFolder; UIDL is the store's message key; nothing is deleted
outside the UPDATE state; the maildrop lock is released on every way a
session can end.
"""
