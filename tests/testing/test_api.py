"""The capture server's HTTP JSON API over real HTTP."""

from __future__ import annotations

import json
import smtplib
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

import pytest

from mailsuite.testing import MailServer


def call(server: MailServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{server.api_url}/{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload, status = response.read(), response.status
            content_type = response.headers.get("content-type")
    except urllib.error.HTTPError as e:
        payload, status, content_type = e.read(), e.code, e.headers.get("content-type")
    return status, json.loads(payload) if content_type == "application/json" else payload


def send(server: MailServer, to: str, subject: str, html: bool = False, attachment: bool = False) -> None:
    message = EmailMessage()
    message["From"] = "api@sender.example"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("plain body\n")
    if html:
        message.add_alternative("<p>html body</p>\n", subtype="html")
    if attachment:
        message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="report.pdf")
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        client.send_message(message)


@pytest.fixture(scope="module")
def server() -> Any:
    with MailServer() as running:
        yield running


@pytest.fixture(autouse=True)
def empty(server: MailServer) -> None:
    server.purge()


def test_health(server: MailServer) -> None:
    status, body = call(server, "GET", "health")
    assert status == 200 and body["status"] == "ok"
    assert body["ports"]["smtp"] == server.smtp_port


def test_list_filter_detail_raw_and_delete(server: MailServer) -> None:
    send(server, "one@example.test", "first", html=True, attachment=True)
    send(server, "two@example.test", "second")
    server.wait_for_messages(2, timeout=10)
    status, body = call(server, "GET", "messages?to=one@example.test")
    assert status == 200 and [m["subject"] for m in body["messages"]] == ["first"]
    message_id = body["messages"][0]["id"]
    status, detail = call(server, "GET", f"messages/{message_id}")
    assert status == 200
    assert detail["text"] == "plain body\n" and detail["html"] == "<p>html body</p>\n"
    [attachment] = detail["attachments"]
    assert (attachment["filename"], attachment["content_type"], attachment["size"]) == ("report.pdf", "application/pdf", 13)
    status, data = call(server, "GET", f"messages/{message_id}/attachments/{attachment['index']}")
    assert status == 200 and data == b"%PDF-1.4 fake"
    assert ["Subject", "first"] in detail["headers"]
    status, raw = call(server, "GET", f"messages/{message_id}/raw")
    assert status == 200 and b"Subject: first\r\n" in raw
    assert call(server, "DELETE", f"messages/{message_id}")[0] == 200
    assert call(server, "GET", f"messages/{message_id}")[0] == 404
    assert call(server, "DELETE", f"messages/{message_id}")[0] == 404
    assert [m["subject"] for m in call(server, "GET", "messages")[1]["messages"]] == ["second"]


def test_purge(server: MailServer) -> None:
    send(server, "p@example.test", "to purge")
    server.wait_for_messages(1, timeout=10)
    status, body = call(server, "DELETE", "messages")
    assert status == 200 and body == {"deleted": 1}
    assert call(server, "GET", "messages")[1]["messages"] == []


def test_add_user_and_faults(server: MailServer) -> None:
    assert call(server, "POST", "users", {"address": "new@example.test", "password": "pw"})[0] == 201
    assert call(server, "POST", "users", {"address": 42})[0] == 400
    status, fault = call(server, "POST", "faults", {"command": "rcpt", "code": 452, "text": "full", "count": 2})
    assert status == 201 and fault["command"] == "RCPT"
    assert call(server, "GET", "faults")[1]["faults"][0]["count"] == 2
    assert call(server, "POST", "faults", {"command": "BOGUS", "code": 450})[0] == 400
    assert call(server, "POST", "faults", {"command": "RCPT", "code": 99})[0] == 400
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@b.example", ["x@example.test"], b"Subject: x\r\n\r\nx\r\n")
    assert call(server, "DELETE", "faults")[1] == {"faults": []}
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        client.sendmail("a@b.example", ["x@example.test"], b"Subject: x\r\n\r\nx\r\n")


def test_long_poll_wait(server: MailServer) -> None:
    """/api/wait answers as soon as the message arrives, and 408 when it does not."""
    threading.Timer(0.3, send, args=(server, "late@example.test", "late")).start()
    started = time.monotonic()
    status, body = call(server, "GET", "wait?count=1&timeout=20&to=late@example.test")
    assert status == 200 and body["messages"][0]["subject"] == "late"
    assert time.monotonic() - started < 15
    status, body = call(server, "GET", "wait?count=5&timeout=0.2")
    assert status == 408 and len(body["messages"]) == 1
    assert call(server, "GET", "wait?count=x")[0] == 400


def test_unknown_routes(server: MailServer) -> None:
    assert call(server, "GET", "nothing")[0] == 404
    assert call(server, "PUT", "messages")[0] == 405
