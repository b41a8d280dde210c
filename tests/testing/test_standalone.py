"""`twistd -n mailsuite --capture`: the capture server run by hand, driven over SMTP and its HTTP API."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import urllib.request
from pathlib import Path

from mailsuite.config import LISTENER_NAMES
from mailsuite.testing.process import render_toml, wait_for_ports


def test_twistd_capture_switch(tmp_path: Path) -> None:
    """--capture turns a normal config into a capture server with the HTTP API on."""
    settings = {"hostname": "dev.example.test", "domains": ["example.test"], "data_root": str(tmp_path / "data"), "capture.http_port": 0}
    for name in LISTENER_NAMES:
        settings[f"{name}.address"] = "127.0.0.1"
        settings[f"{name}.port"] = 0
    config = tmp_path / "dev.toml"
    config.write_text(render_toml(settings))
    server = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "mailsuite", "--config", str(config), "--capture"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        ports = wait_for_ports(server, tmp_path / "data", 30, lambda: server.stdout.read().decode() if server.stdout else "", poll=0.05)
        with smtplib.SMTP("127.0.0.1", ports["smtp"]) as client:
            client.sendmail("dev@app.example", ["anyone@anywhere.example"], b"Subject: captured\r\n\r\nbody\r\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/api/wait?count=1&timeout=10") as response:
            listing = json.load(response)
        assert [(m["mailbox"], m["subject"]) for m in listing["messages"]] == [("anyone@anywhere.example", "captured")]
    finally:
        server.terminate()
        assert server.wait(15) == 0
