"""mimeview: the JSON-friendly view of a message, on real and hostile MIME."""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage
from email.parser import BytesParser
from email import policy
from pathlib import Path

import pytest

from mailsuite.testing.mimeview import attachment_data, find_links, view

CORPUS = sorted((Path(__file__).parent.parent / "data" / "cpython-email").glob("msg_*.txt"))


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_views_are_json_and_attachments_readable(path: Path) -> None:
    raw = crlf(path.read_bytes())
    result = view(raw, with_content=True)
    json.dumps(result)
    reference = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert [name for name, _ in result["headers"]] == list(reference.keys())
    for item in result["attachments"]:
        data = attachment_data(raw, item["index"])
        assert data is not None and len(data) == item["size"]
        assert base64.b64decode(item["content_base64"]) == data


def test_binary_attachment_bytes_match_the_email_package() -> None:
    raw = crlf((CORPUS[0].parent / "msg_07.txt").read_bytes())
    result = view(raw)
    gif = [a for a in result["attachments"] if a["filename"] == "dingusfish.gif"]
    assert gif and gif[0]["content_type"] == "image/gif"
    data = attachment_data(raw, gif[0]["index"])
    assert data is not None and data.startswith(b"GIF87a") and data.endswith(b";")


def rich_message() -> bytes:
    message = EmailMessage()
    message["From"] = '"Zoë Sender" <zoe@sender.example>'
    message["To"] = "a@example.test, Bob <b@example.test>"
    message["Subject"] = "Réinitialisez votre mot de passe"
    message["Received"] = "from one"
    message["Received"] = "from two"
    message.set_content("Reset: https://app.example/reset?token=abc&x=1.\nOr (see http://x.example/a_(b)).\n")
    message.add_alternative('<p><a href="https://app.example/reset?token=abc&amp;x=1">reset</a> <img src="cid:logo@x"></p>', subtype="html")
    html = message.get_payload()[1]
    html.add_related(b"\x89PNG fake", maintype="image", subtype="png", cid="<logo@x>")
    message.add_attachment(b"%PDF-1.4 \x00\xff", maintype="application", subtype="pdf", filename="report.pdf")
    return crlf(message.as_bytes())


def test_text_html_attachments_links_and_repeated_headers() -> None:
    raw = rich_message()
    result = view(raw)
    assert result["subject"] == "Réinitialisez votre mot de passe"
    assert result["addresses"]["from"] == [{"name": "Zoë Sender", "address": "zoe@sender.example"}]
    assert [a["address"] for a in result["addresses"]["to"]] == ["a@example.test", "b@example.test"]
    assert [v for n, v in result["headers"] if n == "Received"] == ["from one", "from two"]
    assert result["text"].startswith("Reset: https://app.example/reset")
    assert 'href="https://app.example/reset?token=abc&amp;x=1"' in result["html"]
    assert result["links"] == ["https://app.example/reset?token=abc&x=1", "http://x.example/a_(b)"]
    by_type = {a["content_type"]: a for a in result["attachments"]}
    assert by_type["image/png"]["content_id"] == "logo@x" and by_type["image/png"]["inline"]
    assert by_type["application/pdf"]["filename"] == "report.pdf" and not by_type["application/pdf"]["inline"]
    assert attachment_data(raw, by_type["application/pdf"]["index"]) == b"%PDF-1.4 \x00\xff"
    assert attachment_data(raw, 99) is None


@pytest.mark.parametrize("raw", [
    b"",
    b"\xff\xfe\x00garbage without headers",
    b"Subject: =?bogus-charset?Q?x?=\r\nFrom: <<<@@>\r\nContent-Type: text/plain; charset=nonexistent\r\n\r\n\xe9t\xe9\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64\r\n",
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n",
    b"To: " + b"a" * 5000 + b"\r\nContent-Type: text/html\r\n\r\n<a href='https://x.example/'>x</a><a href=\r\n",
])
def test_malformed_input_never_raises(raw: bytes) -> None:
    result = view(raw, with_content=True)
    json.dumps(result)
    for item in result["attachments"]:
        assert attachment_data(raw, item["index"]) is not None


def test_unknown_charset_falls_back_to_utf8_with_replacements() -> None:
    result = view(b"Content-Type: text/plain; charset=nonexistent\r\n\r\n\xe9t\xe9 ok\r\n")
    assert result["text"] is not None and "ok" in result["text"]


def test_links_from_text_only() -> None:
    assert find_links("visit <https://a.example/x>, then https://b.example/y.", None) == ["https://a.example/x", "https://b.example/y"]
