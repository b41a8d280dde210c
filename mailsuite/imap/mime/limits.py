"""Bounds on the MIME work done for one message, the message types accepted, and the BINARY error."""

from typing import BinaryIO, Union



#: Multipart nesting depth parsed (Dovecot's default limit is the same).
MAX_DEPTH = 100
#: Parts parsed per message; the rest is treated as opaque content.
MAX_PARTS = 10000
#: Octets of one header parsed for its fields (Content-* beyond this are ignored).
MAX_HEADER_PARSED = 1 << 20

Message = Union[bytes, bytearray, memoryview, BinaryIO]


class UnknownTransferEncoding(ValueError):
    """BINARY[] of a part whose Content-Transfer-Encoding we cannot decode (RFC 3516 4.3)."""
