"""Faster stand-ins for three hot steps inside dkimpy, producing identical results.

Why: dkimpy does its heavy steps as single long C calls or in pure Python.
In a worker thread that still stalls the reactor, because a long ``re.sub``
over a 10 MB body holds the GIL for seconds, and the RSA private-key step in
pure Python holds it for ~30 ms per signature.  We keep dkimpy for all DKIM
and ARC logic and replace only these pure functions (installed once, at
import, by :func:`mailsuite.compat.install_dkim_steps`, which leaves dkimpy
alone if it lacks one of them):

* ``RSASSA_PKCS1_v1_5_sign`` (RFC 8017 8.2.1): done by OpenSSL through
  ``cryptography``; PKCS#1 v1.5 signatures are deterministic, so the bytes
  are the same.
* relaxed body canonicalisation (RFC 6376 3.4.4): the same two rewrites,
  done per 64 KB block of whole lines (WSP never spans a line end, so the
  result is identical) and skipped for blocks that have nothing to rewrite;
  the GIL is free between blocks.
* ``rfc822_parse``: for messages with CRLF line ends only (all SMTP mail),
  the body is one slice after the first empty line instead of a split and
  re-join of every line; headers are still parsed by dkimpy itself.

tests/mailauth/test_mailauth_speedups.py checks each against dkimpy's own
function (property tests), so a dkimpy change cannot silently diverge.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import dkim
import dkim.canonicalization as canonicalization
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mailsuite.compat import install_dkim_steps

#: dkimpy's originals, kept for fallbacks and for the equivalence tests.
original_rsa_sign = getattr(dkim, "RSASSA_PKCS1_v1_5_sign", None)
original_relaxed_body = getattr(getattr(canonicalization, "Relaxed", None), "canonicalize_body", None)
original_rfc822_parse = getattr(dkim, "rfc822_parse", None)

BLOCK = 64 * 1024
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP_TO_FOLD = re.compile(rb"[\t ]{2,}|\t")  # single spaces are already canonical


@functools.lru_cache(maxsize=64)
def _openssl_key(n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int, iqmp: int) -> rsa.RSAPrivateKey:
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n)).private_key()


def rsa_sign(hash: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's RSASSA-PKCS1-v1_5 signing step, done by OpenSSL (sha256; others fall back)."""
    if getattr(hash, "name", "") != "sha256":
        return original_rsa_sign(hash, private_key)  # type: ignore[no-any-return]
    key = _openssl_key(private_key["modulus"], private_key["publicExponent"], private_key["privateExponent"],
                       private_key["prime1"], private_key["prime2"], private_key["exponent1"], private_key["exponent2"],
                       private_key["coefficient"])
    return key.sign(hash.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 relaxed body canonicalisation, block by block."""
    out = []
    pos, size = 0, len(body)
    while pos < size:
        end = body.find(b"\r\n", pos + BLOCK)
        end = size if end < 0 else end + 2
        chunk = body[pos:end]
        if b"\t" in chunk or b" \r\n" in chunk:
            chunk = _TRAILING_WSP.sub(b"\r\n", chunk)
        if b"\t" in chunk or b"  " in chunk:
            chunk = _WSP_TO_FOLD.sub(b" ", chunk)
        out.append(chunk)
        pos = end
    return canonicalization.correct_empty_body(canonicalization.strip_trailing_lines(b"".join(out)))  # type: ignore[no-any-return]


def rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's (headers, body) split; a slice for CRLF-only messages, dkimpy's own code otherwise."""
    if message.count(b"\n") != message.count(b"\r\n"):
        return original_rfc822_parse(message)  # type: ignore[no-any-return]
    if message.startswith(b"\r\n"):
        return [], message[2:]
    blank = message.find(b"\r\n\r\n")
    if blank < 0:
        return original_rfc822_parse(message)  # type: ignore[no-any-return]
    headers, _ = original_rfc822_parse(message[:blank + 2] + b"\r\n")
    return headers, message[blank + 4:]


#: True when the stand-ins are in place (False: this dkimpy lacks a step; its own code runs).
INSTALLED = install_dkim_steps(rsa_sign, relaxed_body, rfc822_parse)
