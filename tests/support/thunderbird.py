"""Drive a real Thunderbird (headless, fresh profile) against our IMAP server.

A test writes a profile whose ``user.js`` configures its IMAP accounts, starts
``thunderbird --headless --marionette`` on it and runs chrome-context
JavaScript through :mod:`tests.support.marionette` (the password goes into
the login manager that way, so Thunderbird never prompts).  Thunderbird's own
IMAP log (``MOZ_LOG=IMAP:5``) is written to ``imap.log*.moz_log`` in the work
folder (each start overwrites it), so a test can check every response our
server gave it.

Nothing here reaches the network: updates, telemetry, add-on and
account-provisioning look-ups are switched off in the profile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from tests.support.marionette import Marionette

#: Preferences that keep a fresh profile quiet and offline: no update checks,
#: telemetry, first-run pages, default-client question, add-on or provider look-ups.
QUIET_PREFS: dict[str, Any] = {
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.disabledForTesting": True,
    "app.update.staging.enabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.firstRunURL": "",
    "browser.shell.checkDefaultBrowser": False,
    "mail.shell.checkDefaultClient": False,
    "mail.rights.override": True,
    "mail.provider.enabled": False,
    "mail.cloud_files.enabled": False,
    "mailnews.start_page.enabled": False,
    "mailnews.start_page.override_url": "",
    "mail.inappnotifications.enabled": False,
    "mail.inappnotifications.url": "",
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "network.connectivity-service.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "messenger.startup.action": 0,
    "mail.spotlight.firstRunDone": True,
    "mail.winsearch.firstRunDone": True,
    "mailnews.database.global.indexer.enabled": False,
    "calendar.timezone.local": "UTC",
    "calendar.integration.notify": False,
    "mail.biff.play_sound": False,
    "mail.biff.show_alert": False,
    "mail.e2ee.auto_enable": False,
    "marionette.port": 0,  # any free port; Thunderbird writes it to <profile>/MarionetteActivePort
}

#: socketType values of mail.server.*.socketType.
PLAIN, STARTTLS, SSL = 0, 2, 3


@dataclasses.dataclass(frozen=True)
class ImapAccount:
    """One IMAP account as a user would set it up (Account Settings > Server Settings)."""

    host: str
    port: int
    user: str
    socket_type: int
    email: str
    #: Account Settings > Advanced > "Use CONDSTORE" (off by default in Thunderbird).
    condstore: bool = False
    #: Keep every folder's messages for offline use (Account Settings > Synchronization & Storage).
    offline: bool = True


def imap_account_prefs(*accounts: ImapAccount, check_at_startup: bool = True) -> dict[str, Any]:
    """The IMAP accounts (server1...) plus the Local Folders account Thunderbird always wants.

    The first account is the default one.  ``check_at_startup=False`` is for
    a first start that only stores passwords: without a stored password the
    start-up check would open a password prompt.
    """
    local = len(accounts) + 1
    prefs: dict[str, Any] = {
        "mail.accountmanager.accounts": ",".join(f"account{n}" for n in range(1, local + 1)),
        "mail.accountmanager.defaultaccount": "account1",
        "mail.accountmanager.localfoldersserver": f"server{local}",
        f"mail.account.account{local}.server": f"server{local}",
        f"mail.server.server{local}.type": "none",
        f"mail.server.server{local}.hostname": "Local Folders",
        f"mail.server.server{local}.userName": "nobody",
        f"mail.server.server{local}.name": "Local Folders",
        f"mail.server.server{local}.directory-rel": "[ProfD]Mail/Local Folders",
    }
    for n, account in enumerate(accounts, 1):
        server = f"mail.server.server{n}."
        prefs.update({
            f"mail.account.account{n}.identities": f"id{n}",
            f"mail.account.account{n}.server": f"server{n}",
            f"mail.identity.id{n}.fullName": "Test User",
            f"mail.identity.id{n}.useremail": account.email,
            f"mail.identity.id{n}.valid": True,
            server + "type": "imap",
            server + "name": account.user,
            server + "hostname": account.host,
            server + "port": account.port,
            server + "userName": account.user,
            server + "socketType": account.socket_type,
            server + "authMethod": 3,  # normal password (AUTHENTICATE PLAIN / LOGIN)
            server + "directory-rel": f"[ProfD]ImapMail/account{n}",
            # Offline use: every folder's messages are downloaded (File > Offline > Download).
            server + "offline_download": account.offline,
            server + "autosync_offline_stores": account.offline,
            # "Check for new messages at startup" and "every 10 minutes" (Thunderbird's defaults).
            server + "login_at_startup": check_at_startup,
            server + "check_new_mail": check_at_startup,
            # Thunderbird logs its connections in one after the other; 3 instead of 5 saves two logins.
            server + "max_cached_connections": 3,
            server + "use_condstore": account.condstore,
        })
    return prefs


def render_user_js(prefs: dict[str, Any]) -> str:
    """``user_pref(name, value);`` lines (JSON literals are valid JS literals)."""
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())


class Thunderbird:
    """One headless Thunderbird process on a fresh profile under ``workdir``."""

    def __init__(self, workdir: Path, prefs: dict[str, Any]) -> None:
        self.workdir = workdir
        self.profile = workdir / "profile"
        self.imap_log = workdir / "imap.log"
        self.output = workdir / "thunderbird.out"
        self.profile.mkdir(parents=True)
        self.set_prefs(prefs)
        self.process: subprocess.Popen[bytes] | None = None
        self.marionette: Marionette | None = None
        self._output: IO[bytes] | None = None

    def set_prefs(self, prefs: dict[str, Any]) -> None:
        """(Re)write the profile's user.js; Thunderbird reads it at its next start."""
        (self.profile / "user.js").write_text(render_user_js({**QUIET_PREFS, **prefs}))

    @staticmethod
    def executable() -> str | None:
        return shutil.which("thunderbird")

    def start(self, timeout: float = 90.0) -> "Thunderbird":
        """Start Thunderbird and open a chrome-context Marionette session."""
        exe = self.executable()
        if exe is None:
            raise RuntimeError("thunderbird is not installed (Debian package: thunderbird)")
        env = dict(os.environ)
        env.update(
            MOZ_HEADLESS="1",
            MOZ_LOG="IMAP:5,timestamp,sync",
            MOZ_LOG_FILE=str(self.imap_log),
            MOZ_CRASHREPORTER_DISABLE="1",
            MOZ_DISABLE_AUTO_SAFE_MODE="1",
            HOME=str(self.workdir),  # no ~/.thunderbird profile list touched
            TMPDIR=str(self.workdir),
        )
        env.pop("DISPLAY", None)
        (self.profile / "MarionetteActivePort").unlink(missing_ok=True)  # a restart must not read the old port
        self._output = open(self.output, "ab")
        self.process = subprocess.Popen(
            [exe, "--headless", "--marionette", "-remote-allow-system-access", "--no-remote", "-profile", str(self.profile)],
            stdout=self._output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        try:
            self.marionette = Marionette.connect(
                "127.0.0.1", self.profile / "MarionetteActivePort", deadline, alive=lambda: self.process.poll() is None
            )
            self.marionette.start_session()
        except Exception:
            self.stop()
            raise
        return self

    def run(self, script: str, *args: Any, timeout: float = 60.0) -> Any:
        """Run chrome JavaScript (a function body, may ``await``) and return its JSON result."""
        assert self.marionette is not None
        body = "return (async () => {\n" + JS_PRELUDE + "\n" + script + "\n})();"
        return self.marionette.execute(body, list(args), timeout=timeout)

    def stop(self) -> None:
        """Quit through Marionette, then make sure the whole process group is gone."""
        if self.marionette is not None:
            self.marionette.quit()
            self.marionette.close()
            self.marionette = None
        if self.process is None:
            return
        try:
            self.process.wait(30)  # a clean exit writes logins.json and cert_override.txt
        except subprocess.TimeoutExpired:
            pass
        # Thunderbird's content/GPU helpers share its process group (start_new_session).
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
        if self._output is not None:
            self._output.close()
            self._output = None

    def log_lines(self) -> list[str]:
        """Thunderbird's IMAP log lines (MOZ_LOG writes one file per process: ``imap.log*.moz_log``)."""
        lines: list[str] = []
        for path in sorted(self.workdir.glob("imap.log*")):
            lines.extend(path.read_text(errors="replace").splitlines())
        return lines

    def exchanges(self) -> list[tuple[str, str]]:
        """(command, status line) for every tagged response and every untagged NO/BAD Thunderbird read.

        The log names each connection by an address, so a tag is matched to
        the command sent with it on the same connection.
        """
        sent: dict[tuple[str, str], str] = {}
        out: list[tuple[str, str]] = []
        for connection, _state, direction, text in self.conversation():
            if direction == "C":
                tag = text.split(" ", 1)[0]
                sent[(connection, tag)] = text
            elif tagged := TAGGED.match(text):
                out.append((sent.get((connection, tagged.group(1)), "?"), text))
            elif UNTAGGED_FAILURE.match(text):
                out.append(("(untagged)", text))
        return out

    def conversation(self) -> list[tuple[str, str, str, str]]:
        """(connection, state, "C"|"S", text) for every line sent or read, in log order.

        A connection is ``<address of Thunderbird's protocol object>:<server host name>``.
        """
        out = []
        for line in self.log_lines():
            if match := LOG_IO.search(line):
                connection, state, direction, text = match.groups()
                out.append((connection, state, "C" if direction == "SendData" else "S", text.rstrip("\r\n")))
        return out

    def idling_in(self, folder: str, host: str) -> str | None:
        """The connection to ``host`` waiting in IDLE with ``folder`` selected (last line ``+ ...``), if any."""
        last: dict[str, tuple[str, str, str]] = {}
        for connection, state, direction, text in self.conversation():
            last[connection] = (state, direction, text)
        for connection, (state, direction, text) in last.items():
            if connection.endswith(f":{host}") and state == f"S-{folder}" and direction == "S" and text.startswith("+ "):
                return connection
        return None


#: A line Thunderbird sent or read, as its IMAP log shows it: ``I/IMAP <connection>:<host>:<state>:SendData: ...``.
LOG_IO = re.compile(r"I/IMAP ([0-9a-f]+:[^:]*):([^:]*):(SendData|CreateNewLineFromSocket): (.*)$")
TAGGED = re.compile(r"(\d+) (?:OK|NO|BAD)\b")
UNTAGGED_FAILURE = re.compile(r"\* (?:NO|BAD)\b")


#: JavaScript helpers available to every :meth:`Thunderbird.run` script.
JS_PRELUDE = r"""
const urlDone = () => {
  let listener;
  const done = new Promise((resolve, reject) => {
    listener = {
      QueryInterface: ChromeUtils.generateQI(["nsIUrlListener"]),
      OnStartRunningUrl() {},
      OnStopRunningUrl(url, status) { status == 0 ? resolve(status) : reject(new Error(`${url && url.spec}: 0x${(status >>> 0).toString(16)}`)); },
    };
  });
  return [listener, done];
};
const copyDone = () => {
  let listener;
  const done = new Promise((resolve, reject) => {
    listener = {
      QueryInterface: ChromeUtils.generateQI(["nsIMsgCopyServiceListener"]),
      onStartCopy() {}, onProgress() {}, setMessageKey() {}, getMessageId() { return ""; },
      onStopCopy(status) { status == 0 ? resolve(status) : reject(new Error(`copy failed 0x${(status >>> 0).toString(16)}`)); },
    };
  });
  return [listener, done];
};
const sleep = ms => new Promise(r => setTimeout(r, ms));
const waitFor = async (test, what, ms = 20000) => {
  const end = Date.now() + ms;
  for (;;) {
    const value = await test();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
};
const msgWindow = window.msgWindow || null;
const serverOf = user => MailServices.accounts.accounts.map(a => a.incomingServer).find(s => s.username == user);
// The default account's server and root folder; folderByName(name, user) reaches another account's.
const server = MailServices.accounts.defaultAccount.incomingServer;
const root = server.rootFolder;
const folderByName = (name, user) => (user ? serverOf(user).rootFolder : root).getChildNamed(name);
"""
