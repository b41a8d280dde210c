"""Subscriptions to folders that do not exist, over imaplib on a real server.

RFC 3501 6.3.9: the server must not drop a subscription because its folder
went away, and LSUB returns it.  RFC 5258 3: LIST (SUBSCRIBED) returns such a
name with \\NonExistent \\Subscribed.  A plain LIST never shows it.
"""

from __future__ import annotations

import imaplib
import re

_LINE = re.compile(rb'^\((?P<attrs>[^)]*)\) "/" "?(?P<name>[^"]*)"?$')


def login(server, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    client.login(user, "any")
    return client


def parse(lines: list) -> dict[str, set[str]]:
    """{name: attributes} from LIST/LSUB response lines."""
    out = {}
    for line in lines:
        if line is None:
            continue
        m = _LINE.match(line)
        assert m, line
        out[m.group("name").decode()] = set(m.group("attrs").decode().split())
    return out


def list_subscribed(client: imaplib.IMAP4) -> dict[str, set[str]]:
    """LIST (SUBSCRIBED) "" "*" (RFC 5258; imaplib has no call for selection options)."""
    typ, data = client._simple_command("LIST", "(SUBSCRIBED)", '""', '"*"')
    assert typ == "OK", data
    typ, data = client._untagged_response(typ, data, "LIST")
    return parse(data)


def test_lsub_and_list_subscribed_keep_subscriptions_whose_folder_is_gone(imap_server):
    """A deleted folder and a never-created one stay subscribed: LSUB \\Noselect, LIST (SUBSCRIBED) \\NonExistent."""
    c = login(imap_server, "lsub-gone@example.test")
    try:
        assert c.create("Old")[0] == "OK"
        assert c.subscribe("Old")[0] == "OK"
        assert c.delete("Old")[0] == "OK"
        assert c.subscribe("Never")[0] == "OK"

        typ, data = c.lsub('""', "*")
        lsub = parse(data)
        assert lsub["Old"] == {"\\Noselect"} and lsub["Never"] == {"\\Noselect"}
        assert lsub["INBOX"] == set() and "\\Noselect" not in lsub["Sent"]

        typ, data = c.list('""', "*")
        plain = parse(data)
        assert "Old" not in plain and "Never" not in plain and "Sent" in plain

        subscribed = list_subscribed(c)
        assert subscribed["Old"] == {"\\NonExistent", "\\Subscribed"}
        assert subscribed["Never"] == {"\\NonExistent", "\\Subscribed"}
        assert "\\NonExistent" not in subscribed["Sent"] and "\\Subscribed" in subscribed["Sent"]

        typ, data = c.select("Old")
        assert typ == "NO"

        assert c.unsubscribe("Old")[0] == "OK"
        typ, data = c.lsub('""', "*")
        assert "Old" not in parse(data) and "Never" in parse(data)
        assert c.create("Never")[0] == "OK"  # the folder comes back: an ordinary subscribed folder again
        assert list_subscribed(c)["Never"] == {"\\HasNoChildren", "\\Subscribed"}
    finally:
        c.logout()


def test_lsub_percent_shows_a_gone_subscribed_child_under_its_parent(imap_server):
    """LSUB "" "Archive/%" names a subscribed but deleted child; LSUB "" "%" does not show it at top level."""
    c = login(imap_server, "lsub-child@example.test")
    try:
        assert c.create("Archive/2024")[0] == "OK"
        assert c.subscribe("Archive/2024")[0] == "OK"
        assert c.delete("Archive/2024")[0] == "OK"
        typ, data = c.lsub('""', "Archive/%")
        assert parse(data) == {"Archive/2024": {"\\Noselect"}}
        typ, data = c.lsub('""', "%")
        assert "Archive/2024" not in parse(data) and "Archive" in parse(data)
    finally:
        c.logout()
