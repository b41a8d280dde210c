"""The capture server's Mailpit-compatible API, driven by Mailpit's own client (npm ``mailpit-api``) and by urllib."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import smtplib
import subprocess
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailsuite.testing import MailServer

NODE_DIR = Path(__file__).parent / "node"


def send(server: MailServer, sender: str, to: list[str], subject: str, *, bcc: list[str] = (), html: str | None = None,
         attachment: tuple[str, bytes] | None = None, text: str = "plain body\n") -> None:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Message-ID"] = f"<{hashlib.sha1(subject.encode()).hexdigest()[:12]}@client.example>"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    if attachment is not None:
        message.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        client.send_message(message, to_addrs=[*to, *bcc])


def get(server: MailServer, path: str, method: str = "GET", body: Any = None) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{server.host}:{server.http_port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def server() -> Any:
    with MailServer() as running:
        yield running


@pytest.fixture(autouse=True)
def empty(server: MailServer) -> None:
    server.purge()


def node_client() -> Path:
    """A directory with mailpit_client.mjs and its pinned node_modules (npm ci once per lock file, cached)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed (Debian: apt-get install nodejs npm; .ci/run installs them)")
    lock = (NODE_DIR / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mailsuite-tests" / f"node-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (cache / "node_modules" / "mailpit-api" / "package.json").exists():
        staging = cache.with_name(cache.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NODE_DIR / name, staging / name)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=staging, check=True, timeout=300)
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)
    shutil.copy(NODE_DIR / "mailpit_client.mjs", cache / "mailpit_client.mjs")
    return cache


