"""LIST-EXTENDED (RFC 5258) rules found with Dovecot's imaptest, over real TCP with a raw socket."""

from __future__ import annotations

import pytest

from tests.imap.test_compliance_syntax import RawClient


@pytest.fixture
def raw(imap_server, request):
    """A logged-in raw client; the user is named after the test (capture mode accepts any password)."""
    client = RawClient(imap_server.ports["imap"])
    client.ok(f"LOGIN {request.node.name.replace('_', '-')[:40]}@example.test secret")
    yield client
    client.close()


def listed(lines: list[bytes]) -> dict[bytes, bytes]:
    """Mailbox name -> the rest of its LIST line (attributes, and CHILDINFO if any)."""
    out = {}
    for line in lines:
        assert line.startswith(b"* LIST ("), line
        attrs, _, rest = line[len(b"* LIST ("):].partition(b') "/" ')
        name, _, extra = rest.partition(b" ")
        out[name.strip(b'"')] = (b"(" + attrs + b") " + extra).strip()
    return out


def test_recursivematch_lists_a_parent_only_for_children_the_patterns_miss(raw):
    """RFC 5258 3.3 rule 2B and 3.5: an unsubscribed parent comes back with CHILDINFO
    only when a subscribed descendant is not itself listed by the patterns."""
    for name in ("Projects", "Projects/Alpha", "Projects/Beta"):
        raw.ok(f"CREATE {name}")
    raw.ok("SUBSCRIBE Projects/Alpha")

    # the only subscribed child is listed by the second pattern: no parent line at all
    got = listed(raw.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" (Projects Projects/Alpha)'))
    assert set(got) == {b"Projects/Alpha"}, got
    assert b"\\Subscribed" in got[b"Projects/Alpha"]

    # the pattern names the parent only: it stands in for its subscribed child
    got = listed(raw.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" Projects'))
    assert set(got) == {b"Projects"}, got
    assert b'("CHILDINFO" ("SUBSCRIBED"))' in got[b"Projects"].upper()
    assert b"\\Subscribed" not in got[b"Projects"]

    # a second subscribed child the patterns miss brings the parent back
    raw.ok("SUBSCRIBE Projects/Beta")
    got = listed(raw.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" (Projects Projects/Alpha)'))
    assert set(got) == {b"Projects", b"Projects/Alpha"}, got
    assert b"CHILDINFO" in got[b"Projects"].upper()
    assert b"CHILDINFO" not in got[b"Projects/Alpha"].upper()

    # "*" lists both children itself: the parent is redundant again
    got = listed(raw.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" Projects*'))
    assert set(got) == {b"Projects/Alpha", b"Projects/Beta"}, got
