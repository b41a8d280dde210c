"""The IMAP4rev1 server (RFC 3501) with IDLE, UIDPLUS, MOVE, CONDSTORE and friends.

``listener.build_factory`` is what ``mailsuite.service`` plugs into the 143
(STARTTLS) and 993 (implicit TLS) listeners.  ``server`` is the protocol
(framing, literals, dispatch, flow control; its docstring has the
implementation notes), ``dispatch`` the command table, ``commands_*`` the
commands by state, ``fetch`` the streaming FETCH, ``idle`` IDLE push,
``session`` the per-connection sequence-number view of the selected folder,
``responses`` the one mapping of errors to ``NO``/``BAD``; ``wire``
(syntax), ``mime`` (message structure, ``mime_fetch`` its use on the store's
threads) and ``search`` (SEARCH keys, through ``search_adapter``) are the
protocol's own libraries.  Message octets and header blocks come only through
``IFolder`` (``read_headers``, ``map_messages``, ``open_reader``,
``with_messages``), on the store's threads; the caches of header blocks and
of SEARCH's facts belong to the store.
"""
