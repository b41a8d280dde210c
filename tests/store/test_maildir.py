"""The store contract (``any_store``: Maildir and in-memory alike) and the Maildir specifics (``store``)."""

from __future__ import annotations

import datetime
import os

import pytest
from zope.interface.verify import verifyObject

from mailsuite.errors import FolderExists, InvalidName, MailboxInUse, NoSuchFolder, NoSuchMessage, ReadOnlyFolder
from mailsuite.interfaces import Delivery, IFolder, IIncomingMessage, IMessageReader, IMessageStore, IUserMailbox
from mailsuite.store import IncomingMessage

from .conftest import deliver_bytes, make_store, msg, octets, result, run

ALICE = "alice@example.test"


def test_store_objects_provide_the_interfaces(any_store):
    """Every object the protocols get is verifiably what interfaces.py declares."""
    verifyObject(IMessageStore, any_store)
    mailbox = any_store.user_mailbox(ALICE)
    verifyObject(IUserMailbox, mailbox)
    verifyObject(IIncomingMessage, any_store.new_incoming())
    verifyObject(IFolder, result(mailbox.open_folder("INBOX")))


def test_half_made_maildir_is_completed_by_the_next_delivery(store, tmp_path):
    """A first delivery that stopped after some default folders (disk full, crash) does not block later ones."""
    import shutil

    deliver_bytes(store, ALICE, msg(1))
    root = tmp_path / "mail" / "example.test" / "alice"
    for name in ("cur", "subscriptions", ".Trash"):
        shutil.rmtree(root / name) if (root / name).is_dir() else (root / name).unlink()
    fresh = make_store(tmp_path / "mail")  # another process, or after a restart: nothing cached
    deliver_bytes(fresh, ALICE, msg(2))
    assert len(os.listdir(root / "new")) == 2 and (root / "cur").is_dir() and (root / ".Trash" / "cur").is_dir()


def test_delivery_layout_is_a_standard_maildir_with_default_folders(store, tmp_path):
    """<root>/<domain lower>/<localpart>/ holds tmp/new/cur and Maildir++ default folders; mail lands in new/."""
    deliver_bytes(store, "Alice@Example.TEST", msg(1))
    root = tmp_path / "mail" / "example.test" / "Alice"
    assert {"tmp", "new", "cur"} <= set(os.listdir(root))
    for folder in (".Sent", ".Drafts", ".Trash", ".Junk", ".Archive"):
        assert {"tmp", "new", "cur", "maildirfolder"} <= set(os.listdir(root / folder))
    (name,) = os.listdir(root / "new")
    assert (root / "new" / name).read_bytes() == msg(1)
    assert os.listdir(root / "tmp") == []
    assert f",S={len(msg(1))}" in name


def test_list_folders_has_inbox_first_special_use_and_subscriptions(any_store):
    """LIST needs INBOX first, the SPECIAL-USE attributes and the default subscriptions."""
    folders = result(any_store.user_mailbox(ALICE).list_folders())
    assert folders[0].name == "INBOX"
    by_name = {f.name: f for f in folders}
    assert by_name["Sent"].special_use == "\\Sent"
    assert by_name["Trash"].special_use == "\\Trash"
    assert by_name["Junk"].special_use == "\\Junk"
    assert by_name["Drafts"].special_use == "\\Drafts"
    assert by_name["Archive"].special_use == "\\Archive"
    assert all(f.subscribed and f.selectable for f in folders)


def test_uids_are_assigned_in_order_and_survive_a_restart(store, tmp_path):
    """UIDVALIDITY, UIDNEXT and UIDs are persistent: a new store (restart) sees the same values."""
    for i in range(3):
        deliver_bytes(store, ALICE, msg(i))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    assert [m.uid for m in folder.messages()] == [1, 2, 3]
    assert folder.uidnext == 4
    keys = [m.key for m in folder.messages()]
    again = make_store(tmp_path / "mail")
    folder2 = result(again.user_mailbox(ALICE).open_folder("INBOX"))
    assert folder2.uidvalidity == folder.uidvalidity
    assert [(m.uid, m.key) for m in folder2.messages()] == list(zip([1, 2, 3], keys))
    assert folder2.uidnext == 4


def test_flags_live_in_the_info_suffix_and_keywords_persist(store, tmp_path):
    """\\Seen etc. become :2, letters; keywords get folder letters that a restart maps back."""
    deliver_bytes(store, ALICE, msg(1))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    changed = result(folder.store_flags([1], ["\\Seen", "\\Flagged", "$Forwarded", "Work", "\\Answered", "\\Draft"], "add"))
    assert changed[0].flags == {"\\Seen", "\\Flagged", "$Forwarded", "Work", "\\Answered", "\\Draft"}
    (name,) = os.listdir(tmp_path / "mail" / "example.test" / "alice" / "cur")
    assert name.endswith(":2,DFPRSa")
    again = make_store(tmp_path / "mail")
    folder2 = result(again.user_mailbox(ALICE).open_folder("INBOX"))
    assert folder2.messages()[0].flags == changed[0].flags
    assert "Work" in folder2.keywords


