"""Mail authentication: DKIM signing, SPF/DKIM/DMARC checks, Authentication-Results.

Public API (everything the SMTP server needs is on one object,
``context.mailauth``, a :class:`mailsuite.mailauth.service.MailAuth` opened by
the ``open_mailauth`` PART):

* ``sign_message(message, domain) -> Deferred[bytes]``: DKIM-Signature
  header line(s) to prepend to a message submitted by an authenticated user
  (``sign`` is the same, synchronous, for small messages).
* ``check_inbound(client_ip, helo, mail_from, message) -> Deferred[Verdict]``:
  SPF, DKIM and DMARC for mail arriving on port 25; the
  :class:`~mailsuite.mailauth.verdict.Verdict` carries the
  Authentication-Results header to prepend and what to do with the message.
* ``results_filter()``: a streaming line filter dropping incoming
  Authentication-Results headers that claim to be from this host (RFC 8601 5).

Implementation notes (invariants):

* Every DNS query goes through the server's one resolver
  (:mod:`mailsuite.resolver`, twisted.names), cached for the record's TTL.  The libraries (dkimpy, pyspf) run in a worker thread of
  our own pool and ask for DNS answers with ``blockingCallFromThread``, so the
  reactor thread never blocks on DNS, hashing or signature checks.
* A DNS timeout or SERVFAIL is a ``temperror``, never a pass or a fail; the
  verdict turns it into 451 4.4.3 when the result decides the outcome.
* Lookups are bounded per message (RFC 7208 4.6.4's ten terms, plus a hard
  cap on queries and on DKIM signatures checked).
* Header values we write are built from checked tokens only: nothing a
  remote party sent reaches the Authentication-Results header unfiltered.
"""
