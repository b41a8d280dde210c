"""Unsafe user and folder names are refused; the on-disk folder encoding round-trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsuite.errors import InvalidName
from mailsuite.store import names

from .conftest import deliver_bytes, msg, result

UNSAFE_ADDRESSES = [
    "../x@example.test",
    "..@example.test",
    ".@example.test",
    ".hidden@example.test",
    "a/b@example.test",
    "a\\b@example.test",
    "/etc/passwd@example.test",
    "a\x00b@example.test",
    "a\nb@example.test",
    "a\x7fb@example.test",
    "x@..",
    "x@.",
    "x@../../etc",
    "x@exa/mple.test",
    "x@example\x00.test",
    "x@exa mple.test",
    "@example.test",
    "x@",
    "noatsign",
    "x" * 65 + "@example.test",
    "x@" + "a" * 256,
]

UNSAFE_FOLDERS = [
    "",
    "..",
    ".",
    "a/../b",
    "a/./b",
    "../x",
    "/etc",
    "/",
    "a//b",
    "a/",
    "a\x00b",
    "a\rb",
    "a\tb",
    "x" * 201,
    "/".join(["d"] * 17),
    "é" * 150,  # fits 200 characters but not 255 bytes once encoded
]


@pytest.mark.parametrize("address", UNSAFE_ADDRESSES)
def test_unsafe_addresses_are_refused(store, address, tmp_path):
    """Every way out of the tree (or a hidden/odd directory) is an InvalidName, and nothing is created."""
    with pytest.raises(InvalidName):
        store.user_mailbox(address)
    with pytest.raises(InvalidName):
        result(store.check_quota(address, 10))
    with pytest.raises(InvalidName):
        result(store.remove_user(address))
    assert list((tmp_path / "mail").iterdir()) == []


@pytest.mark.parametrize("name", UNSAFE_FOLDERS)
def test_unsafe_folder_names_are_refused(any_store, name):
    """CREATE/SELECT/DELETE/RENAME/APPEND/COPY/deliver with an unsafe folder name fail with InvalidName."""
    mailbox = any_store.user_mailbox("alice@example.test")
    deliver_bytes(any_store, "alice@example.test", msg(1))
    folder = result(mailbox.open_folder("INBOX"))
    calls = [
        lambda: mailbox.create_folder(name),
        lambda: mailbox.open_folder(name),
        lambda: mailbox.delete_folder(name),
        lambda: mailbox.rename_folder("Sent", name),
        lambda: mailbox.rename_folder(name, "Other"),
        lambda: mailbox.status(name),
        lambda: mailbox.set_subscribed(name, True),
        lambda: folder.copy([1], name),
    ]
    for call in calls:
        with pytest.raises(InvalidName):
            result(call())
    from mailsuite.interfaces import Delivery
    from mailsuite.store import IncomingMessage

    (res,) = result(any_store.deliver(IncomingMessage.from_bytes(msg(2)), [Delivery("alice@example.test", name)]))
    assert isinstance(res.error, InvalidName)


def test_address_maps_to_domain_lowercased_and_localpart_as_given():
    """conftest's server.mail_dir(address) relies on this exact layout."""
    assert names.split_address("Bob.Smith@Example.TEST") == ("Bob.Smith", "example.test")
    assert names.split_address("\"odd\"@example.test")[0] == "\"odd\""
    assert names.split_address("jörg@bücher.example") == ("jörg", "bücher.example")


def test_folder_dirname_encoding_is_maildirplusplus_with_modified_utf7():
    """Documented encoding: '.' separates levels, components are modified UTF-7, '.' itself is &AC4-."""
    assert names.folder_dirname("Sent") == ".Sent"
    assert names.folder_dirname("Archive/2025") == ".Archive.2025"
    assert names.folder_dirname("Entwürfe") == ".Entw&APw-rfe"
    assert names.folder_dirname("a.b") == ".a&AC4-b"
    assert names.folder_dirname("R&D") == ".R&-D"
    assert names.folder_dirname("日本語") == ".&ZeVnLIqe-"  # RFC 3501 5.1.3 example
    assert names.dirname_to_folder(".INBOX") is None
    assert names.dirname_to_folder(".inbox.Sub") == "INBOX/Sub"
    assert names.dirname_to_folder(".bad&-encoding&") is None
    assert names.normalize_folder("inbox") == "INBOX"


@given(st.lists(st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s and s not in (".", "..") and not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in s)), min_size=1, max_size=4))
def test_any_valid_name_round_trips_through_the_disk_encoding(parts):
    """normalize -> dirname -> name gives the same IMAP name back, and the dirname is one safe component."""
    name = "/".join(parts)
    try:
        canonical = names.normalize_folder(name)
    except InvalidName:
        return
    if canonical == "INBOX":
        return
    dirname = names.folder_dirname(canonical)
    assert "/" not in dirname and "\x00" not in dirname and dirname.startswith(".") and dirname not in (".", "..")
    assert names.dirname_to_folder(dirname) == canonical