def test_store_flags_modes_bump_modseq_and_honour_unchanged_since(any_store):
    """set/add/remove change flags; MODSEQ grows; UNCHANGEDSINCE leaves newer messages alone."""
    deliver_bytes(any_store, ALICE, msg(1))
    deliver_bytes(any_store, ALICE, msg(2))
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    start = folder.highest_modseq
    (one,) = result(folder.store_flags([1], ["\\Seen", "Work"], "set"))
    assert one.modseq > start and folder.highest_modseq == one.modseq
    (one,) = result(folder.store_flags([1], ["work"], "remove"))
    assert one.flags == {"\\Seen"}
    assert result(folder.store_flags([1], ["\\seen"], "add")) == []  # no change, no new MODSEQ
    assert result(folder.store_flags([1, 2], ["\\Flagged"], "add", unchanged_since=start)) == [
        m for m in folder.messages() if m.uid == 2
    ]
    assert {m.uid: m.flags for m in folder.messages()} == {1: {"\\Seen"}, 2: {"\\Flagged"}}


def test_recent_belongs_to_the_first_read_write_session_only(any_store):
    """Messages in new/ are \\Recent for the session that opens read-write first; EXAMINE changes nothing."""
    deliver_bytes(any_store, ALICE, msg(1))
    mailbox = any_store.user_mailbox(ALICE)
    examine = result(mailbox.open_folder("INBOX", read_only=True))
    assert examine.recent == {1}
    assert result(mailbox.status("INBOX")).recent == 1
    first = result(mailbox.open_folder("INBOX"))
    second = result(mailbox.open_folder("INBOX"))
    assert first.recent == {1}
    assert second.recent == frozenset()
    assert result(mailbox.status("INBOX")).recent == 0
    deliver_bytes(any_store, ALICE, msg(2))
    change = result(second.refresh())
    assert [m.uid for m in change.added] == [2]
    assert second.recent == {2}


def test_read_only_session_never_changes_flags(any_store):
    """EXAMINE: store_flags, expunge and move are refused; reading does not set \\Seen."""
    deliver_bytes(any_store, ALICE, msg(1))
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX", read_only=True))
    assert octets(folder, 1) == msg(1)
    for call in (lambda: folder.store_flags([1], ["\\Seen"], "add"), lambda: folder.expunge(), lambda: folder.move([1], "Trash")):
        with pytest.raises(ReadOnlyFolder):
            result(call())
    assert result(any_store.user_mailbox(ALICE).status("INBOX")).unseen == 1


def test_expunge_removes_only_deleted_messages_and_uids_are_never_reused(any_store):
    """EXPUNGE removes \\Deleted messages (optionally among given UIDs); new mail gets fresh UIDs."""
    for i in range(4):
        deliver_bytes(any_store, ALICE, msg(i))
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    result(folder.store_flags([2, 3, 4], ["\\Deleted"], "add"))
    assert result(folder.expunge([3, 4])) == [3, 4]
    assert [m.uid for m in folder.messages()] == [1, 2]
    assert result(folder.expunge()) == [2]
    deliver_bytes(any_store, ALICE, msg(9))
    change = result(folder.refresh())
    assert [m.uid for m in change.added] == [5]


def test_refresh_reports_other_sessions_changes(any_store):
    """A session learns of flag changes and expunges made by another session on refresh."""
    for i in range(3):
        deliver_bytes(any_store, ALICE, msg(i))
    mailbox = any_store.user_mailbox(ALICE)
    a = result(mailbox.open_folder("INBOX"))
    b = result(mailbox.open_folder("INBOX"))
    result(a.store_flags([1], ["\\Seen"], "add"))
    result(a.store_flags([2], ["\\Deleted"], "add"))
    result(a.expunge())
    assert [m.uid for m in b.messages()] == [1, 2, 3]  # snapshot unchanged until refresh
    change = result(b.refresh())
    assert change.expunged == (2,)
    assert [(m.uid, m.flags) for m in change.changed] == [(1, {"\\Seen"})]
    assert [m.uid for m in b.messages()] == [1, 3]
    with pytest.raises(NoSuchMessage):
        octets(a, 2)


def test_copy_and_move_keep_flags_and_report_new_uids(any_store):
    """COPY/MOVE keep flags (keywords remapped per folder), return (source, new) UID pairs."""
    for i in range(3):
        deliver_bytes(any_store, ALICE, msg(i))
    mailbox = any_store.user_mailbox(ALICE)
    inbox = result(mailbox.open_folder("INBOX"))
    result(inbox.store_flags([2], ["\\Seen", "Important"], "add"))
    archive = result(mailbox.open_folder("Archive"))
    result(archive.store_flags([], ["x"], "add"))
    assert result(inbox.copy([2, 3], "Archive")) == [(2, 1), (3, 2)]
    assert result(inbox.move([1, 2], "Trash")) == [(1, 1), (2, 2)]
    assert [m.uid for m in inbox.messages()] == [3]
    trash = result(mailbox.open_folder("Trash"))
    assert [(m.uid, m.flags) for m in trash.messages()] == [(1, frozenset()), (2, {"\\Seen", "Important"})]
    assert octets(trash, 2) == msg(1)
    result(archive.refresh())
    assert archive.messages()[0].flags == {"\\Seen", "Important"}
    with pytest.raises(NoSuchFolder):
        result(inbox.copy([3], "Nowhere"))


