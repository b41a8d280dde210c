"""Spam defence at the door: what a port-25 client must get past before its mail is taken.

One module per concern, each usable and testable alone:

* :mod:`~mailsuite.antispam.dnsbl`: DNS block and allow lists (RFC 5782).
* :mod:`~mailsuite.antispam.checks`: pregreet memory, FCrDNS and HELO sanity.
* :mod:`~mailsuite.antispam.greylist`: RFC 6647 greylisting with durable state.
* :mod:`~mailsuite.antispam.ratelimit`: per-IP and per-user sliding windows.
* :mod:`~mailsuite.antispam.policy`: :class:`~mailsuite.antispam.policy.Antispam`,
  the object service.py puts in ``context.antispam``; it combines the checks
  under the ``[antispam]`` configuration and is the only module the SMTP
  server calls (three calls: connect, RCPT, end of message).
"""
