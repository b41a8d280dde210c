"""Replays of what clients that cannot run here send: K-9 / Thunderbird for Android and Apple Mail.

The sequences are written from those clients' documented behaviour and
public protocol logs (K-9's ImapFolder/ImapConnection command forms; Apple
Mail's ID, dotted tags, CONDSTORE resync and LITERAL+ APPEND), sent byte for
byte over real TCP by tests.support.imapwire, which parses every response
line against the RFC 3501 grammar.  Each step checks the status and the
content a client relies on (UIDs, sizes, section echoes, response codes),
and the end state is checked from a separate connection.
"""

from __future__ import annotations

import base64
import datetime
import re
from typing import Any

import pytest

from tests.imap.conftest import sample
from tests.support.imapwire import Result, Wire, flags_of, names, quote

K9 = "k9@example.test"
APPLE = "applemail@example.test"


def multipart(n: int, text_size: int = 10_000) -> bytes:
    """A message with a long text part and a small attachment (what BODYSTRUCTURE and partial fetches see)."""
    line = "The quick brown fox jumps over the lazy dog. 0123456789\r\n"
    text = (line * (text_size // len(line) + 1))[:text_size]
    return (
        "From: Carol <carol@example.org>\r\nTo: k9 <k9@example.test>\r\nCc: dave@example.org\r\n"
        f"Subject: report {n}\r\nDate: Tue, 2 Jan 2024 09:30:00 +0100\r\nMessage-ID: <report{n}@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{text}\r\n"
        "--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--b1--\r\n"
    ).encode()


def ok_with(result: Result, code: str) -> list[Any]:
    """The tagged OK's response code, which must be ``code``."""
    result.ok()
    assert result.code and bytes(result.code[0]).decode().upper() == code, (result.code, result.raw)
    return result.code


def untagged_code(result: Result, code: str) -> list[Any]:
    """The one ``* OK [code ...]`` among the untagged responses."""
    found = [u.code for u in result.of("OK") if u.code and bytes(u.code[0]).decode().upper() == code]
    assert len(found) == 1, (code, result.raw)
    return found[0]


def internaldate(value: bytes) -> datetime.datetime:
    return datetime.datetime.strptime(value.decode().strip(), "%d-%b-%Y %H:%M:%S %z")


def text(value: Any) -> str:
    """A response value as text (a uid-set like ``2`` parses as a number, ``2:3`` as an atom)."""
    return str(value) if isinstance(value, int) else bytes(value).decode()


def login_plain(user: str, password: str = "secret") -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def fetch_uid_map(result: Result) -> dict[int, dict[str, Any]]:
    """UID -> items of a UID FETCH (every response must carry its UID, RFC 3501 6.4.8)."""
    out = {}
    for number, items in result.fetches().items():
        assert "UID" in items, (number, items)
        out[items["UID"]] = items
    return out


@pytest.fixture
def wires() -> Any:
    opened: list[Wire] = []

    def open_(port: int, **kw: Any) -> Wire:
        w = Wire(port, **kw)
        opened.append(w)
        return w

    yield open_
    for w in opened:
        w.close()


# ---------------------------------------------------------------------------
# K-9 Mail / Thunderbird for Android
# ---------------------------------------------------------------------------
K9_HEADER_FIELDS = "date subject from content-type to cc bcc reply-to message-id references in-reply-to X-K9mail-Identity Chat-Version"


def test_k9_android_session(imap_server: Any, wires: Any) -> None:
    """K-9's connect, folder sync, message download, IDLE, flag/move/delete and APPEND, over STARTTLS."""
    writer = imap_server.writer
    writer.deliver(K9, sample(1, "k9"))
    writer.deliver(K9, sample(2, "k9"))
    big = multipart(3)
    writer.deliver(K9, big)

    w = wires(imap_server.ports["imap"])
    assert w.greeting.kind == "OK"
    caps = names(w.command("1", "CAPABILITY").ok().of("CAPABILITY")[0].values)
    assert "STARTTLS" in caps and "IMAP4rev1" in caps
    w.command("2", "STARTTLS").ok()
    w.starttls(imap_server.client_tls())
    caps = names(w.command("3", "CAPABILITY").ok().of("CAPABILITY")[0].values)
    assert "STARTTLS" not in caps and "AUTH=PLAIN" in caps and "SASL-IR" in caps
    # K-9 uses SASL-IR when offered
    done = w.command("4", f"AUTHENTICATE PLAIN {login_plain(K9)}").ok()
    if not (done.code and bytes(done.code[0]).upper() == b"CAPABILITY"):
        done = w.command("5", "CAPABILITY").ok()
        caps = names(done.of("CAPABILITY")[0].values)
    else:
        caps = names(done.code[1:])
    for cap in ("IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "SPECIAL-USE"):
        assert cap in caps, caps

    ns = w.command("6", "NAMESPACE").ok().of("NAMESPACE")[0].values
    assert ns[0] == [[b"", b"/"]] and ns[1] is None and ns[2] is None, ns

    # folder list: special-use first, then everything
    special = w.command("7", 'LIST (SPECIAL-USE) "" "*"').ok().of("LIST")
    uses = {bytes(u.values[2]).decode(): {bytes(f).decode() for f in u.values[0]} for u in special}
    for name, use in (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive")):
        assert use in uses.get(name, set()), uses
    assert "INBOX" not in uses  # LIST (SPECIAL-USE) returns only special-use folders (RFC 6154 5.1)
    everything = w.command("8", 'LIST "" "*"').ok().of("LIST")
    all_names = {bytes(u.values[2]).decode() for u in everything}
    assert {"INBOX", "Sent", "Drafts", "Trash"} <= all_names
    assert all(u.values[1] == b"/" for u in everything)

    # open INBOX; K-9 reads UIDVALIDITY, UIDNEXT and EXISTS
    sel = w.command("9", 'SELECT "INBOX"').ok()
    assert sel.code and bytes(sel.code[0]).upper() == b"READ-WRITE"
    assert sel.of("EXISTS")[0].number == 3
    uidvalidity = untagged_code(sel, "UIDVALIDITY")[1]
    uidnext = untagged_code(sel, "UIDNEXT")[1]
    assert isinstance(uidvalidity, int) and uidvalidity > 0 and uidnext == 4
    permanent = {bytes(f).decode() for f in untagged_code(sel, "PERMANENTFLAGS")[1]}
    assert {"\\Seen", "\\Flagged", "\\Deleted", "\\*"} <= permanent

    # message list: sequence-number window -> UIDs (K-9: "UID SEARCH %d:%d NOT DELETED")
    found = w.command("10", "UID SEARCH 1:3 NOT DELETED").ok().of("SEARCH")[0].values
    assert found == [1, 2, 3]
    flags = fetch_uid_map(w.command("11", "UID FETCH 1:3 (UID FLAGS)").ok())
    assert set(flags) == {1, 2, 3} and all("\\Seen" not in flags_of(v) for v in flags.values())
    headers = fetch_uid_map(w.command("12", f"UID FETCH 1,2,3 (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({K9_HEADER_FIELDS})])").ok())
    key = f"BODY[HEADER.FIELDS ({K9_HEADER_FIELDS.upper()})]"
    for _uid, items in headers.items():
        assert re.fullmatch(rb"[ 0-3]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}", items["INTERNALDATE"]), items
        header_key = next(k for k in items if k.startswith("BODY[HEADER.FIELDS"))
        assert header_key.upper() == key, header_key
        block = items[header_key]
        assert block.endswith(b"\r\n\r\n") and b"Subject: " in block and b"Received:" not in block
    assert headers[3]["RFC822.SIZE"] == len(big)
    assert b"Subject: report 3\r\n" in headers[3][next(k for k in headers[3] if k.startswith("BODY["))]

    # message download: structure, then the first 4 KiB of the text part, then the whole message
    structure = fetch_uid_map(w.command("13", "UID FETCH 3 (UID BODYSTRUCTURE)").ok())[3]["BODYSTRUCTURE"]
    text_part, attachment, subtype = structure[0], structure[1], structure[2]
    assert bytes(subtype).lower() == b"mixed"
    assert [bytes(text_part[0]).lower(), bytes(text_part[1]).lower()] == [b"text", b"plain"]
    assert [bytes(attachment[0]).lower(), bytes(attachment[1]).lower()] == [b"application", b"pdf"]
    assert text_part[6] == 10_000  # body-fld-octets of the text part
    part = fetch_uid_map(w.command("14", "UID FETCH 3 (UID BODY.PEEK[1]<0.4096>)").ok())[3]
    assert part["BODY[1]<0>"] == big[big.index(b"The quick"):][:4096]
    whole = fetch_uid_map(w.command("15", "UID FETCH 3 (UID RFC822.SIZE BODY.PEEK[])").ok())[3]
    assert whole["BODY[]"] == big and whole["RFC822.SIZE"] == len(big)
    # peeking never set \Seen
    flags = fetch_uid_map(w.command("16", "UID FETCH 1:* (UID FLAGS)").ok())
    assert all("\\Seen" not in flags_of(v) for v in flags.values())

    # push: IDLE until new mail, then DONE
    w.send(b"17 IDLE\r\n")
    w.continuation()
    writer.deliver(K9, sample(4, "k9"))
    pushed = w.wait_untagged(lambda u: u.kind == "EXISTS", timeout=5)
    assert [u.number for u in pushed if u.kind == "EXISTS"] == [4]
    w.send(b"DONE\r\n")
    w.finish("17").ok()
    fetched = fetch_uid_map(w.command("18", "UID FETCH 4:* (UID FLAGS)").ok())
    assert list(fetched) == [4]

    # mark read (silently), flag, move one to Trash, archive another by copy+delete+UID EXPUNGE
    store = w.command("19", "UID STORE 1 +FLAGS.SILENT (\\Seen)").ok()
    assert not store.of("FETCH"), store.raw  # .SILENT: no FETCH echo (RFC 3501 6.4.6)
    w.command("20", "UID STORE 2 +FLAGS.SILENT (\\Flagged)").ok()
    # forwarding message 1 sets $Forwarded (K-9's FORWARDED flag)
    w.command("20.1", "UID STORE 1 +FLAGS.SILENT ($Forwarded)").ok()
    moved = w.command("21", 'UID MOVE 2 "Trash"').ok()
    copyuid = [u.code for u in moved.of("OK") if u.code and bytes(u.code[0]).upper() == b"COPYUID"]
    assert copyuid and text(copyuid[0][2]) == "2", moved.raw  # RFC 6851 4.3: COPYUID in an untagged OK
    assert [u.number for u in moved.of("EXPUNGE")] == [2]
    copied = ok_with(w.command("22", 'UID COPY 3 "Archive"'), "COPYUID")
    assert text(copied[2]) == "3"
    w.command("23", "UID STORE 3 +FLAGS.SILENT (\\Deleted)").ok()
    gone = w.command("24", "UID EXPUNGE 3").ok()
    assert [u.number for u in gone.of("EXPUNGE")] == [2]  # UID 3 was message 2 after the move
    left = fetch_uid_map(w.command("25", "UID FETCH 1:* (UID FLAGS)").ok())
    assert sorted(left) == [1, 4] and {"\\Seen", "$Forwarded"} <= flags_of(left[1])

    # sending: APPEND to Sent with a synchronising literal, then find it by Message-ID
    sent = sample(9, "k9sent")
    appended = ok_with(w.command("26", 'APPEND "Sent" (\\Seen) ', sent, ""), "APPENDUID")
    sent_uid = int(appended[2])
    draft = sample(10, "k9draft")
    ok_with(w.command("27", 'APPEND "Drafts" (\\Seen \\Draft) ', draft, ""), "APPENDUID")
    w.command("28", 'SELECT "Sent"').ok()
    found = w.command("29", 'UID SEARCH HEADER MESSAGE-ID "<9.k9sent@example.test>"').ok().of("SEARCH")[0].values
    assert found == [sent_uid]
    w.command("30", "CLOSE").ok()
    bye = w.command("31", "LOGOUT").ok()
    assert bye.of("BYE")

    # another client sees the end state
    check = wires(imap_server.ports["imaps"], tls=imap_server.client_tls())
    check.command("a", f"LOGIN {quote(K9)} secret").ok()
    # every flag a message carries is one the folder's FLAGS response names (RFC 3501 7.2.6)
    selected = check.command("b", "EXAMINE INBOX").ok()
    listed = set(names(selected.of("FLAGS")[0].values[0]))
    carried = set().union(*(flags_of(v) for v in check.command("c", "FETCH 1:* (FLAGS)").ok().fetches().values()))
    assert carried - {"\\Recent"} <= listed, (carried, listed)
    check.command("d", "CLOSE").ok()
    status = {bytes(u.values[0]).decode(): dict(zip(names(u.values[1][::2]), u.values[1][1::2]))
              for f in ("INBOX", "Trash", "Archive", "Sent", "Drafts")
              for u in check.command("s", f"STATUS {quote(f)} (MESSAGES UNSEEN)").ok().of("STATUS")}
    assert status == {
        "INBOX": {"MESSAGES": 2, "UNSEEN": 1},
        "Trash": {"MESSAGES": 1, "UNSEEN": 1},
        "Archive": {"MESSAGES": 1, "UNSEEN": 1},
        "Sent": {"MESSAGES": 1, "UNSEEN": 0},
        "Drafts": {"MESSAGES": 1, "UNSEEN": 0},
    }


# ---------------------------------------------------------------------------
# Apple Mail (macOS)
# ---------------------------------------------------------------------------
APPLE_ID = '("name" "Mac OS X Mail" "version" "16.0 (3774.600.62)" "os" "Mac OS X" "os-version" "14.5 (23F79)" "vendor" "Apple Inc.")'
APPLE_HEADERS = "FROM TO CC BCC SUBJECT DATE MESSAGE-ID PRIORITY X-PRIORITY REFERENCES NEWSGROUPS IN-REPLY-TO CONTENT-TYPE REPLY-TO"


def test_apple_mail_session(imap_server: Any, wires: Any) -> None:
    """Apple Mail's dotted tags, ID, NAMESPACE/LIST/LSUB discovery, CONDSTORE resync, partial bodies, LITERAL+ APPEND, IDLE."""
    writer = imap_server.writer
    for n in (1, 2, 3):
        writer.deliver(APPLE, sample(n, "apple"))
    big = multipart(4, text_size=3000)
    writer.deliver(APPLE, big)

    w = wires(imap_server.ports["imaps"], tls=imap_server.client_tls())
    assert w.greeting.kind == "OK"
    ident = w.command("1.1", f"ID {APPLE_ID}").ok().of("ID")[0].values[0]
    assert isinstance(ident, list) and b"name" in ident
    caps = names(w.command("1.2", "CAPABILITY").ok().of("CAPABILITY")[0].values)
    assert "AUTH=PLAIN" in caps and "LITERAL+" in caps
    # AUTHENTICATE with a continuation round trip (no initial response)
    w.send(b"1.3 AUTHENTICATE PLAIN\r\n")
    assert w.continuation() in (b"+", b"+ ")
    w.send(login_plain(APPLE).encode() + b"\r\n")
    w.finish("1.3").ok()
    caps = names(w.command("1.4", "CAPABILITY").ok().of("CAPABILITY")[0].values)
    for cap in ("CONDSTORE", "IDLE", "UIDPLUS", "NAMESPACE", "ENABLE", "MOVE"):
        assert cap in caps, caps

    w.command("2.1", "NAMESPACE").ok()
    root = w.command("2.2", 'LIST "" ""').ok().of("LIST")
    assert len(root) == 1 and root[0].values[1] == b"/" and root[0].values[2] == b""
    assert "\\Noselect" in names(root[0].values[0])
    top = w.command("2.3", 'LIST "" "%"').ok().of("LIST")
    top_names = {bytes(u.values[2]).decode() for u in top}
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= top_names
    assert not any("/" in n for n in top_names)
    w.command("2.4", 'LSUB "" "*"').ok()
    status = w.command("2.5", 'STATUS "INBOX" (MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ)').ok().of("STATUS")[0]
    items = dict(zip(names(status.values[1][::2]), status.values[1][1::2]))
    assert bytes(status.values[0]) == b"INBOX"
    assert items["MESSAGES"] == 4 and items["UNSEEN"] == 4 and items["UIDNEXT"] == 5
    assert items["HIGHESTMODSEQ"] >= 1

    # SELECT with CONDSTORE: HIGHESTMODSEQ in the answer; FETCH/STORE then report MODSEQ
    sel = w.command("3.1", 'SELECT "INBOX" (CONDSTORE)').ok()
    assert sel.of("EXISTS")[0].number == 4
    modseq = untagged_code(sel, "HIGHESTMODSEQ")[1]
    assert modseq == items["HIGHESTMODSEQ"]
    assert untagged_code(sel, "UIDVALIDITY")[1] == items["UIDVALIDITY"]
    listing = fetch_uid_map(w.command("3.2", "UID FETCH 1:* (FLAGS UID MODSEQ)").ok())
    assert sorted(listing) == [1, 2, 3, 4]
    assert all(0 < v["MODSEQ"][0] <= modseq and len(v["MODSEQ"]) == 1 for v in listing.values()), listing

    # another device flags message 2; Apple Mail's resync asks only for what changed
    other = wires(imap_server.ports["imaps"], tls=imap_server.client_tls())
    other.command("o1", f"LOGIN {quote(APPLE)} secret").ok()
    other.command("o2", "SELECT INBOX").ok()
    other.command("o3", "STORE 2 +FLAGS (\\Flagged)").ok()
    noop = w.command("3.3", "NOOP").ok()
    pushed = noop.fetches()
    assert list(pushed) == [2] and "\\Flagged" in flags_of(pushed[2]) and "MODSEQ" in pushed[2], noop.raw
    changed = fetch_uid_map(w.command("3.4", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})").ok())
    assert list(changed) == [2] and "\\Flagged" in flags_of(changed[2])
    assert changed[2]["MODSEQ"][0] > modseq
    # "UID n:*" with n past the highest UID still names the last message (RFC 3501 6.4.8, 9 seq-range)
    beyond = fetch_uid_map(w.command("3.5", "UID FETCH 50:* (FLAGS)").ok())
    assert list(beyond) == [4]
    nothing = w.command("3.6", "UID FETCH 50:60 (FLAGS)").ok()
    assert not nothing.of("FETCH")

    # message view: headers, structure, then the body in partial chunks
    hdr = fetch_uid_map(w.command("4.1", f"UID FETCH 4 (BODY.PEEK[HEADER.FIELDS ({APPLE_HEADERS})] RFC822.SIZE INTERNALDATE FLAGS)").ok())[4]
    assert hdr["RFC822.SIZE"] == len(big)
    structure = fetch_uid_map(w.command("4.2", "UID FETCH 4 (BODYSTRUCTURE)").ok())[4]["BODYSTRUCTURE"]
    assert bytes(structure[2]).lower() == b"mixed"
    first = fetch_uid_map(w.command("4.3", "UID FETCH 4 (BODY.PEEK[]<0.1000>)").ok())[4]
    second = fetch_uid_map(w.command("4.4", "UID FETCH 4 (BODY.PEEK[]<1000.100000>)").ok())[4]
    assert first["BODY[]<0>"] + second["BODY[]<1000>"] == big
    beyond_end = fetch_uid_map(w.command("4.5", f"UID FETCH 4 (BODY.PEEK[]<{len(big) + 10}.100>)").ok())[4]
    assert beyond_end["BODY[]<" + str(len(big) + 10) + ">"] == b""  # RFC 3501 6.4.5: past the end is empty
    text = fetch_uid_map(w.command("4.6", "UID FETCH 4 (BODY.PEEK[1.MIME] BODY.PEEK[1])").ok())[4]
    assert text["BODY[1.MIME]"].startswith(b"Content-Type: text/plain") and text["BODY[1.MIME]"].endswith(b"\r\n\r\n")
    assert len(text["BODY[1]"]) == 3000
    # reading: BODY[] (no PEEK) sets \Seen and the FETCH says so
    read = w.command("4.7", "UID FETCH 1 (BODY[])").ok().fetches()
    items_1 = next(iter(read.values()))
    assert items_1["BODY[]"] == sample(1, "apple")
    assert any("\\Seen" in flags_of(v) for v in read.values() if "FLAGS" in v), read

    # save a draft: LITERAL+ with flags and an internal date
    draft = sample(7, "appledraft")
    appended = ok_with(w.command("5.1", 'APPEND "Drafts" (\\Seen \\Draft) "23-Nov-2026 10:00:00 +0100" ', draft, "", literal_plus=True), "APPENDUID")
    draft_uid = int(appended[2])
    w.command("5.2", 'EXAMINE "Drafts"').ok()
    saved = fetch_uid_map(w.command("5.3", f"UID FETCH {draft_uid} (UID FLAGS INTERNALDATE RFC822.SIZE)").ok())[draft_uid]
    # the same instant (the zone need not be kept: RFC 3501 2.3.3 only says the date is preserved)
    assert internaldate(saved["INTERNALDATE"]) == internaldate(b"23-Nov-2026 10:00:00 +0100")
    assert {"\\Seen", "\\Draft"} <= flags_of(saved) and saved["RFC822.SIZE"] == len(draft)
    sel = w.command("5.4", 'SELECT "INBOX" (CONDSTORE)').ok()
    assert sel.of("EXISTS")[0].number == 4

    # delete: STORE \Deleted then EXPUNGE
    w.command("6.1", "UID STORE 3 +FLAGS.SILENT (\\Deleted)").ok()
    expunged = w.command("6.2", "EXPUNGE").ok()
    assert [u.number for u in expunged.of("EXPUNGE")] == [3]

    # IDLE: another device's flag change and expunge arrive without asking
    w.send(b"7.1 IDLE\r\n")
    w.continuation()
    other.command("o4", "STORE 1 +FLAGS (\\Answered)").ok()
    got = w.wait_untagged(lambda u: u.kind == "FETCH", timeout=5)
    fetch = [u for u in got if u.kind == "FETCH"][0]
    assert fetch.number == 1 and "\\Answered" in flags_of(fetch.fetch_items())
    other.command("o5", "STORE 2 +FLAGS.SILENT (\\Deleted)").ok()
    other.command("o6", "EXPUNGE").ok()
    got = w.wait_untagged(lambda u: u.kind == "EXPUNGE", timeout=5)
    assert [u.number for u in got if u.kind == "EXPUNGE"] == [2]
    w.send(b"DONE\r\n")
    w.finish("7.1").ok()
    final = fetch_uid_map(w.command("7.2", "UID FETCH 1:* (FLAGS)").ok())
    assert sorted(final) == [1, 4]
    w.command("7.3", "UNSELECT").ok()
    assert w.command("7.4", "LOGOUT").ok().of("BYE")
    other.command("o7", "LOGOUT").ok()


# ---------------------------------------------------------------------------
# Two clients on one account: a folder deleted under an open session
# ---------------------------------------------------------------------------
def test_folder_deleted_under_a_phone_that_has_it_open(imap_server: Any, wires: Any) -> None:
    """The phone (K-9) idles in a folder the desktop deletes: it gets BYE, never a hang or SERVERBUG, and reconnects cleanly."""
    user = "twoclients@example.test"
    phone = wires(imap_server.ports["imaps"], tls=imap_server.client_tls())
    phone.command("1", f"AUTHENTICATE PLAIN {login_plain(user)}").ok()
    phone.command("2", 'CREATE "Projects"').ok()
    phone.command("3", 'APPEND "Projects" ', sample(1, "project"), "").ok()
    assert phone.command("4", 'SELECT "Projects"').ok().of("EXISTS")[0].number == 1
    phone.send(b"5 IDLE\r\n")
    phone.continuation()

    desktop = wires(imap_server.ports["imaps"], tls=imap_server.client_tls())
    desktop.command("d1", f"LOGIN {quote(user)} secret").ok()
    desktop.command("d2", 'DELETE "Projects"').ok()

    # the idling phone is told (or learns at its next poll) and the connection ends
    got: list[Any] = []
    try:
        got = phone.wait_untagged(lambda u: u.kind == "BYE", timeout=3)
    except AssertionError:
        phone.send(b"DONE\r\n")
        phone.finish("5")
        got = phone.command("6", "NOOP").of("BYE")
    assert [u for u in got if u.kind == "BYE"], got
    with pytest.raises((ConnectionError, OSError)):
        for _ in range(10):
            phone.command("7", "NOOP")
    # reconnecting works and the folder is gone
    again = wires(imap_server.ports["imaps"], tls=imap_server.client_tls())
    again.command("1", f"AUTHENTICATE PLAIN {login_plain(user)}").ok()
    listed = {bytes(u.values[2]).decode() for u in again.command("2", 'LIST "" "*"').ok().of("LIST")}
    assert "Projects" not in listed and "INBOX" in listed
    assert again.command("3", 'SELECT "Projects"').status == "NO"
    log = imap_server.log()
    assert "Traceback" not in log and "SERVERBUG" not in log, log[-3000:]


def test_move_out_of_a_folder_deleted_elsewhere_is_not_trycreate(imap_server: Any, wires: Any) -> None:
    """A MOVE from a folder another client deleted names the real problem (not [TRYCREATE] for an existing Trash), then BYE."""
    user = "twoclients2@example.test"
    phone = wires(imap_server.ports["imaps"], tls=imap_server.client_tls())
    phone.command("1", f"LOGIN {quote(user)} \"p\\\"w\\\\d\"").ok()  # a quoted password with escapes
    phone.command("2", 'CREATE "Old"').ok()
    phone.command("3", 'APPEND "Old" ', sample(1, "old"), "").ok()
    phone.command("4", 'SELECT "Old"').ok()
    desktop = wires(imap_server.ports["imaps"], tls=imap_server.client_tls())
    desktop.command("d1", f"LOGIN {quote(user)} secret").ok()
    desktop.command("d2", 'DELETE "Old"').ok()
    moved = phone.command("5", 'UID MOVE 1 "Trash"')
    assert moved.status == "NO" and moved.code and bytes(moved.code[0]) != b"TRYCREATE", moved.raw
    assert moved.of("BYE"), moved.raw
    trash = desktop.command("d3", 'STATUS "Trash" (MESSAGES)').ok().of("STATUS")[0].values[1]
    assert trash == [b"MESSAGES", 0]