def test_append_with_flags_and_internal_date(any_store):
    """APPEND stores flags and the given internal date and returns the UID (APPENDUID)."""
    mailbox = any_store.user_mailbox(ALICE)
    when = datetime.datetime(2020, 5, 17, 10, 30, tzinfo=datetime.timezone.utc)
    uid = result(mailbox.open_folder("Sent")).append(IncomingMessage.from_bytes(msg("sent")), ["\\Seen", "$Label1"], when)
    assert result(uid) == 1
    assert result(mailbox.append("Sent", IncomingMessage.from_bytes(msg("two")))) == 2
    folder = result(mailbox.open_folder("Sent"))
    first = folder.messages()[0]
    assert first.flags == {"\\Seen", "$Label1"}
    assert first.internal_date == when
    assert first.size == len(msg("sent"))
    assert folder.recent == {1, 2}  # RFC 3501 2.3.2: recent for the first session that sees them
    with pytest.raises(NoSuchFolder):
        result(mailbox.append("Nope", IncomingMessage.from_bytes(msg(1))))


def test_key_is_stable_when_flags_change(any_store):
    """POP3's UIDL (MessageInfo.key) does not change when the info suffix does."""
    deliver_bytes(any_store, ALICE, msg(1))
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    key = folder.messages()[0].key
    result(folder.store_flags([1], ["\\Seen"], "add"))
    result(folder.store_flags([1], ["\\Flagged"], "set"))
    assert folder.messages()[0].key == key
    assert ":" not in key and "/" not in key


def test_read_headers_stops_at_the_blank_line(any_store):
    """read_headers stops at the blank line; the body is read only through the readers."""
    body = b"line\r\n" * 1000
    deliver_bytes(any_store, ALICE, msg(1, body))
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    assert result(folder.read_headers([1, 99])) == {1: msg(1, b"")}
    reader = result(folder.open_reader(1))
    assert result(reader.read(len(msg(1, b"")), 6)) == b"line\r\n"
    reader.close()


def test_open_reader_reads_slices_of_the_message(any_store):
    """A reader returns exactly the octets asked for, fewer at the end, none past it, and keeps
    reading the same message after it is expunged; a missing message cannot be opened."""
    data = msg(1, b"0123456789" * 100)
    deliver_bytes(any_store, ALICE, data)
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    reader = result(folder.open_reader(1))
    verifyObject(IMessageReader, reader)
    assert reader.size == len(data)
    assert result(reader.read(5, 10)) == data[5:15]
    assert result(reader.read(len(data) - 3, 100)) == data[-3:]
    assert result(reader.read(len(data) + 10, 5)) == b""
    result(folder.store_flags([1], ["\\Deleted"], "add"))
    assert result(folder.expunge()) == [1]
    assert result(reader.read(0, 4)) == data[:4]
    reader.close()
    with pytest.raises(NoSuchMessage):
        result(folder.open_reader(1))


@pytest.mark.parametrize("size", [1000, 600 * 1024])
def test_map_messages_runs_a_function_over_each_message(any_store, size):
    """map_messages hands each message's octets (small: bytes, big: a mapping) to the function
    and leaves out messages that are gone."""
    bodies = [msg(n, b"%d" % n * size) for n in (1, 2)]
    for data in bodies:
        deliver_bytes(any_store, ALICE, data)
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    out = result(folder.map_messages([1, 2, 99], lambda uid, octets: (len(octets), bytes(octets[-5:]), octets.find(b"\r\n\r\n"))))
    assert out == {uid: (len(d), d[-5:], d.find(b"\r\n\r\n")) for uid, d in zip((1, 2), bodies)}


def test_reading_finds_a_file_renamed_by_another_program(store, tmp_path):
    """A flag change by mutt (rename in cur/) does not break reading a message by UID."""
    deliver_bytes(store, ALICE, msg(1))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    cur = tmp_path / "mail" / "example.test" / "alice" / "cur"
    (name,) = os.listdir(cur)
    os.rename(cur / name, cur / (name.split(":2,")[0] + ":2,RS"))
    assert octets(folder, 1) == msg(1)
    reader = result(folder.open_reader(1))
    assert result(reader.read(0, 4)) == msg(1)[:4]
    reader.close()
    assert result(folder.map_messages([1], lambda uid, octets: bytes(octets))) == {1: msg(1)}
    change = result(folder.refresh())
    assert [(m.uid, m.flags) for m in change.changed] == [(1, {"\\Seen", "\\Answered"})]


