"""SHA-512 crypt (``$6$``), written from Ulrich Drepper's public specification
"Unix crypt using SHA-256 and SHA-512" (2008), for verifying migrated
Dovecot ``{SHA512-CRYPT}`` hashes without the deprecated stdlib ``crypt``.

Implementation notes:

- Salt: at most 16 characters, taken up to the first ``$``.
- ``rounds=N$`` is optional (default 5000), clamped to 1000..999,999,999 and
  echoed in the result only when it was given.
- The digest is encoded with crypt's own base-64 alphabet in the byte order
  the specification lists (step 22).
"""

from __future__ import annotations

import hashlib
import hmac

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DEFAULT_ROUNDS = 5000
_MIN_ROUNDS, _MAX_ROUNDS = 1000, 999_999_999
# Spec step 22 e): the byte triples in output order.
_ORDER = [
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
]


def _b64(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_ALPHABET[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: str | bytes, setting: str) -> str:
    """The full ``$6$[rounds=N$]salt$hash`` string for a password and a ``$6$...`` setting."""
    if not setting.startswith("$6$"):
        raise ValueError("not a SHA-512 crypt setting")
    rest = setting[3:]
    rounds, explicit = _DEFAULT_ROUNDS, False
    if rest.startswith("rounds="):
        number, sep, rest = rest[len("rounds="):].partition("$")
        if not sep or not number.isdigit():
            raise ValueError("malformed rounds= in SHA-512 crypt setting")
        rounds, explicit = min(max(int(number), _MIN_ROUNDS), _MAX_ROUNDS), True
    salt_text = rest.split("$", 1)[0][:16]
    p = password.encode("utf-8") if isinstance(password, str) else password
    s = salt_text.encode("utf-8")

    b = hashlib.sha512(p + s + p).digest()  # steps 4-8
    a = hashlib.sha512(p + s)  # steps 1-3
    a.update(_repeat(b, len(p)))  # steps 9-10
    length = len(p)
    while length:  # step 11: bits of the password length, lowest first
        a.update(b if length & 1 else p)
        length >>= 1
    a_digest = a.digest()  # step 12
    p_seq = _repeat(hashlib.sha512(p * len(p)).digest(), len(p))  # steps 13-16
    s_seq = _repeat(hashlib.sha512(s * (16 + a_digest[0])).digest(), len(s))  # steps 17-20
    c = a_digest
    for i in range(rounds):  # step 21
        h = hashlib.sha512(p_seq if i & 1 else c)
        if i % 3:
            h.update(s_seq)
        if i % 7:
            h.update(p_seq)
        h.update(c if i & 1 else p_seq)
        c = h.digest()
    encoded = "".join(_b64(c[x], c[y], c[z], 4) for x, y, z in _ORDER) + _b64(0, 0, c[63], 2)
    prefix = f"$6$rounds={rounds}$" if explicit else "$6$"
    return f"{prefix}{salt_text}${encoded}"


def verify(password: str | bytes, stored: str) -> bool:
    """True if ``stored`` (a ``$6$`` hash) is the SHA-512 crypt of ``password``."""
    try:
        computed = sha512_crypt(password, stored)
    except ValueError:
        return False
    return hmac.compare_digest(computed.encode(), stored.encode())
