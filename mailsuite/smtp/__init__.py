"""SMTP server: inbound MX (port 25), submission (587 STARTTLS, 465 implicit TLS).

Modules, each with one job:

- :mod:`~mailsuite.smtp.address`: strict RFC 5321 / RFC 6531 path and parameter parser.
- :mod:`~mailsuite.smtp.data`: DATA decoder (end marker, dot-unstuffing, bare CR/LF) and BDAT checks.
- :mod:`~mailsuite.smtp.policy`: who may send as whom and relay where.
- :mod:`~mailsuite.smtp.headers`: Received, Return-Path, Delivered-To, Message-ID/Date.
- :mod:`~mailsuite.smtp.delivery`: hands one accepted transaction to the store and the queue.
- :mod:`~mailsuite.smtp.server`: the wire protocol (state machine, PIPELINING, STARTTLS, AUTH, BDAT).
- :mod:`~mailsuite.smtp.listener`: ``build_factory`` for service.py.
"""