def test_external_delivery_is_picked_up(store, tmp_path):
    """A file dropped into new/ by another program (procmail, Postfix) gets the next UID."""
    deliver_bytes(store, ALICE, msg(1))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    new = tmp_path / "mail" / "example.test" / "alice" / "new"
    (new / "1700000000.P1Q1.otherhost").write_bytes(b"Subject: external\n\nbody\n")
    change = result(folder.refresh())
    (added,) = change.added
    crlf = b"Subject: external\r\n\r\nbody\r\n"
    assert added.uid == 2 and added.size == len(crlf)  # bare LF line ends made CRLF, like SMTP's
    assert added.key == "1700000000.P1Q1.otherhost"
    assert folder.recent == {1, 2}
    assert octets(folder, 2) == crlf


def test_line_end_normalisation_handles_chunk_boundaries(tmp_path):
    """CR LF split across read chunks is kept; bare LF anywhere becomes CRLF; CRLF files are untouched."""
    from mailsuite.store.listing import normalize_line_ends

    (tmp_path / "tmp").mkdir()
    mixed = tmp_path / "mixed"
    body = b"a" * ((1 << 20) - 1) + b"\r\n" + b"b\nc\r\n\nd"
    mixed.write_bytes(body)
    os.utime(mixed, (1_600_000_000, 1_600_000_000))
    st = normalize_line_ends(str(mixed), str(tmp_path / "tmp"))
    assert mixed.read_bytes() == body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert st is not None and int(st.st_mtime) == 1_600_000_000
    clean = tmp_path / "clean"
    clean.write_bytes(b"x\r\ny\r\n")
    assert normalize_line_ends(str(clean), str(tmp_path / "tmp")) is None
    assert os.listdir(tmp_path / "tmp") == []


def test_header_prefix_copies_share_one_file(store, tmp_path):
    """Recipients with equal header prefixes get one hard-linked file; others their own."""
    message = IncomingMessage.from_bytes(msg(1))
    deliveries = [Delivery("a@example.test"), Delivery("b@example.test"), Delivery("c@example.test", header_prefix=b"Delivered-To: c@example.test\r\n")]
    results = result(store.deliver(message, deliveries))
    assert [r.error for r in results] == [None, None, None]
    mail = tmp_path / "mail" / "example.test"
    inodes = {u: os.stat(mail / u / "new" / os.listdir(mail / u / "new")[0]) for u in "abc"}
    assert inodes["a"].st_ino == inodes["b"].st_ino
    assert inodes["c"].st_ino != inodes["a"].st_ino
    c_file = mail / "c" / "new" / os.listdir(mail / "c" / "new")[0]
    assert c_file.read_bytes() == b"Delivered-To: c@example.test\r\n" + msg(1)


def test_delivery_errors_are_per_recipient(any_store):
    """One bad recipient or folder does not fail the others."""
    message = IncomingMessage.from_bytes(msg(1))
    results = result(any_store.deliver(message, [Delivery("../evil@example.test"), Delivery(ALICE, "NoSuchFolder"), Delivery(ALICE, "Junk")]))
    assert isinstance(results[0].error, InvalidName)
    assert isinstance(results[1].error, NoSuchFolder)
    assert results[2].error is None
    assert result(any_store.user_mailbox(ALICE).status("Junk")).messages == 1


def test_create_delete_rename_folders_with_children(any_store):
    """CREATE makes parents; DELETE leaves children under a \\Noselect parent; RENAME moves children."""
    mailbox = any_store.user_mailbox(ALICE)
    result(mailbox.create_folder("Projects/2025/Q1"))
    with pytest.raises(FolderExists):
        result(mailbox.create_folder("projects/../x" if False else "Projects/2025"))
    names = {f.name: f for f in result(mailbox.list_folders())}
    assert names["Projects"].has_children and names["Projects/2025"].selectable
    result(mailbox.delete_folder("Projects/2025"))
    names = {f.name: f for f in result(mailbox.list_folders())}
    assert not names["Projects/2025"].selectable and names["Projects/2025"].has_children
    assert names["Projects/2025/Q1"].selectable
    with pytest.raises(NoSuchFolder):
        result(mailbox.delete_folder("Projects/2025"))
    deliver_bytes(any_store, ALICE, msg(1), folder="Projects/2025/Q1")
    result(mailbox.rename_folder("Projects", "Work/Old"))
    names = {f.name for f in result(mailbox.list_folders())}
    assert {"Work", "Work/Old", "Work/Old/2025/Q1"} <= names
    assert not any(n.startswith("Projects") for n in names)
    assert result(mailbox.status("Work/Old/2025/Q1")).messages == 1
    with pytest.raises(FolderExists):
        result(mailbox.rename_folder("Sent", "Trash"))
    with pytest.raises(NoSuchFolder):
        result(mailbox.rename_folder("Gone", "Other"))
    with pytest.raises(InvalidName):
        result(mailbox.delete_folder("INBOX"))


def test_deleted_and_recreated_folder_gets_a_new_uidvalidity(any_store):
    """RFC 3501 2.3.1.1: a new folder with an old name must not reuse the old UIDVALIDITY."""
    mailbox = any_store.user_mailbox(ALICE)
    result(mailbox.create_folder("Tmp"))
    first = result(mailbox.status("Tmp")).uidvalidity
    result(mailbox.delete_folder("Tmp"))
    result(mailbox.create_folder("Tmp"))
    assert result(mailbox.status("Tmp")).uidvalidity > first


