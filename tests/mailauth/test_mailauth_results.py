"""Authentication-Results: forged fields claiming our authserv-id are removed (RFC 8601 5), others kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailsuite.mailauth.results import ResultsFilter, authserv_id_of, strip_results

OURS = "mail.b.test"


def test_fields_claiming_our_id_are_removed_with_their_continuation_lines():
    """Ours (any case, folded, with a leading comment) go; another host's and the body stay."""
    msg = (
        b"Received: from x\r\n"
        b"Authentication-Results: MAIL.B.TEST; dkim=pass\r\n"
        b"Authentication-Results: (forged)\r\n mail.b.test;\r\n\tspf=pass smtp.mailfrom=a@a.test\r\n"
        b"Authentication-Results: mx.other.test; spf=fail\r\n"
        b"Subject: Authentication-Results: mail.b.test; dkim=pass\r\n"
        b"\r\n"
        b"Authentication-Results: mail.b.test; in the body stays\r\n"
    )
    out = strip_results(msg, OURS)
    assert out == (
        b"Received: from x\r\n"
        b"Authentication-Results: mx.other.test; spf=fail\r\n"
        b"Subject: Authentication-Results: mail.b.test; dkim=pass\r\n"
        b"\r\n"
        b"Authentication-Results: mail.b.test; in the body stays\r\n"
    )


def test_streaming_filter_holds_only_the_field_being_read():
    """feed() returns other lines at once and releases a kept Authentication-Results field at the next field."""
    f = ResultsFilter(OURS)
    assert f.feed(b"From: a@a.test\r\n") == b"From: a@a.test\r\n"
    assert f.feed(b"Authentication-Results: mx.other.test;\r\n") == b""
    assert f.feed(b" dkim=pass\r\n") == b""
    assert f.feed(b"To: b@b.test\r\n") == b"Authentication-Results: mx.other.test;\r\n dkim=pass\r\nTo: b@b.test\r\n"
    assert f.feed(b"Authentication-Results: mail.b.test; x\r\n") == b""
    assert f.close() == b""
    assert f.removed == 1


def test_authserv_id_parsing():
    """The authserv-id is the first token after comments and folding whitespace."""
    assert authserv_id_of(b" mail.b.test; spf=pass") == "mail.b.test"
    assert authserv_id_of(b" (comment (nested)) \r\n\tMail.B.Test 1; none") == "mail.b.test"
    assert authserv_id_of(b"mail.b.test.evil; none") == "mail.b.test.evil"


field_name = st.sampled_from([b"From", b"To", b"Subject", b"Authentication-Results", b"X-Other"])
authserv = st.sampled_from([b"mail.b.test", b"MAIL.B.TEST", b"mx.other.test", b"(c) mail.b.test", b"mail.b.test.org"])


@given(st.lists(st.tuples(field_name, authserv, st.booleans()), max_size=8), st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
def test_filter_keeps_everything_but_our_fields(fields, body):
    """Property: the output is the input minus exactly the Authentication-Results fields whose id is ours."""
    kept, message = [], b""
    for name, ident, folded in fields:
        line = name + b": " + ident + b";" + (b"\r\n\tx=y" if folded else b" x=y") + b"\r\n"
        message += line
        ours = name == b"Authentication-Results" and ident.replace(b"(c) ", b"").lower() == b"mail.b.test"
        if not ours:
            kept.append(line)
    message += b"\r\n" + body + b"\r\n"
    expected = b"".join(kept) + b"\r\n" + body + b"\r\n"
    assert strip_results(message, OURS) == expected
    assert strip_results(expected, OURS) == expected


@given(st.lists(st.tuples(field_name, authserv, st.booleans()), max_size=6), st.lists(st.integers(1, 40), max_size=12))
def test_chunked_feeding_gives_the_same_result(fields, cuts):
    """Property: feed_bytes over any chunking equals the line-wise result (DATA arrives in arbitrary pieces)."""
    message = b"".join(n + b": " + i + b";" + (b"\r\n\tx=y" if f else b" x=y") + b"\r\n" for n, i, f in fields) + b"\r\nbody\r\n"
    f = ResultsFilter(OURS)
    out, pos = [], 0
    for cut in cuts:
        out.append(f.feed_bytes(message[pos:pos + cut]))
        pos += cut
    out.append(f.feed_bytes(message[pos:]))
    out.append(f.close())
    assert b"".join(out) == strip_results(message, OURS)


def test_overlong_forged_field_is_dropped_and_others_pass():
    """A forged field longer than the hold limit is dropped whole; an over-long ordinary field passes intact."""
    from mailsuite.mailauth.results import MAX_HELD

    big = b"x" * (MAX_HELD + 10)
    message = (b"Authentication-Results: mail.b.test; " + big + b"\r\n\t" + big + b"\r\n"
               b"X-Big: " + big + b"\r\n\t" + big + b"\r\nSubject: s\r\n\r\nbody")
    f = ResultsFilter(OURS)
    out = b"".join(f.feed_bytes(message[i:i + 4096]) for i in range(0, len(message), 4096)) + f.close()
    assert out == b"X-Big: " + big + b"\r\n\t" + big + b"\r\nSubject: s\r\n\r\nbody"
