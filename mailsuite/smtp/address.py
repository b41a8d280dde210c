"""Strict parser for SMTP paths and ESMTP parameters (RFC 5321 4.1.2, RFC 6531 3.3).

Implementation notes:

- twisted.mail.smtp.Address is not used: it works on bytes with a permissive
  tokenizer, accepts paths RFC 5321 forbids and knows nothing of SMTPUTF8.
- Non-ASCII (UTF-8) is accepted in local parts and domains only when the
  caller says the transaction uses SMTPUTF8 (RFC 6531 3.4); otherwise the
  parser raises :class:`AddressError` with ``utf8_required`` set so the
  server can answer ``553 5.6.7``.
- Source routes (``<@a,@b:user@c>``) are parsed and ignored (RFC 5321 4.1.1.3
  / appendix C).  A quoted local part whose content is a valid dot-string is
  reduced to the dot-string (``"joe"@x`` is ``joe@x``).
- Length limits of RFC 5321 4.5.3.1: local part 64 octets, domain 255, path 256.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

# RFC 5322 3.2.3 atext (RFC 5321 4.1.2 Atom uses it).
_ATEXT_ASCII = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING_ASCII = re.compile(rf"[{_ATEXT_ASCII}]+(?:\.[{_ATEXT_ASCII}]+)*\Z")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT_ASCII}\u0080-\U0010ffff]+(?:\.[{_ATEXT_ASCII}\u0080-\U0010ffff]+)*\Z")
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
# RFC 5321 esmtp-value: %d33-60 / %d62-126; RFC 6531 3.3 adds UTF8-non-ascii.
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+\Z")


class AddressError(ValueError):
    """A path or parameter that breaks the grammar; ``utf8_required`` when only SMTPUTF8 was missing."""

    def __init__(self, reason: str, *, utf8_required: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.utf8_required = utf8_required


@dataclass(frozen=True)
class Mailbox:
    """``local@domain`` as received (domain as given: ASCII, U-label or address literal)."""

    local: str
    domain: str

    @property
    def address(self) -> str:
        """The text form used with the directory, the store and the queue."""
        return f"{self.local}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        """False when the address needs SMTPUTF8 to be relayed."""
        return self.address.isascii()


def parse_domain(text: str, *, utf8: bool) -> str:
    """A domain (RFC 5321 Domain, RFC 6531 U-labels) or address literal; AddressError otherwise."""
    if not text:
        raise AddressError("empty domain")
    if text.startswith("["):
        return _parse_address_literal(text)
    if len(text.encode("utf-8")) > 255:
        raise AddressError("domain longer than 255 octets")
    for label in text.split("."):
        if label.isascii():
            if not _LDH_LABEL.match(label):
                raise AddressError(f"invalid domain label {label!r}")
        else:
            if not utf8:
                raise AddressError("non-ASCII domain without SMTPUTF8", utf8_required=True)
            try:
                idna.encode(label, uts46=False)
            except (idna.IDNAError, UnicodeError) as e:
                raise AddressError(f"invalid internationalised domain label: {e}") from None
    return text


def _parse_address_literal(text: str) -> str:
    # RFC 5321 4.1.3
    if not text.endswith("]"):
        raise AddressError("unterminated address literal")
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        raise AddressError("invalid address literal") from None
    return text


def _parse_local(text: str, *, utf8: bool) -> str:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise AddressError("unterminated quoted local part")
        content = []
        i, inner = 0, text[1:-1]
        while i < len(inner):
            c = inner[i]
            if c == "\\":
                if i + 1 >= len(inner):
                    raise AddressError("backslash at the end of a quoted local part")
                nxt = inner[i + 1]
                if not (" " <= nxt <= "~"):
                    raise AddressError("invalid quoted pair")
                content.append(nxt)
                i += 2
                continue
            if c == '"' or (c.isascii() and not (" " <= c <= "~")):
                raise AddressError("invalid character in quoted local part")
            if not c.isascii() and not utf8:
                raise AddressError("non-ASCII local part without SMTPUTF8", utf8_required=True)
            content.append(c)
            i += 1
        value = "".join(content)
        pattern = _DOT_STRING_UTF8 if utf8 else _DOT_STRING_ASCII
        if pattern.match(value):
            return value  # "joe"@x is joe@x
        return text
    if not _DOT_STRING_UTF8.match(text):
        raise AddressError(f"invalid local part {text!r}")
    if not text.isascii() and not utf8:
        raise AddressError("non-ASCII local part without SMTPUTF8", utf8_required=True)
    return text


def parse_mailbox(text: str, *, utf8: bool) -> Mailbox:
    """``Local-part "@" (Domain / address-literal)``."""
    if text.startswith('"'):
        # the closing quote is the last unescaped quote followed by "@"
        i = 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                break
            i += 1
        local_text, rest = text[: i + 1], text[i + 1 :]
        if not rest.startswith("@"):
            raise AddressError("missing @domain")
        domain_text = rest[1:]
    else:
        local_text, at, domain_text = text.rpartition("@")
        if not at:
            raise AddressError("missing @domain")
    if len(local_text.encode("utf-8")) > 64:
        raise AddressError("local part longer than 64 octets")
    local = _parse_local(local_text, utf8=utf8)
    domain = parse_domain(domain_text, utf8=utf8)
    return Mailbox(local, domain)


def parse_path(text: str, *, utf8: bool, allow_null: bool) -> tuple[Mailbox | None, str]:
    """Parse ``<path>`` at the start of ``text``; returns (mailbox or None for ``<>``, the rest after ``>``)."""
    if not text.startswith("<"):
        raise AddressError("the address must be enclosed in <>")
    end = _closing_bracket(text)
    inner, rest = text[1:end], text[end + 1 :]
    if len(inner.encode("utf-8")) > 254:
        raise AddressError("path longer than 256 octets")
    if inner == "":
        if not allow_null:
            raise AddressError("null path not allowed here")
        return None, rest
    if inner.startswith("@"):
        # RFC 5321 4.1.2 A-d-l: "@" Domain *( "," "@" Domain ) ":" -- accepted, then ignored
        route, colon, inner = inner.partition(":")
        if not colon:
            raise AddressError("source route without ':'")
        for hop in route.split(","):
            if not hop.startswith("@"):
                raise AddressError("invalid source route")
            parse_domain(hop[1:], utf8=utf8)
    return parse_mailbox(inner, utf8=utf8), rest


def _closing_bracket(text: str) -> int:
    if '"' not in text:  # the common case: no quoted local part, so the first '>' closes
        end = text.find(">", 1)
        if end >= 0:
            return end
        raise AddressError("missing closing '>'")
    in_quotes = False
    i = 1
    while i < len(text):
        c = text[i]
        if in_quotes and c == "\\":
            i += 2
            continue
        if c == '"':
            in_quotes = not in_quotes
        elif c == ">" and not in_quotes:
            return i
        i += 1
    raise AddressError("missing closing '>'")


def parse_parameters(text: str) -> dict[str, str | None]:
    """``esmtp-param *(SP esmtp-param)`` into {KEYWORD (upper-case): value or None}."""
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue
        keyword, eq, value = item.partition("=")
        if not _KEYWORD.match(keyword):
            raise AddressError(f"invalid parameter keyword {keyword!r}")
        if eq and not _VALUE.match(value):
            raise AddressError(f"invalid value for {keyword}")
        key = keyword.upper()
        if key in params:
            raise AddressError(f"parameter {key} given twice")
        params[key] = value if eq else None
    return params


@dataclass(frozen=True)
class PathArgument:
    """The argument of MAIL FROM / RCPT TO: the path and its parameters."""

    mailbox: Mailbox | None
    params: dict[str, str | None]


# The path nearly every client sends: an ASCII dot-atom local part and an LDH
# domain, no quotes, no source route, no address literal.  For these the
# general parser's answer is exactly the two groups (tests compare both on
# edge cases); the lengths are checked after the match.
_SIMPLE_PATH = re.compile(
    rf"<([{_ATEXT_ASCII}]+(?:\.[{_ATEXT_ASCII}]+)*)@"
    r"([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)>"
)


def parse_command_argument(arg: str, prefix: str, *, utf8: bool | None, allow_null: bool) -> PathArgument:
    """Parse ``FROM:<path> params`` (``prefix`` "FROM:" or "TO:"), case-insensitive prefix.

    ``utf8=None`` (MAIL FROM) means "decide from the SMTPUTF8 parameter on the same line".
    A space after the colon is tolerated, as most servers do.
    """
    if arg[: len(prefix)].upper() != prefix:
        raise AddressError(f"syntax: expected {prefix}<address>")
    rest = arg[len(prefix) :].lstrip(" ")
    simple = _SIMPLE_PATH.match(rest)
    if simple is not None:
        local, domain = simple.group(1, 2)
        if len(local) <= 64 and len(domain) <= 255 and len(local) + len(domain) < 254:
            param_text = rest[simple.end() :]
            if param_text and not param_text.startswith(" "):
                raise AddressError("parameters must be separated by a space")
            return PathArgument(Mailbox(local, domain), parse_parameters(param_text) if param_text else {})
    return _parse_general(rest, utf8=utf8, allow_null=allow_null)


def _parse_general(rest: str, *, utf8: bool | None, allow_null: bool) -> PathArgument:
    # parameters follow the path; look at them first to learn whether SMTPUTF8 applies
    if rest.startswith("<"):
        try:
            end = _closing_bracket(rest)
        except AddressError:
            end = -1
        param_text = rest[end + 1 :] if end >= 0 else ""
    else:
        param_text = ""
    if param_text and not param_text.startswith(" "):
        raise AddressError("parameters must be separated by a space")
    params = parse_parameters(param_text)
    if utf8 is None:
        utf8 = "SMTPUTF8" in params
    mailbox, tail = parse_path(rest, utf8=utf8, allow_null=allow_null)
    return PathArgument(mailbox, params)