def test_rename_inbox_moves_its_messages(any_store):
    """RFC 3501 6.3.5: renaming INBOX moves the messages to the new folder and leaves INBOX empty."""
    deliver_bytes(any_store, ALICE, msg(1))
    deliver_bytes(any_store, ALICE, msg(2))
    mailbox = any_store.user_mailbox(ALICE)
    result(mailbox.rename_folder("INBOX", "Old Inbox"))
    assert result(mailbox.status("INBOX")).messages == 0
    assert result(mailbox.status("Old Inbox")).messages == 2


def test_folder_names_with_dots_and_unicode_round_trip(store, tmp_path):
    """'.' and non-ASCII in IMAP names are stored in the documented encoding and listed back."""
    mailbox = store.user_mailbox(ALICE)
    result(mailbox.create_folder("Entwürfe/v1.2 & more"))
    root = tmp_path / "mail" / "example.test" / "alice"
    assert (root / ".Entw&APw-rfe.v1&AC4-2 &- more" / "cur").is_dir()
    assert {"Entwürfe", "Entwürfe/v1.2 & more"} <= {f.name for f in result(mailbox.list_folders())}


def test_inbox_is_case_insensitive_and_can_have_children(any_store):
    """'inbox' is INBOX; INBOX/Sub is a folder of its own."""
    deliver_bytes(any_store, ALICE, msg(1), folder="inbox")
    mailbox = any_store.user_mailbox(ALICE)
    assert result(mailbox.status("Inbox")).messages == 1
    result(mailbox.create_folder("inbox/Sub"))
    names = {f.name: f for f in result(mailbox.list_folders())}
    assert "INBOX/Sub" in names and names["INBOX"].has_children


def test_subscriptions_persist_and_need_no_folder(any_store):
    """LSUB state is stored per user; a folder need not exist to be subscribed."""
    mailbox = any_store.user_mailbox(ALICE)
    result(mailbox.set_subscribed("Later", True))
    result(mailbox.set_subscribed("Junk", False))
    result(mailbox.create_folder("Later"))
    names = {f.name: f for f in result(mailbox.list_folders())}
    assert names["Later"].subscribed and not names["Junk"].subscribed


def test_status_counts(any_store):
    """STATUS counters come from the state without opening a session."""
    for i in range(3):
        deliver_bytes(any_store, ALICE, msg(i))
    mailbox = any_store.user_mailbox(ALICE)
    folder = result(mailbox.open_folder("INBOX"))
    result(folder.store_flags([1], ["\\Seen"], "add"))
    status = result(mailbox.status("INBOX"))
    assert (status.messages, status.recent, status.unseen, status.uidnext) == (3, 0, 2, 4)
    assert status.size == sum(len(msg(i)) for i in range(3))
    assert status.uidvalidity == folder.uidvalidity and status.highest_modseq == folder.highest_modseq
    with pytest.raises(NoSuchFolder):
        result(mailbox.status("Nope"))


def test_pop3_lock_is_exclusive_and_released(any_store):
    """lock_exclusive refuses a second holder until released."""
    mailbox = any_store.user_mailbox(ALICE)
    release = result(mailbox.lock_exclusive("first"))
    with pytest.raises(MailboxInUse):
        result(any_store.user_mailbox(ALICE).lock_exclusive("second"))
    release()
    release()  # idempotent
    result(mailbox.lock_exclusive("third"))()


def test_remove_user_deletes_the_tree(store, tmp_path):
    """The admin command's remove_user deletes the whole Maildir."""
    deliver_bytes(store, ALICE, msg(1))
    result(store.remove_user(ALICE))
    assert not (tmp_path / "mail" / "example.test" / "alice").exists()
    assert result(store.user_mailbox(ALICE).status("INBOX")).messages == 0


def test_store_works_through_the_async_api(any_store):
    """The awaitable style the protocol code uses."""

    async def scenario() -> list[int]:
        mailbox = any_store.user_mailbox(ALICE)
        await mailbox.append("INBOX", IncomingMessage.from_bytes(msg(1)))
        folder = await mailbox.open_folder("INBOX")
        return [m.uid for m in folder.messages()]

    assert run(scenario()) == [1]


def test_settled_folder_still_sees_every_external_change(store, tmp_path):
    """The no-rescan shortcut for folders whose directories have not changed never hides a change."""
    for i in range(3):
        deliver_bytes(store, ALICE, msg(i))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    inbox = tmp_path / "mail" / "example.test" / "alice"
    old = 1_600_000_000
    for sub in ("new", "cur"):
        os.utime(inbox / sub, (old, old))  # as if nothing had happened for years
    assert result(folder.refresh()) == type(result(folder.refresh()))()  # remembered as settled
    assert store.state(str(inbox), str(inbox)).unchanged_since_listing()
    other = make_store(tmp_path / "mail")
    deliver_bytes(other, ALICE, msg(9))  # another process
    change = result(folder.refresh())
    assert [m.uid for m in change.added] == [4]
    for sub in ("new", "cur"):
        os.utime(inbox / sub, (old, old))
    result(folder.refresh())
    name = sorted(os.listdir(inbox / "cur"))[0]
    os.unlink(inbox / "cur" / name)  # mutt deletes a message
    change = result(folder.refresh())
    assert change.expunged == (1,)


