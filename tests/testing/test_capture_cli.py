"""`mailsuite capture`: the capture server as one console command, driven as a developer would."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest


def start(*options: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailsuite.cli", "capture", *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_start_send_read_stop() -> None:
    """It prints its ports (JSON here), stores what smtplib sends, serves it over the API, and exits 0 on SIGTERM."""
    server = start("--ephemeral", "--json")
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line, f"no ports printed; stderr: {server.stderr.read() if server.stderr else ''}"
        info = json.loads(line)
        ports, data = info["ports"], Path(info["data"])
        assert set(ports) == {"smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http"}
        assert info["ui"] == f"http://127.0.0.1:{ports['http']}/" and data.is_dir()
        with smtplib.SMTP("127.0.0.1", ports["smtp"]) as client:
            client.sendmail("dev@app.example", ["someone@anywhere.example"], b"Subject: from the app\r\n\r\nhello\r\n")
        with urllib.request.urlopen(f"{info['api']}/wait?count=1&timeout=10", timeout=30) as response:
            listing = json.load(response)
        assert [(m["mailbox"], m["subject"]) for m in listing["messages"]] == [("someone@anywhere.example", "from the app")]
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0
        assert not data.exists(), "the temporary data directory outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_human_output_and_kept_data(tmp_path: Path) -> None:
    """Without --json it prints one line per listener and the UI address; --data keeps the mail."""
    server = start("--ephemeral", "--data", str(tmp_path / "mail"))
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(12)]
        text = "".join(lines)
        assert "smtp" in text and "imap" in text and "web UI       http://127.0.0.1:" in text and "Stop with Ctrl-C" in text
        server.send_signal(signal.SIGINT)
        assert server.wait(20) == 0
        assert (tmp_path / "mail" / "data").is_dir()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start("--ephemeral", "--smtp", str(port))
        try:
            _, err = server.communicate(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
        assert server.returncode == 1
        assert "cannot listen" in err


@pytest.mark.parametrize("option", ["--help"])
def test_help(option: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mailsuite.cli", "capture", option], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--ephemeral" in result.stdout
