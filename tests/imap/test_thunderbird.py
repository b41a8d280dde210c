"""Real Thunderbird (Debian's thunderbird, headless) against our IMAP server: IMAPS and STARTTLS.

The profile is fresh and has two accounts, both with normal password and
check for new mail at startup: alice on 127.0.0.1:<imaps> (SSL/TLS, every
folder downloaded for offline use) and bob on localhost:<imap> (STARTTLS,
messages fetched when read).  Thunderbird starts
twice on it, as for a user: the first start only stores what a user confirms
once in dialogs (the exception for the self-signed certificate, the saved
password; put in over Marionette), with mail checks off because without a
stored password the start-up check would open a password prompt.  The second
start checks INBOX at startup by itself; the fixture waits for that, then
updates and downloads the other folders (Thunderbird's background sync would
get there too, some seconds later).

One test then does what a user does (read, flag, delete, copy, move, create
and rename a folder, save a draft, empty Trash, make a sub-folder and one with
a non-ASCII name, delete a folder, receive new mail while idling and on a
check, use the STARTTLS account) through Thunderbird's own folder and
copy services, and checks each result twice: in Thunderbird's message database
and with imaplib on the server.  The last step reads Thunderbird's IMAP log
(MOZ_LOG=IMAP:5) and fails on any NO or BAD our server answered, on any alert
Thunderbird would have shown, and on a traceback in the server log.
Thunderbird missing is a failure, not a skip: CI installs it (.ci/run).
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from tests.support.thunderbird import SSL, STARTTLS, ImapAccount, Thunderbird, imap_account_prefs

USER = "alice@example.test"
PASSWORD = "correct horse battery"
#: A second account, on port 143 with STARTTLS (the first uses implicit TLS).
BOB = "bob@example.test"
BOB_PASSWORD = "bob's own password"
INBOX_SUBJECTS = [f"inbox {n}" for n in range(6)]
WORK_SUBJECTS = ["work 0", "work 1"]


def message(subject: str, body: str, to: str = USER) -> bytes:
    return (
        f"From: Sender <sender@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n{body}\r\n"
    ).encode()


def with_attachment() -> bytes:
    """A 160 KB multipart/mixed message: text and HTML alternatives, a binary and a CSV attachment."""
    m = EmailMessage()
    m["From"] = "Sender <sender@example.org>"
    m["To"] = BOB
    m["Subject"] = "report attached"
    m.set_content("Hello Bob,\n\nthe report is attached.\n")
    m.add_alternative("<p>Hello Bob,</p><p>the report is attached.</p>", subtype="html")
    m.add_attachment(bytes(range(256)) * 400, maintype="application", subtype="octet-stream", filename="report.bin")
    m.add_attachment("col1,col2\n" * 2000, subtype="csv", filename="data.csv")
    return m.as_bytes().replace(b"\n", b"\r\n")


def imap(server: Any, user: str = USER, password: str = PASSWORD) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.client_tls(), timeout=10)
    client.login(user, password)
    return client


class ServerView:
    """The server's side of the story, read with imaplib over one session (EXAMINE shows the current state)."""

    def __init__(self, client: imaplib.IMAP4_SSL) -> None:
        self.client = client

    def folder(self, folder: str) -> dict[str, set[str]]:
        """Subject -> flags of every message in ``folder``."""
        typ, data = self.client.select(f'"{folder}"', readonly=True)
        assert typ == "OK", (folder, data)
        if data == [b"0"]:
            return {}
        typ, data = self.client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        out = {}
        for item in data:
            if isinstance(item, tuple):
                flags = set(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split())
                out[item[1].decode().split(":", 1)[1].strip()] = flags
        return out

    def body(self, folder: str, subject: str) -> bytes:
        self.client.select(f'"{folder}"', readonly=True)
        typ, data = self.client.search(None, "SUBJECT", f'"{subject}"')
        typ, data = self.client.fetch(data[0].split()[0], "(BODY.PEEK[])")
        return data[0][1]

    def folders(self) -> list[str]:
        return [line.decode() for line in self.client.list()[1]]

    def subscribed(self) -> list[str]:
        return [line.decode() for line in self.client.lsub()[1] if line]