def test_same_message_in_new_and_cur_is_one_message(store, tmp_path):
    """A base name found in both new/ and cur/ (a tool crashed mid-copy) stays one UID with a stable MODSEQ."""
    deliver_bytes(store, ALICE, msg(1))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    inbox = tmp_path / "mail" / "example.test" / "alice"
    (name,) = os.listdir(inbox / "cur")
    (inbox / "new" / name.split(":2,")[0]).write_bytes(msg(1))
    result(folder.refresh())
    modseq = folder.highest_modseq
    for _ in range(3):
        change = result(folder.refresh())
        assert change.added == () and change.changed == ()
    assert [m.uid for m in folder.messages()] == [1]
    assert folder.highest_modseq == modseq


def test_stale_tmp_files_are_cleaned_but_fresh_ones_kept(store, tmp_path):
    """Maildir: tmp/ files older than 36 hours are a crashed writer's leftovers; newer ones may be in use."""
    deliver_bytes(store, ALICE, msg(1))
    tmp = tmp_path / "mail" / "example.test" / "alice" / "tmp"
    (tmp / "stale").write_bytes(b"x")
    os.utime(tmp / "stale", (1_600_000_000, 1_600_000_000))
    (tmp / "fresh").write_bytes(b"y")
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    assert sorted(os.listdir(tmp)) == ["fresh"]
    result(folder.store_flags([1], ["\\Deleted"], "add"))
    before = folder.highest_modseq
    result(folder.expunge())
    assert folder.highest_modseq > before  # RFC 7162 3.2: an expunge moves HIGHESTMODSEQ


def test_messages_returns_a_copy(any_store):
    """A caller sorting or trimming its list does not change the session's snapshot."""
    deliver_bytes(any_store, ALICE, msg(1))
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    folder.messages().clear()
    assert len(folder.messages()) == 1


def test_delivery_of_a_discarded_message_fails_per_recipient(any_store):
    """An unusable message is a temporary failure for each recipient, never a failed Deferred."""
    from mailsuite.errors import TemporaryFailure

    message = IncomingMessage.from_bytes(msg(1))
    message.discard()
    (res,) = result(any_store.deliver(message, [Delivery(ALICE)]))
    assert isinstance(res.error, TemporaryFailure)


def test_files_with_undecodable_names_do_not_break_the_folder(store, tmp_path):
    """A stray file whose name is not UTF-8 is ignored; the folder keeps working."""
    deliver_bytes(store, ALICE, msg(1))
    new = os.path.join(os.fsencode(tmp_path), b"mail", b"example.test", b"alice", b"new")
    with open(os.path.join(new, b"1700000000.bad\xff.host"), "wb") as f:
        f.write(b"Subject: x\r\n\r\n")
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    assert [m.uid for m in folder.messages()] == [1]
    result(folder.store_flags([1], ["\\Seen"], "add"))
    assert result(store.user_mailbox(ALICE).status("INBOX")).messages == 1


def test_session_on_a_deleted_and_recreated_folder_fails_instead_of_touching_new_messages(any_store):
    """UID 1 of a re-created folder is another message: the old session must not flag or expunge it."""
    mailbox = any_store.user_mailbox(ALICE)
    result(mailbox.create_folder("Work"))
    deliver_bytes(any_store, ALICE, msg(1), folder="Work")
    old = result(mailbox.open_folder("Work"))
    result(mailbox.delete_folder("Work"))
    result(mailbox.create_folder("Work"))
    deliver_bytes(any_store, ALICE, msg(2), folder="Work")
    for call in (old.refresh, lambda: old.store_flags([1], ["\\Deleted"], "add"), old.expunge, lambda: old.copy([1], "Trash")):
        with pytest.raises(NoSuchFolder):
            result(call())
    fresh = result(mailbox.open_folder("Work"))
    assert [m.flags for m in fresh.messages()] == [frozenset()]


def test_settled_cur_is_not_relisted_but_its_changes_are_seen(store, tmp_path):
    """With only cur/ settled, new deliveries and later flag renames in cur/ are both picked up."""
    for i in range(3):
        deliver_bytes(store, ALICE, msg(i))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))  # claims: all in cur/
    inbox = tmp_path / "mail" / "example.test" / "alice"
    os.utime(inbox / "cur", (1_600_000_000, 1_600_000_000))
    result(folder.refresh())  # lists cur/ once more and remembers it as settled
    state = store.state(str(inbox), str(inbox))
    assert state._unchanged(state._identity()) >= {"cur"}
    deliver_bytes(make_store(tmp_path / "mail"), ALICE, msg(3))
    change = result(folder.refresh())
    assert [m.uid for m in change.added] == [4]
    os.utime(inbox / "cur", (1_600_000_000, 1_600_000_000))
    result(folder.refresh())
    name = sorted(n for n in os.listdir(inbox / "cur") if not n.endswith("T"))[0]
    os.rename(inbox / "cur" / name, inbox / "cur" / (name.split(":2,")[0] + ":2,F"))
    change = result(folder.refresh())
    assert [(m.uid, m.flags) for m in change.changed] == [(1, {"\\Flagged"})]


