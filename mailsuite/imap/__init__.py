"""The IMAP4rev1 server (RFC 3501) with IDLE, UIDPLUS, MOVE, CONDSTORE and friends.

``listener.build_factory`` is what ``mailsuite.service`` plugs into the 143
(STARTTLS) and 993 (implicit TLS) listeners; ``server`` is the protocol,
``session`` the per-connection view of a selected folder, ``wire``/``mime``/
``search`` the data formats.
"""
