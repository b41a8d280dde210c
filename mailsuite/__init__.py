"""mailsuite: one host's whole mail life (SMTP in, submission, relay queue, POP3, IMAP) on Twisted."""

__version__ = "0.1.0"