def test_another_maildir_reader_sees_messages_flags_and_folders(store, tmp_path):
    """Python's own mailbox.Maildir (a third-party Maildir++ reader) reads what we wrote."""
    import mailbox

    deliver_bytes(store, ALICE, msg(1))
    deliver_bytes(store, ALICE, msg(2))
    mb = store.user_mailbox(ALICE)
    folder = result(mb.open_folder("INBOX"))
    result(folder.store_flags([1], ["\\Seen", "\\Flagged"], "add"))
    result(folder.copy([2], "Archive"))
    result(mb.create_folder("Projects/2025"))
    reader = mailbox.Maildir(tmp_path / "mail" / "example.test" / "alice", factory=None, create=False)
    subjects = {m["Subject"]: m.get_flags() for m in reader}
    assert subjects == {"message 1": "FS", "message 2": ""}
    assert {"Sent", "Drafts", "Trash", "Junk", "Archive", "Projects", "Projects.2025"} <= set(reader.list_folders())
    (archived,) = list(reader.get_folder("Archive"))
    assert archived["Subject"] == "message 2"


def test_a_fresh_process_trusts_a_saved_settled_listing_only_while_nothing_changed(store, tmp_path, monkeypatch):
    """The L record lets a new process skip listing an untouched folder; any change makes it list again."""
    for i in range(3):
        deliver_bytes(store, ALICE, msg(i))
    result(store.user_mailbox(ALICE).open_folder("INBOX"))
    inbox = tmp_path / "mail" / "example.test" / "alice"
    for sub in ("new", "cur"):
        os.utime(inbox / sub, (1_600_000_000, 1_600_000_000))
    result(store.user_mailbox(ALICE).status("INBOX"))  # lists once more, settled: saves the identities
    listings = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: (listings.append(str(path)), real_listdir(path))[1])
    fresh = make_store(tmp_path / "mail")
    folder = result(fresh.user_mailbox(ALICE).open_folder("INBOX", read_only=True))
    assert [m.uid for m in folder.messages()] == [1, 2, 3]
    assert not any(p.endswith(("/new", "/cur")) for p in listings)  # trusted the saved listing
    (inbox / "new" / "1700000000.other.host").write_bytes(b"Subject: dropped in\r\n\r\n")
    again = make_store(tmp_path / "mail")
    folder = result(again.user_mailbox(ALICE).open_folder("INBOX", read_only=True))
    assert [m.uid for m in folder.messages()] == [1, 2, 3, 4]


def test_a_select_that_claimed_new_mail_leaves_nothing_to_list_for_the_next(store, tmp_path, monkeypatch):
    """After a SELECT moved new mail to cur/, the next SELECT needs no listing (big-folder SELECT speed),
    and a rename by another program right after is still seen."""
    for i in range(3):
        deliver_bytes(store, ALICE, msg(i))
    first = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    assert first.recent == {1, 2, 3}
    inbox = tmp_path / "mail" / "example.test" / "alice"
    state = store.state(str(inbox), str(inbox))
    if not state._fine_mtimes:
        pytest.skip("file system without local nanosecond mtimes: the two-second rule applies")
    listings = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: (listings.append(str(path)), real_listdir(path))[1])
    second = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    assert [m.uid for m in second.messages()] == [1, 2, 3]
    assert not any(p.endswith(("/new", "/cur")) for p in listings)
    name = sorted(real_listdir(inbox / "cur"))[0]
    os.rename(inbox / "cur" / name, inbox / "cur" / (name.split(":2,")[0] + ":2,F"))  # mutt flags it
    change = result(second.refresh())
    assert [(m.uid, m.flags) for m in change.changed] == [(1, {"\\Flagged"})]


def test_fs_type_names_the_file_system_of_a_path(tmp_path):
    """The mount table lookup behind the settle rule finds a type for a real path."""
    from mailsuite.store.listing import fs_type

    if not os.path.exists("/proc/self/mountinfo"):
        pytest.skip("no /proc/self/mountinfo on this system")
    assert fs_type(str(tmp_path))