def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something true (Thunderbird sends flag changes in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        time.sleep(0.1)


def settle(tb: Thunderbird, quiet: float = 1.0) -> None:
    """Wait until every command Thunderbird sent has its tagged answer (an open IDLE aside) and nothing new
    was sent for ``quiet`` seconds: its background work (a SELECT to update a folder, a STATUS after a
    move) can lag on a loaded machine, and must not land after the next step renames what it names."""

    def pending() -> tuple[int, list[str]]:
        waiting: dict[tuple[str, str], str] = {}
        lines = tb.conversation()
        for connection, _state, direction, text in lines:
            tag = text.split(" ", 1)[0]
            if direction == "C":
                waiting[(connection, tag)] = text
            else:
                waiting.pop((connection, tag), None)
        return len(lines), [t for t in waiting.values() if not t.lower().endswith(" idle") and t.lower() != "done"]

    deadline = time.monotonic() + 30
    last = (-1, [])
    since = time.monotonic()
    while time.monotonic() < deadline:
        now = pending()
        if now != last:
            last, since = now, time.monotonic()
        elif not now[1] and time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)
    # a command left without an answer (its connection gone) must not stall the session: go on


@pytest.fixture(scope="module")
def session(mailsuite_module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Thunderbird, ServerView]]:
    """A server with mail in INBOX (by SMTP) and Work (by APPEND), and a synchronised Thunderbird."""
    if Thunderbird.executable() is None:
        pytest.fail("thunderbird is not installed: apt-get install thunderbird (see .ci/run)")
    server = mailsuite_module_server(users={USER: PASSWORD, BOB: BOB_PASSWORD})
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
        for n, subject in enumerate(INBOX_SUBJECTS):
            smtp.sendmail("sender@example.org", [USER], message(subject, f"body {n}"))
        for subject in ("for bob 0", "for bob 1"):
            smtp.sendmail("sender@example.org", [BOB], message(subject, "hi bob", to=BOB))
        smtp.sendmail("sender@example.org", [BOB], with_attachment())
    client = imap(server)
    client.create("Work")
    client.subscribe("Work")
    client.append("Work", "(\\Seen)", None, message(WORK_SUBJECTS[0], "seen before"))
    client.append("Work", None, None, message(WORK_SUBJECTS[1], "unseen"))

    accounts = (
        ImapAccount("127.0.0.1", server.ports["imaps"], USER, SSL, USER, condstore=True),
        # Another host name, so Thunderbird's log (which names the host, not the user) tells the accounts apart.
        ImapAccount("localhost", server.ports["imap"], BOB, STARTTLS, BOB, offline=False),
    )
    tb = Thunderbird(tmp_path_factory.mktemp("thunderbird"), imap_account_prefs(*accounts, check_at_startup=False))
    try:
        # First start: what the user confirms in dialogs once (certificate exception, "remember password").
        tb.start()
        certificate = "".join(line for line in server.certificate.read_text().splitlines() if not line.startswith("-----"))
        tb.run(LOGINS_JS, certificate, [[a.host, a.port, a.user, p] for a, p in zip(accounts, (PASSWORD, BOB_PASSWORD))])
        tb.stop()
        assert not tb.exchanges(), "the first start must not talk to the server"
        # Every later start: Thunderbird logs in and checks INBOX at startup by itself.
        tb.set_prefs(imap_account_prefs(*accounts))
        tb.start()
        tb.run(ALERTS_JS)
        tb.run(STARTUP_CHECK_JS, INBOX_SUBJECTS)
        tb.run(SYNC_JS)
        yield server, tb, ServerView(client)
    finally:
        tb.stop()
        client.logout()


