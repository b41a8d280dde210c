"""A real authoritative DNS server on loopback, serving records from a dict.

Why: the queue (MX routing) and mail authentication (SPF/DKIM/DMARC TXT
records) must be tested against a real DNS server over real UDP and TCP, not
a fake resolver object.  The server is twisted.names' ``DNSServerFactory``
over a resolver that answers from a JSON file; it runs in its own process so
a synchronous pytest test (and a ``twistd`` server under test) can query it.

Records, keyed by name (case-insensitive, trailing dot optional)::

    {
        "example.test": {
            "MX": [[10, "mx1.example.test"], [20, "mx2.example.test"]],
            "A": ["127.0.0.1"],
            "AAAA": ["::1"],
            "TXT": ["v=spf1 -all", ["two", "strings"]],
            "CNAME": "other.example.test",
        },
        "1.0.0.127.in-addr.arpa": {"PTR": ["localhost.test"]},
        "nullmx.test": {"MX": [[0, "."]]},       # RFC 7505 null MX
        "broken.test": {"SERVFAIL": true},         # answers SERVFAIL
        "silent.test": {"DROP": true},             # never answers (timeouts)
    }

A name that is not in the dict answers NXDOMAIN; a name that is there
without the asked type answers NOERROR with no records (NODATA).

Use from a test::

    with DNSServer({"example.test": {"A": ["127.0.0.1"]}}) as dns:
        dns.port                       # UDP and TCP, 127.0.0.1
        dns.set_records({...})         # takes effect for the next query
        dns.address                    # "127.0.0.1:PORT" (config queue.resolver)

Or by hand: ``python -m tests.support.dnsserver records.json`` prints
``PORT <n>`` once it listens and re-reads the file whenever it changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

Records = dict[str, dict[str, Any]]


class DNSServer:
    """Runs ``python -m tests.support.dnsserver`` and stops it by PID."""

    def __init__(self, records: Records | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self._dir = tempfile.mkdtemp(prefix="mailsuite-dns-")
        self.records_path = Path(self._dir) / "records.json"
        self.set_records(records or {})
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        """``host:port``, the form config key ``queue.resolver`` takes."""
        return f"{self.host}:{self.port}"

    def set_records(self, records: Records) -> None:
        """Replace every record (atomic rename; the server re-reads on change)."""
        tmp = self.records_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records))
        os.replace(tmp, self.records_path)
        # The server compares mtime_ns; make sure two writes in the same tick differ.
        now = time.time_ns()
        os.utime(self.records_path, ns=(now, now))

    def start(self, timeout: float = 10.0) -> "DNSServer":
        """Start the server process and wait for its port."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.dnsserver", str(self.records_path), "--host", self.host],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(ROOT),
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                return self
        self.stop()
        raise RuntimeError("DNS server did not start")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> "DNSServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# The server side (runs in the child process)
# ---------------------------------------------------------------------------


def _normalise(name: str) -> str:
    return name.rstrip(".").lower()


class _FileAuthority:
    """A twisted.names resolver answering from the records file (re-read on change)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = -1
        self._records: Records = {}

    def _load(self) -> Records:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return self._records
        if mtime != self._mtime:
            with open(self.path) as f:
                raw = json.load(f)
            self._records = {_normalise(k): v for k, v in raw.items()}
            self._mtime = mtime
        return self._records

    def query(self, query: Any, timeout: Any = None) -> Any:
        from twisted.internet import defer
        from twisted.names import dns

        name = _normalise(query.name.name.decode("ascii", "replace"))
        entry = self._load().get(name)
        if entry is None:
            return defer.fail(dns.AuthoritativeDomainError(name))
        if entry.get("SERVFAIL"):
            return defer.fail(RuntimeError("configured SERVFAIL"))
        if entry.get("DROP"):
            return defer.Deferred()
        answers = []
        ttl = int(entry.get("TTL", 60))

        def rr(type_: int, payload: Any) -> Any:
            return dns.RRHeader(name=name, type=type_, cls=dns.IN, ttl=ttl, payload=payload, auth=True)

        wanted = query.type
        if "CNAME" in entry and wanted != dns.CNAME:
            answers.append(rr(dns.CNAME, dns.Record_CNAME(entry["CNAME"].rstrip("."), ttl=ttl)))
        else:
            if wanted in (dns.MX, dns.ALL_RECORDS):
                for pref, host in entry.get("MX", []):
                    host = "" if host in (".", "") else host.rstrip(".")
                    answers.append(rr(dns.MX, dns.Record_MX(int(pref), host, ttl=ttl)))
            if wanted in (dns.A, dns.ALL_RECORDS):
                for ip in entry.get("A", []):
                    answers.append(rr(dns.A, dns.Record_A(ip, ttl=ttl)))
            if wanted in (dns.AAAA, dns.ALL_RECORDS):
                for ip in entry.get("AAAA", []):
                    answers.append(rr(dns.AAAA, dns.Record_AAAA(ip, ttl=ttl)))
            if wanted in (dns.TXT, dns.ALL_RECORDS):
                for txt in entry.get("TXT", []):
                    parts = [txt] if isinstance(txt, str) else list(txt)
                    answers.append(rr(dns.TXT, dns.Record_TXT(*[p.encode() for p in parts], ttl=ttl)))
            if wanted in (dns.PTR, dns.ALL_RECORDS):
                for host in entry.get("PTR", []):
                    answers.append(rr(dns.PTR, dns.Record_PTR(host.rstrip("."), ttl=ttl)))
            if wanted == dns.CNAME and "CNAME" in entry:
                answers.append(rr(dns.CNAME, dns.Record_CNAME(entry["CNAME"].rstrip("."), ttl=ttl)))
        return defer.succeed((answers, [], []))


def _serve(path: str, host: str) -> None:
    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError
    from twisted.names import dns, server

    factory = server.DNSServerFactory(authorities=[_FileAuthority(path)])
    factory.noisy = False
    for _ in range(50):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface=host)  # type: ignore[attr-defined]
        port = udp.getHost().port
        try:
            reactor.listenTCP(port, factory, interface=host)  # type: ignore[attr-defined]
        except CannotListenError:
            udp.stopListening()
            continue
        break
    else:
        raise SystemExit("no port free for both UDP and TCP")
    print(f"PORT {port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", help="JSON file of records (re-read when it changes)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    _serve(args.records, args.host)


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    """One loopback DNS server per test module; each test sets the records it needs."""
    server = DNSServer().start()
    yield server
    server.stop()
