"""The protocol kit: connection mechanics SMTP, POP3 and IMAP share.

Each protocol module keeps its own protocol logic (commands, replies,
states); what every connection needs the same way lives here, written and
tested once:

- :mod:`.deadline`: a deadline timer (command line deadline, idle timeout,
  login deadline, the grace before an abort) that moves later without a
  heap operation;
- :mod:`.flow`: the input high-water mark that stops socket reads while
  input waits that cannot be handled yet (a command is busy, or the client
  does not read its replies);
- :mod:`.lines`: taking lines (CRLF or bare LF) and counted octets
  (literals, BDAT chunks) from the front of a protocol's input buffer;
- :mod:`.closing`: closing once output is sent, with a deadline after
  which a peer that does not read is aborted.

Not yet here (see issue 16, item 3): one receiver driving the input loop
itself (pipelining while a command is busy, over-long lines, raw modes for
DATA/BDAT and IMAP literals); each protocol still runs its own loop over
the helpers above.
"""