#: Record every alert Thunderbird would show the user (server errors, [ALERT] texts, certificate errors).
ALERTS_JS = r"""
window.mailsuiteAlerts = [];
MailServices.mailSession.addUserFeedbackListener({
  QueryInterface: ChromeUtils.generateQI(["nsIMsgUserFeedbackListener"]),
  onAlert(message) { window.mailsuiteAlerts.push(String(message)); return true; },
  onCertError(securityInfo, url) { window.mailsuiteAlerts.push(`certificate error for ${url && url.spec}`); return true; },
});
"""

#: Wait for the start-up check: INBOX lists the given subjects, every message downloaded for offline use.
STARTUP_CHECK_JS = r"""
const expected = JSON.stringify([...arguments[0]].sort());
await waitFor(() => {
  const inbox = folderByName("INBOX");
  if (!inbox) return false;
  const messages = [...inbox.messages];
  return JSON.stringify(messages.map(h => h.subject).sort()) == expected && messages.every(h => inbox.hasMsgOffline(h.messageKey));
}, "the start-up check of INBOX", 30000);
"""

#: For each [host, port, user, password]: accept the self-signed certificate for host:port (what
#: "Confirm Security Exception" stores) and save the password (what "Use Password Manager" stores).
LOGINS_JS = r"""
const [certificate, accounts] = arguments;
const certdb = Cc["@mozilla.org/security/x509certdb;1"].getService(Ci.nsIX509CertDB);
const overrides = Cc["@mozilla.org/security/certoverride;1"].getService(Ci.nsICertOverrideService);
for (const [host, port, user, password] of accounts) {
  overrides.rememberValidityOverride(host, port, {}, certdb.constructX509FromBase64(certificate), false);
  const login = Cc["@mozilla.org/login-manager/loginInfo;1"].createInstance(Ci.nsILoginInfo);
  login.init(`imap://${host}`, null, `imap://${host}`, user, password, "", "");
  await Services.logins.addLoginAsync(login);
}
"""

#: Discover the default account's folders and download every folder for offline use.
SYNC_JS = r"""
let [listener, done] = urlDone();
MailServices.imap.discoverAllFolders(root, listener, msgWindow);
await done;
// Like Thunderbird's own start-up: all folders at once, over its cached connections.
await Promise.all(root.subFolders.map(async folder => {
  let [listener, done] = urlDone();
  folder.QueryInterface(Ci.nsIMsgImapMailFolder).updateFolderWithListener(msgWindow, listener);
  await done;
  [listener, done] = urlDone();
  folder.downloadAllForOffline(listener, msgWindow);
  await done;
}));
"""

#: What Thunderbird's database holds: folder -> [{subject, read, flagged, offline, text}].
STATE_JS = r"""
const [withText] = arguments;
const F = Ci.nsMsgMessageFlags;
const out = {};
for (const folder of root.subFolders) {
  out[folder.name] = [...folder.messages].map(h => {
    const entry = {subject: h.subject, read: !!(h.flags & F.Read), flagged: !!(h.flags & F.Marked),
                   offline: folder.hasMsgOffline(h.messageKey)};
    if (withText && entry.offline) {
      const stream = folder.getMsgInputStream(h);
      entry.text = NetUtil.readInputStreamToString(stream, h.offlineMessageSize);
      stream.close();
    }
    return entry;
  });
}
return out;
"""

#: Refresh the named folders from the server (what selecting a folder does).
UPDATE_JS = r"""
for (const name of arguments[0]) {
  const [listener, done] = urlDone();
  folderByName(name).QueryInterface(Ci.nsIMsgImapMailFolder).updateFolderWithListener(msgWindow, listener);
  await done;
}
"""


def tb_state(tb: Thunderbird, with_text: bool = False) -> dict[str, list[dict[str, Any]]]:
    return tb.run("const {NetUtil} = ChromeUtils.importESModule('resource://gre/modules/NetUtil.sys.mjs');\n" + STATE_JS, with_text)


def subjects(entries: list[dict[str, Any]]) -> list[str]:
    return sorted(e["subject"] for e in entries)