def test_appended_and_copied_messages_are_recent_for_the_next_session_only(any_store):
    """RFC 3501 2.3.2: an APPENDed (or COPYed) message is \\Recent for the first read-write session
    that sees it; EXAMINE shows it recent without claiming it; STATUS RECENT counts it until claimed."""
    mailbox = any_store.user_mailbox(ALICE)
    deliver_bytes(any_store, ALICE, msg(0))
    watcher = result(mailbox.open_folder("INBOX"))  # claims the delivery
    assert watcher.recent == {1}
    appender = result(mailbox.open_folder("INBOX", read_only=True))
    assert result(appender.append(IncomingMessage.from_bytes(msg(1)), ["\\Seen"])) == 2
    assert result(mailbox.append("INBOX", IncomingMessage.from_bytes(msg(2)))) == 3
    assert result(mailbox.status("INBOX")).recent == 2
    examine = result(mailbox.open_folder("INBOX", read_only=True))
    assert examine.recent == {2, 3}
    assert result(mailbox.status("INBOX")).recent == 2  # EXAMINE cleared nothing
    change = result(watcher.refresh())
    assert [m.uid for m in change.added] == [2, 3]
    assert watcher.recent == {1, 2, 3}
    assert result(mailbox.status("INBOX")).recent == 0
    assert result(mailbox.open_folder("INBOX")).recent == frozenset()
    result(examine.refresh())
    assert examine.recent == frozenset()
    result(watcher.copy([2], "Archive"))
    archive = result(mailbox.open_folder("Archive"))
    assert archive.recent == {1}
    assert [m.flags for m in archive.messages()] == [{"\\Seen"}]
    assert result(mailbox.open_folder("Archive")).recent == frozenset()


def test_recent_claims_survive_a_restart_and_reach_other_processes(store, tmp_path):
    """The claim is in the state files: a fresh process neither re-offers claimed messages nor loses unclaimed ones."""
    mailbox = store.user_mailbox(ALICE)
    result(mailbox.append("INBOX", IncomingMessage.from_bytes(msg(1))))
    assert result(mailbox.open_folder("INBOX")).recent == {1}
    result(mailbox.append("INBOX", IncomingMessage.from_bytes(msg(2))))
    other = make_store(tmp_path / "mail").user_mailbox(ALICE)
    assert result(other.status("INBOX")).recent == 1
    assert result(other.open_folder("INBOX")).recent == {2}
    assert result(mailbox.open_folder("INBOX")).recent == frozenset()


def test_state_written_before_the_recent_marker_is_read_and_migrated(store, tmp_path):
    """A state without the \\Recent marker (older mailsuite) keeps its UIDs; only new/ is recent; the
    first change rewrites it with the marker, which an older reader skips (an = record for UID 0)."""
    from mailsuite.store.state_records import LOG_FILE, STATE_FILE

    mailbox = store.user_mailbox(ALICE)
    deliver_bytes(store, ALICE, msg(1))
    result(mailbox.open_folder("INBOX"))  # claims UID 1 (cur/)
    deliver_bytes(store, ALICE, msg(2))
    result(mailbox.status("INBOX"))  # UID 2, still in new/
    inbox = tmp_path / "mail" / "example.test" / "alice"
    log_lines = (inbox / LOG_FILE).read_text().splitlines()
    assert " = 0 " in log_lines[1]  # a snapshot's log starts with the marker
    assert any(line.endswith(" = 0 2 c -") for line in log_lines)  # the claim moved it on
    # what an older version wrote: the same snapshot, a log without any marker record
    legacy = [line for line in log_lines if " = 0 " not in line]
    (inbox / LOG_FILE).write_text("".join(f"{line}\n" for line in legacy))
    fresh = make_store(tmp_path / "mail")
    state = fresh.state(str(inbox), str(inbox))
    with state.locked():
        assert state.first_recent == state.uidnext == 3
        assert sorted(state.entries) == [1, 2]
    examine = result(fresh.user_mailbox(ALICE).open_folder("INBOX", read_only=True))
    assert examine.recent == {2}
    assert result(fresh.user_mailbox(ALICE).open_folder("INBOX")).recent == {2}
    text = (inbox / STATE_FILE).read_text()
    assert " = 0 3 c -" in (inbox / LOG_FILE).read_text() and text.startswith("mailsuite-state 1 ")


def test_subscribed_names_that_are_no_folder_are_listed_as_not_existing(any_store):
    """RFC 3501 6.3.9: a subscription outlives its folder, so LSUB (and LIST (SUBSCRIBED), RFC 5258
    \\NonExistent) still name it; a plain listing can tell it apart (exists=False)."""
    mailbox = any_store.user_mailbox(ALICE)
    result(mailbox.create_folder("Old"))
    result(mailbox.set_subscribed("Old", True))
    result(mailbox.set_subscribed("Ghost/Child", True))
    result(mailbox.delete_folder("Old"))
    result(mailbox.delete_folder("Junk"))  # subscribed by default
    folders = result(mailbox.list_folders())
    names = {f.name: f for f in folders}
    for name in ("Old", "Ghost/Child", "Junk"):
        info = names[name]
        assert (info.subscribed, info.exists, info.selectable, info.has_children, info.special_use) == (True, False, False, False, None), name
    assert "Ghost" not in names  # no folder, no subscription: not even a parent
    assert all(f.exists for f in folders if f.name not in ("Old", "Ghost/Child", "Junk"))
    assert folders[0].name == "INBOX"
    result(mailbox.set_subscribed("Old", False))
    assert "Old" not in {f.name for f in result(mailbox.list_folders())}
    result(mailbox.create_folder("Junk"))
    junk = {f.name: f for f in result(mailbox.list_folders())}["Junk"]
    assert junk.exists and junk.selectable and junk.subscribed and junk.special_use == "\\Junk"