def test_mailpit_api_client_from_node(server: MailServer) -> None:
    """Mailpit's TypeScript client lists, reads, searches and deletes the captured mail."""
    client = node_client()
    send(server, "Alice Example <alice@sender.example>", ["bob@example.test"], "Welcome Bob", bcc=["carol@example.test"],
         html='<p>Hello <a href="https://app.example/confirm">confirm</a></p>', attachment=("notes.txt", b"attached bytes"),
         text="Hello Bob, meeting notes attached.\n")
    send(server, "dave@sender.example", ["erin@example.test"], "Invoice 42")
    send(server, "alice@sender.example", ["frank@example.test"], "Reminder")
    server.wait_for_messages(4)  # bob and carol hold one copy each of the first message

    run = subprocess.run(["node", str(client / "mailpit_client.mjs"), f"http://{server.host}:{server.http_port}"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)

    # GET /api/v1/messages: one message per SMTP transaction, newest first, Mailpit's shape.
    assert out["list"]["total"] == 3 and out["list"]["messages_count"] == 3 and out["list"]["count"] == 3
    assert out["list"]["start"] == 0 and out["list"]["unread"] == 3 and out["list"]["tags"] == []
    assert out["list"]["subjects"] == ["Reminder", "Invoice 42", "Welcome Bob"]
    first = out["list"]["first"]
    assert set(first) >= {"ID", "MessageID", "From", "To", "Cc", "Bcc", "Subject", "Created", "Size", "Attachments", "Snippet", "Read", "Tags"}
    assert first["From"] == {"Name": "", "Address": "alice@sender.example"} and first["To"] == [{"Name": "", "Address": "frank@example.test"}]
    assert first["Cc"] == [] and first["Bcc"] == [] and first["Read"] is False and first["Snippet"] == "plain body"
    assert first["Created"].endswith("Z") and first["Size"] > 0 and first["Attachments"] == 0
    assert out["page"] == {"start": 1, "count": 1, "total": 3, "subjects": ["Invoice 42"]}

    # GET /api/v1/message/ID (through waitForMessage with a search)
    welcome = out["welcome"]
    assert welcome["Subject"] == "Welcome Bob" and welcome["MessageID"].endswith("@client.example")
    assert welcome["From"] == {"Name": "Alice Example", "Address": "alice@sender.example"}
    assert welcome["To"] == [{"Name": "", "Address": "bob@example.test"}] and welcome["Cc"] == []
    assert welcome["Bcc"] == [{"Name": "", "Address": "carol@example.test"}]  # the envelope recipient not in To/Cc
    assert welcome["ReturnPath"] == "alice@sender.example"
    assert welcome["Text"] == "Hello Bob, meeting notes attached.\n" and 'href="https://app.example/confirm"' in welcome["HTML"]
    [attachment] = welcome["Attachments"]
    assert attachment["FileName"] == "notes.txt" and attachment["ContentType"] == "application/octet-stream"
    assert attachment["Size"] == len(b"attached bytes") and attachment["Checksums"]["SHA256"] == hashlib.sha256(b"attached bytes").hexdigest()
    assert welcome["Inline"] == []
    assert out["readAfterView"] == [welcome["ID"]]  # viewing marks it read, as in Mailpit
    assert out["headers"]["Subject"] == ["Welcome Bob"]
    assert out["attachment"] == "attached bytes"
    assert "Subject: Welcome Bob" in out["raw"] and "Delivered-To" not in out["raw"]
    assert out["text"] == welcome["Text"]
    assert out["latest"] == "Reminder"

    # GET /api/v1/search
    search = {q: r["subjects"] for q, r in out["search"].items()}
    assert search["from:alice"] == ["Reminder", "Welcome Bob"]
    assert search["to:erin@example.test"] == ["Invoice 42"]
    assert search["invoice"] == ["Invoice 42"]
    assert search["-from:alice"] == ["Invoice 42"]
    assert search['subject:"welcome bob"'] == ["Welcome Bob"]
    assert search['"meeting notes"'] == ["Welcome Bob"]  # a phrase from the body
    assert search["from:alice subject:reminder"] == ["Reminder"]
    assert search["has:attachment"] == ["Welcome Bob"]
    assert search["to:carol"] == []  # to: is the To header; carol was a Bcc
    assert all(r["total"] == 3 for r in out["search"].values())

    # DELETE /api/v1/messages with IDs, DELETE /api/v1/search, DELETE /api/v1/messages
    assert out["afterDelete"] == ["Reminder", "Welcome Bob"]
    assert out["waited"] == 2
    assert out["afterSearchDelete"] == ["Welcome Bob"]
    assert out["afterPurge"] == 0
    assert "404" in out["goneMessage"]
    assert server.messages() == []  # every copy left the store (bob's and carol's)


def test_delete_by_id_removes_every_copy(server: MailServer) -> None:
    send(server, "a@sender.example", ["one@example.test", "two@example.test"], "Shared")
    send(server, "a@sender.example", ["one@example.test"], "Kept")
    server.wait_for_messages(3)
    status, _, body = get(server, "/api/v1/search?query=subject:shared")
    [shared] = json.loads(body)["messages"]
    assert status == 200 and len(shared["To"]) == 2
    status, headers, body = get(server, "/api/v1/messages", "DELETE", {"IDs": [shared["ID"]]})
    assert (status, body) == (200, b"ok")
    assert [m.subject for m in server.messages()] == ["Kept"]
    status, _, body = get(server, f"/api/v1/message/{shared['ID']}")
    assert status == 404


def test_bytes_are_never_served_as_a_page_of_this_origin(server: MailServer) -> None:
    """Raw source and attachments carry nosniff and a sandbox CSP; attachments download."""
    send(server, "a@sender.example", ["x@example.test"], "Evil", attachment=("evil.html", b"<script>alert(1)</script>"))
    server.wait_for_messages(1)
    [entry] = json.loads(get(server, "/api/v1/messages")[2])["messages"]
    detail = json.loads(get(server, f"/api/v1/message/{entry['ID']}")[2])
    part = detail["Attachments"][0]["PartID"]
    status, headers, body = get(server, f"/api/v1/message/{entry['ID']}/part/{part}")
    assert status == 200 and body == b"<script>alert(1)</script>"
    assert headers["Content-Disposition"] == "attachment; filename*=UTF-8''evil.html"
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Content-Security-Policy"].startswith("sandbox")
    status, headers, body = get(server, f"/api/v1/message/{entry['ID']}/raw")
    assert status == 200 and headers["Content-Type"].startswith("text/plain") and b"Subject: Evil" in body
    assert headers["Content-Security-Policy"].startswith("sandbox")


def test_html_view_csp_blocks_scripts_and_remote_content(server: MailServer) -> None:
    send(server, "a@sender.example", ["x@example.test"], "Html", html='<p><img src="https://tracker.example/p.gif"></p>')
    server.wait_for_messages(1)
    [entry] = json.loads(get(server, "/api/v1/messages")[2])["messages"]
    status, headers, body = get(server, f"/view/{entry['ID']}.html")
    csp = headers["Content-Security-Policy"]
    assert status == 200 and b"tracker.example" in body
    assert "script-src 'none'" in csp and "img-src data:;" in csp and "http" not in csp
    csp_remote = get(server, f"/view/{entry['ID']}.html?remote=1")[1]["Content-Security-Policy"]
    assert "img-src data: http: https:" in csp_remote and "script-src 'none'" in csp_remote


def test_paging_and_errors(server: MailServer) -> None:
    for n in range(5):
        send(server, "a@sender.example", ["x@example.test"], f"Number {n}")
    server.wait_for_messages(5)
    listing = json.loads(get(server, "/api/v1/messages?start=3&limit=10")[2])
    assert (listing["total"], listing["count"], listing["start"]) == (5, 2, 3)
    assert [m["Subject"] for m in listing["messages"]] == ["Number 1", "Number 0"]
    assert get(server, "/api/v1/messages?start=x")[0] == 400
    assert get(server, "/api/v1/search")[0] == 400
    assert get(server, "/api/v1/message/nope")[0] == 404
    assert get(server, "/api/v1/tags")[0] == 404
    # The JSON API keeps its routes beside the Mailpit ones.
    assert get(server, "/api/health")[0] == 200