def step_folders_and_offline_copies(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """Thunderbird sees every folder (special-use ones included) and holds an exact offline copy of each message."""
    state = tb_state(tb, with_text=True)
    assert {"INBOX", "Work", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= set(state)
    assert subjects(state["INBOX"]) == INBOX_SUBJECTS
    assert subjects(state["Work"]) == WORK_SUBJECTS
    work = {e["subject"]: e for e in state["Work"]}
    assert work["work 0"]["read"] and not work["work 1"]["read"]
    for folder in ("INBOX", "Work"):
        for entry in state[folder]:
            assert entry["offline"], (folder, entry["subject"])
            # The offline store prefixes Thunderbird's own X-Mozilla-Status lines; the rest is the server's bytes.
            text = re.sub(r"^(X-Mozilla-[\w-]+: [^\n]*\n)+", "", entry["text"])
            assert text.encode() == view.body(folder, entry["subject"])
    special = tb.run(
        """
        const F = Ci.nsMsgFolderFlags;
        return [["Trash", F.Trash], ["Sent", F.SentMail], ["Drafts", F.Drafts], ["Junk", F.Junk], ["Archive", F.Archive]]
          .filter(([name, flag]) => !folderByName(name).getFlag(flag)).map(([name]) => name);
        """
    )
    assert special == [], f"folders Thunderbird did not recognise as special: {special}"


def step_read_and_flag_reach_the_server(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """Marking read and flagging in Thunderbird become \\Seen and \\Flagged on the server."""
    tb.run(
        """
        const inbox = folderByName("INBOX");
        const find = s => [...inbox.messages].find(h => h.subject == s);
        inbox.markMessagesRead([find("inbox 0")], true);
        inbox.markMessagesFlagged([find("inbox 1")], true);
        """
    )

    def changed() -> dict[str, set[str]] | None:
        inbox = view.folder("INBOX")
        return inbox if "\\Seen" in inbox["inbox 0"] and "\\Flagged" in inbox["inbox 1"] else None

    inbox = eventually(changed, "\\Seen and \\Flagged on the server")
    assert "\\Flagged" not in inbox["inbox 0"] and "\\Seen" not in inbox["inbox 1"]
    assert all(not flags & {"\\Seen", "\\Flagged"} for s, flags in inbox.items() if s not in ("inbox 0", "inbox 1"))


def step_delete_moves_to_trash(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """Delete (Thunderbird's default: move to Trash) leaves the message in Trash only."""
    tb.run(
        """
        const inbox = folderByName("INBOX");
        const [listener, done] = copyDone();
        inbox.deleteMessages([[...inbox.messages].find(h => h.subject == "inbox 2")], msgWindow, false, false, listener, false);
        await done;
        """
    )
    # Gone from INBOX (moved and expunged, not just marked \Deleted), present in Trash.
    eventually(lambda: "inbox 2" not in view.folder("INBOX") and "inbox 2" in view.folder("Trash"), "the move to Trash")
    tb.run(UPDATE_JS, ["INBOX", "Trash"])
    state = tb_state(tb)
    assert "inbox 2" not in subjects(state["INBOX"]) and "inbox 2" in subjects(state["Trash"])


def step_copy_move_and_create_folder(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """A folder created in Thunderbird exists on the server; copy and move between folders land there too."""
    tb.run(
        """
        const inbox = folderByName("INBOX"), work = folderByName("Work");
        const find = (folder, s) => [...folder.messages].find(h => h.subject == s);
        let [listener, done] = copyDone();
        MailServices.copy.copyMessages(work, [find(work, "work 1")], inbox, false, listener, msgWindow, false);
        await done;
        root.createSubfolder("Projects", msgWindow);
        const projects = await waitFor(() => root.containsChildNamed("Projects") && folderByName("Projects"), "Projects");
        [listener, done] = copyDone();
        MailServices.copy.copyMessages(inbox, [find(inbox, "inbox 3")], projects, true, listener, msgWindow, false);
        await done;
        """
    )
    assert any(line.endswith(' "Projects"') for line in view.folders()), view.folders()
    assert any(line.endswith(' "Projects"') for line in view.subscribed()), view.subscribed()  # Thunderbird subscribes it
    eventually(lambda: set(view.folder("Projects")) == {"inbox 3"}, "the move to Projects")
    inbox = eventually(lambda: (inbox := view.folder("INBOX")) and "work 1" in inbox and inbox, "the copy to INBOX")
    assert "inbox 3" not in inbox
    assert set(view.folder("Work")) == set(WORK_SUBJECTS)  # a copy leaves the original
    tb.run(UPDATE_JS, ["INBOX", "Work", "Projects"])
    state = tb_state(tb)
    assert subjects(state["Projects"]) == ["inbox 3"]
    assert subjects(state["Work"]) == WORK_SUBJECTS
    assert "work 1" in subjects(state["INBOX"]) and "inbox 3" not in subjects(state["INBOX"])


def step_draft_rename_and_empty_trash(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """Saving a draft (APPEND with flags), renaming a folder and emptying Trash (STORE \\Deleted + EXPUNGE)."""
    draft = tb.workdir / "draft.eml"
    draft.write_bytes(message("my draft", "not sent yet"))
    tb.run(
        """
        const file = Cc["@mozilla.org/file/local;1"].createInstance(Ci.nsIFile);
        file.initWithPath(arguments[0]);
        let [listener, done] = copyDone();
        MailServices.copy.copyFileMessage(file, folderByName("Drafts"), null, true, Ci.nsMsgMessageFlags.Read, "", listener, msgWindow);
        await done;
        """,
        str(draft),
    )
    settle(tb)  # nothing Thunderbird still does may name "Projects" once it is renamed
    tb.run(
        """
        folderByName("Projects").rename("Projects 2024", msgWindow);
        await waitFor(() => root.containsChildNamed("Projects 2024"), "the renamed folder");
        const trash = folderByName("Trash");
        const [listener, done] = urlDone();
        trash.emptyTrash(listener);
        await done;
        """
    )
    drafts = eventually(lambda: view.folder("Drafts"), "the draft on the server")
    assert drafts == {"my draft": {"\\Seen", "\\Draft"}}
    assert view.body("Drafts", "my draft").replace(b"\r\n", b"\n") == draft.read_bytes().replace(b"\r\n", b"\n")
    folders = view.folders()
    assert any(line.endswith(' "Projects 2024"') for line in folders) and not any(line.endswith(' "Projects"') for line in folders)
    assert set(view.folder("Projects 2024")) == {"inbox 3"}
    eventually(lambda: view.folder("Trash") == {}, "an empty Trash")


def step_folder_tree(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """Sub-folders, a non-ASCII folder name (modified UTF-7, RFC 3501 5.1.3) and deleting a folder (into Trash)."""
    tb.run(
        """
        folderByName("Work").createSubfolder("2024", msgWindow);
        const sub = await waitFor(() => folderByName("Work").containsChildNamed("2024") && folderByName("Work").getChildNamed("2024"), "Work/2024");
        root.createSubfolder("Réunions été", msgWindow);
        const accented = await waitFor(() => root.containsChildNamed("Réunions été") && folderByName("Réunions été"), "accented");
        const inbox = folderByName("INBOX");
        let [listener, done] = copyDone();
        MailServices.copy.copyMessages(inbox, [[...inbox.messages].find(h => h.subject == "inbox 4")], accented, false, listener, msgWindow, false);
        await done;
        [listener, done] = copyDone();
        MailServices.copy.copyMessages(inbox, [[...inbox.messages].find(h => h.subject == "inbox 4")], sub, false, listener, msgWindow, false);
        await done;
        root.createSubfolder("Doomed", msgWindow);
        const doomed = await waitFor(() => root.containsChildNamed("Doomed") && folderByName("Doomed"), "Doomed");
        [listener, done] = copyDone();
        MailServices.copy.copyFolder(doomed, folderByName("Trash"), true, listener, msgWindow);
        await done;
        await waitFor(() => !root.containsChildNamed("Doomed"), "Doomed gone");
        """
    )
    accented = "R&AOk-unions &AOk-t&AOk-"  # "Réunions été" in modified UTF-7

    def listed() -> dict[str, str]:
        return {line.rsplit(' "/" ', 1)[1].strip('"'): line for line in view.folders()}

    folders = eventually(lambda: (f := listed()) and "Trash/Doomed" in f and "Doomed" not in f and f, "Doomed moved into Trash")
    assert "Work/2024" in folders and "\\HasChildren" in folders["Work"]
    assert accented in folders, folders
    assert set(view.folder("Work/2024")) == {"inbox 4"}
    assert set(view.folder(accented)) == {"inbox 4"}


def step_new_mail_is_pushed_while_idle(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """Mail delivered by SMTP while Thunderbird waits in IDLE on INBOX reaches it with no check (RFC 2177)."""
    connection = eventually(lambda: tb.idling_in("INBOX", "127.0.0.1"), "Thunderbird to IDLE on INBOX", timeout=30)
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("sender@example.org", [USER], message("pushed", "new"))
    tb.run('await waitFor(() => [...folderByName("INBOX").messages].some(h => h.subject == "pushed"), "pushed", 15000);')
    # The server spoke first: after "+ idling" the next line on that connection is its untagged EXISTS.
    lines = [(d, text) for c, _, d, text in tb.conversation() if c == connection]
    idle_at = max(i for i, (d, text) in enumerate(lines) if d == "S" and text.startswith("+ "))
    assert idle_at + 1 < len(lines) and re.fullmatch(r"\* \d+ EXISTS", lines[idle_at + 1][1]), lines[idle_at:idle_at + 3]


def step_new_mail_shows_up(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """Mail delivered by SMTP while Thunderbird runs appears in its INBOX when it checks for new mail."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("sender@example.org", [USER], message("late arrival", "new"))
    tb.run(
        """
        const [listener, done] = urlDone();
        server.getNewMessages(folderByName("INBOX"), msgWindow, listener);
        await done;
        await waitFor(() => [...folderByName("INBOX").messages].some(h => h.subject == "late arrival"), "late arrival");
        """
    )


def step_starttls_account(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """A second account on port 143 upgrades with STARTTLS before it logs in, syncs INBOX, reads a
    message with attachments that is not kept offline and marks a message read."""
    seen = tb.run(
        """
        const bob = serverOf(arguments[0]);
        let [listener, done] = urlDone();
        MailServices.imap.discoverAllFolders(bob.rootFolder, listener, msgWindow);
        await done;
        const inbox = folderByName("INBOX", arguments[0]);
        [listener, done] = urlDone();
        inbox.QueryInterface(Ci.nsIMsgImapMailFolder).updateFolderWithListener(msgWindow, listener);
        await done;
        inbox.markMessagesRead([[...inbox.messages].find(h => h.subject == "for bob 1")], true);
        // Not kept offline: reading a message fetches it now (in 64 KiB BODY.PEEK[]<offset.length> chunks).
        const big = [...inbox.messages].find(h => h.subject == "report attached");
        const {MsgHdrToMimeMessage} = ChromeUtils.importESModule("resource:///modules/gloda/MimeMessage.sys.mjs");
        const attachments = await new Promise((resolve, reject) => MsgHdrToMimeMessage(big, null, (hdr, mime) =>
          mime ? resolve(mime.allUserAttachments.map(a => [a.name, a.contentType, a.size])) : reject(new Error("not parsed")), true));
        return [[...inbox.messages].map(h => h.subject).sort(), attachments];
        """,
        BOB,
    )
    seen, attachments = seen
    assert seen == ["for bob 0", "for bob 1", "report attached"]
    assert attachments == [["report.bin", "application/octet-stream", 102400], ["data.csv", "text/csv", 20000]]
    fetches = [text for c, _, d, text in tb.conversation() if c.endswith(":localhost") and d == "C" and "BODY.PEEK[]<" in text]
    assert len(fetches) >= 2, fetches  # the 160 KB message came in several partial FETCHes
    bob = ServerView(imap(server, BOB, BOB_PASSWORD))
    try:
        eventually(lambda: "\\Seen" in bob.folder("INBOX")["for bob 1"], "\\Seen for bob")
        assert "\\Seen" not in bob.folder("INBOX")["for bob 0"]
    finally:
        bob.client.logout()
    # Thunderbird's plain connection: STARTTLS answered OK, and no login command went out before it.
    conversation = tb.conversation()
    starttls = [i for i, (_, _, d, text) in enumerate(conversation) if d == "C" and text.lower().endswith(" starttls")]
    assert starttls, "Thunderbird never sent STARTTLS"
    connection = conversation[starttls[0]][0]
    mine = [(d, text) for c, _, d, text in conversation[: starttls[0]] if c == connection]
    greeting = max(i for i, (d, text) in enumerate(mine) if d == "S" and text.startswith("* OK"))  # this connection's start
    assert "LOGINDISABLED" in mine[greeting][1]  # RFC 3501 6.2.3: no LOGIN before TLS on 143
    before = [text.lower() for d, text in mine[greeting:] if d == "C"]
    assert not any("login" in text or "authenticate" in text for text in before), before


def step_no_error_anywhere(server: Any, tb: Thunderbird, view: ServerView) -> None:
    """Every tagged response Thunderbird got was OK, no untagged NO/BAD, and no prompt window opened."""
    exchanges = tb.exchanges()
    assert exchanges, "no IMAP traffic in Thunderbird's log"
    failures = [f"{command!r} -> {response!r}" for command, response in exchanges if not re.match(r"\d+ OK\b", response)]
    assert not failures, "\n".join(failures)
    windows = tb.run("return [...Services.wm.getEnumerator(null)].map(w => w.document.documentElement.getAttribute('windowtype'))")
    assert windows == ["mail:3pane"], windows
    assert tb.run("return window.mailsuiteAlerts") == []
    assert "Traceback" not in server.log() and "SERVERBUG" not in server.log()


def test_thunderbird_session(session):
    """One Thunderbird start, the steps of a user's session in order (each step builds on the last).

    One test rather than one per step: pytest-xdist may hand a module's tests
    to different workers, and each would start its own Thunderbird.
    """
    server, tb, view = session
    step_folders_and_offline_copies(server, tb, view)
    step_read_and_flag_reach_the_server(server, tb, view)
    step_delete_moves_to_trash(server, tb, view)
    step_copy_move_and_create_folder(server, tb, view)
    step_draft_rename_and_empty_trash(server, tb, view)
    step_folder_tree(server, tb, view)
    step_new_mail_is_pushed_while_idle(server, tb, view)
    step_new_mail_shows_up(server, tb, view)
    step_starttls_account(server, tb, view)
    step_no_error_anywhere(server, tb, view)


def test_log_reading_catches_failures(tmp_path):
    """The NO/BAD check above can fail: a BAD or untagged NO in Thunderbird's log is reported with its command."""
    tb = Thunderbird(tmp_path, {})
    prefix = "2026-01-01 00:00:00.000000 UTC - [Parent 1: IMAP]: I/IMAP 7f00aa:127.0.0.1:S-INBOX:"
    (tmp_path / "imap.log.moz_log").write_text(
        f"{prefix}SendData: 5 uid store 1 +Flags (\\Seen)\r\n\n"
        f"{prefix}CreateNewLineFromSocket: 5 BAD Error in IMAP command STORE\n"
        f"{prefix}CreateNewLineFromSocket: * NO [ALERT] disk full\n"
        f"{prefix}SendData: 6 noop\n{prefix}CreateNewLineFromSocket: + idling\n"
    )
    assert tb.exchanges() == [
        ("5 uid store 1 +Flags (\\Seen)", "5 BAD Error in IMAP command STORE"),
        ("(untagged)", "* NO [ALERT] disk full"),
    ]
    assert tb.idling_in("INBOX", "127.0.0.1") == "7f00aa:127.0.0.1"
    assert tb.idling_in("INBOX", "localhost") is None and tb.idling_in("Work", "127.0.0.1") is None
