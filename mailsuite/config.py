"""The one configuration file, read once into frozen dataclasses.

Every key has a default here and a line in README.md's configuration
reference.  The loader is strict: an unknown key, a wrong type or a value out
of range stops start-up with a :class:`mailsuite.errors.ConfigError` naming
the file, the dotted key path and the reason.  Adding a key means adding a
field (with a default and, where it matters, a ``check``) to one dataclass.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mailsuite.errors import ConfigError

#: Listener names, in the order they are documented and started.
LISTENER_NAMES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")
#: Listeners whose sockets speak TLS from the first byte.
IMPLICIT_TLS = frozenset({"submissions", "pop3s", "imaps"})


def _check(predicate: Callable[[Any], bool], reason: str) -> dict[str, Any]:
    """Field metadata: a validity check run after the type check."""
    return {"check": (predicate, reason)}


_port = _check(lambda v: 0 <= v <= 65535, "must be a port number from 0 to 65535 (0 picks a free port)")
_positive = _check(lambda v: v > 0, "must be greater than 0")
_non_negative = _check(lambda v: v >= 0, "must be 0 or greater")


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_address = _check(_valid_ip, "must be an IPv4 or IPv6 address such as 127.0.0.1 or ::")


@dataclass(frozen=True)
class ListenerConfig:
    """One listening socket."""

    enabled: bool = True
    address: str = field(default="0.0.0.0", metadata=_address)
    port: int = field(default=0, metadata=_port)
    #: Offer AUTH on this listener (only meaningful for "smtp"; submission always offers it).
    auth: bool = False


def _listener(port: int, *, auth: bool = False) -> Any:
    return field(default_factory=lambda: ListenerConfig(port=port, auth=auth))


@dataclass(frozen=True)
class TLSConfig:
    """Certificate and policy shared by every listener."""

    #: PEM certificate chain; empty: a self-signed one is made under data_root/tls on first start.
    certificate: str = ""
    #: PEM private key; empty together with certificate.
    key: str = ""
    #: Allow AUTH / LOGIN / USER over connections without TLS (testing only; logged as a warning).
    allow_plaintext_auth: bool = False


@dataclass(frozen=True)
class LimitsConfig:
    """Sizes, counts and timeouts protecting the server from clients."""

    message_size: int = field(default=50 * 1024 * 1024, metadata=_positive)
    recipients: int = field(default=100, metadata=_positive)
    connections_total: int = field(default=1000, metadata=_positive)
    connections_per_ip: int = field(default=50, metadata=_positive)
    #: Longest SMTP command line in bytes (RFC 5321 4.5.3.1.4 says at least 512).
    smtp_line_length: int = field(default=2048, metadata=_check(lambda v: v >= 512, "must be at least 512"))
    #: Longest IMAP command line (without literals) in bytes.
    imap_line_length: int = field(default=65536, metadata=_check(lambda v: v >= 1000, "must be at least 1000"))
    #: Largest IMAP literal accepted (APPEND), bytes; defaults to message_size when 0.
    imap_literal_size: int = field(default=0, metadata=_non_negative)
    #: Protocol errors tolerated in one SMTP session before it is closed.
    smtp_max_errors: int = field(default=10, metadata=_positive)
    #: IMAP connections per user.
    imap_connections_per_user: int = field(default=20, metadata=_positive)
    #: Seconds of silence tolerated, per protocol (RFC 5321 4.5.3.2 / RFC 1939 / RFC 3501).
    smtp_timeout: float = field(default=300.0, metadata=_positive)
    smtp_data_timeout: float = field(default=600.0, metadata=_positive)
    pop3_timeout: float = field(default=600.0, metadata=_check(lambda v: v > 0, "must be greater than 0"))
    imap_timeout: float = field(default=1800.0, metadata=_positive)
    #: Seconds from connect to a successful IMAP login; then ``* BYE`` (slots held by anonymous peers).
    imap_login_timeout: float = field(default=60.0, metadata=_positive)
    #: Seconds from connect to a successful POP3 login; then -ERR and close.
    pop3_login_timeout: float = field(default=60.0, metadata=_positive)
    #: Seconds from connect to a successful AUTH on the submission listeners (587/465),
    #: where nothing else can be done without it; then 421 4.7.0 and close.
    submission_login_timeout: float = field(default=60.0, metadata=_positive)


@dataclass(frozen=True)
class AuthConfig:
    """Login throttling, shared by SMTP AUTH, POP3 and IMAP."""

    #: Failures from one IP (or for one account) before delays start.
    free_failures: int = field(default=3, metadata=_non_negative)
    #: Failures after which logins are refused outright for block_seconds.
    max_failures: int = field(default=10, metadata=_positive)
    #: Longest delay added before answering a failed attempt, seconds.
    max_delay: float = field(default=8.0, metadata=_non_negative)
    #: How long a refused IP/account stays refused, seconds.
    block_seconds: float = field(default=900.0, metadata=_positive)


@dataclass(frozen=True)
class QuotaConfig:
    """Default per-user quota; 0 means unlimited.  Users may override it."""

    bytes: int = field(default=0, metadata=_non_negative)
    messages: int = field(default=0, metadata=_non_negative)


@dataclass(frozen=True)
class SmarthostConfig:
    """Send all outbound mail through one host instead of MX routing."""

    enabled: bool = False
    host: str = ""
    port: int = field(default=587, metadata=_port)
    #: "starttls", "implicit" (TLS from the first byte) or "none".
    tls: str = field(default="starttls", metadata=_check(lambda v: v in ("starttls", "implicit", "none"), 'must be "starttls", "implicit" or "none"'))
    username: str = ""
    password: str = ""
    #: Check the smarthost's certificate against the system trust store and its name.
    verify_certificate: bool = True


@dataclass(frozen=True)
class QueueConfig:
    """The outbound relay queue."""

    #: Destination port for MX delivery (25; other values for test set-ups).
    outbound_port: int = field(default=25, metadata=_port)
    #: DNS server "host" or "host:port"; empty: the system's resolv.conf.
    resolver: str = ""
    #: Seconds between attempts; the last one repeats until max_age.
    retry_schedule: list[float] = field(default_factory=lambda: [60.0, 300.0, 900.0, 1800.0, 3600.0])
    #: Seconds after arrival when a still-undelivered message bounces.
    max_age: float = field(default=5 * 86400.0, metadata=_positive)
    #: Seconds after arrival for a delay warning to the sender; 0 disables it.
    delay_warning: float = field(default=4 * 3600.0, metadata=_non_negative)
    #: Refuse to deliver without TLS and a verified certificate.
    require_tls: bool = False
    connect_timeout: float = field(default=30.0, metadata=_positive)
    command_timeout: float = field(default=300.0, metadata=_positive)
    max_connections: int = field(default=50, metadata=_positive)
    max_connections_per_domain: int = field(default=5, metadata=_positive)
    smarthost: SmarthostConfig = field(default_factory=SmarthostConfig)


_dmarc_action = _check(lambda v: v in ("reject", "quarantine"), 'must be "reject" or "quarantine"')
_domain_selector = _check(lambda v: v.count(":") == 1 and all(v.split(":")), 'must be "domain:selector", such as "example.org:mail2026"')


@dataclass(frozen=True)
class MailAuthConfig:
    """DKIM signing of submitted mail and SPF/DKIM/DMARC checks of inbound mail (mailsuite.mailauth)."""

    #: DKIM-sign mail from authenticated users; a domain without a key (`mailsuite dkim keygen`) is sent unsigned.
    sign: bool = True
    #: Private keys, <key_dir>/<domain>/<selector>.key; empty: <data_root>/dkim.
    key_dir: str = ""
    #: Keys to sign with, "domain:selector"; empty: every key under key_dir for the sender's domain.
    selectors: list[str] = field(default_factory=list, metadata=_domain_selector)
    #: Check SPF, DKIM and DMARC on mail arriving on port 25 and add an Authentication-Results header.
    verify_inbound: bool = True
    #: Reject (550 5.7.1) mail whose MAIL FROM gets SPF "fail"; off by default: DMARC decides (RFC 7489 10.1).
    spf_reject_fail: bool = False
    #: Apply the From domain's DMARC policy on failure: p=reject -> dmarc_reject_action, p=quarantine -> Junk.
    dmarc_enforce: bool = True
    #: What an enforced p=reject failure gets: "reject" (550 5.7.1) or "quarantine" (softer, for mailing lists).
    dmarc_reject_action: str = field(default="reject", metadata=_dmarc_action)
    #: Answer 451 4.4.3 when a DNS lookup the verdict depends on times out or fails (never a pass or a reject).
    tempfail_on_dns_error: bool = True
    #: Seconds to wait for one DNS answer (server from queue.resolver).
    dns_timeout: float = field(default=5.0, metadata=_positive)
    #: Folder that quarantined mail is delivered to.
    quarantine_folder: str = "Junk"
    #: Seal inbound mail forwarded to other domains with ARC (RFC 8617) using this domain's RSA key; empty: no sealing.
    arc_domain: str = ""


def _valid_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


_action = _check(lambda v: v in ("score", "reject"), 'must be "score" or "reject"')


@dataclass(frozen=True)
class DNSListConfig:
    """One DNS block or allow list (an item of ``antispam.dnsbl.zones``)."""

    #: The list's zone, queried as <reversed client IP>.<zone> (RFC 5782 2).
    zone: str = field(default="", metadata=_check(lambda v: bool(v) and "." in v and not any(c.isspace() for c in v), "must be a DNS zone such as zen.spamhaus.org"))
    #: "score" (add weight), "reject" (refuse a listed client) or "allow" (trust a listed client: no other port-25 check, no greylisting).
    action: str = field(default="score", metadata=_check(lambda v: v in ("score", "reject", "allow"), 'must be "score", "reject" or "allow"'))
    #: Added to the client's score when listed (action "score").
    weight: float = 1.0
    #: 127.0.0.x answers that count as listed; empty: any 127.0.0.0/24 answer.
    codes: list[str] = field(default_factory=list, metadata=_check(lambda v: _valid_ip(v) and v.startswith("127."), "must be an address in 127.0.0.0/8 such as 127.0.0.2"))


@dataclass(frozen=True)
class DNSBLConfig:
    """DNS block and allow lists asked about each port-25 client (mailsuite.antispam.dnsbl)."""

    enabled: bool = True
    zones: list[DNSListConfig] = field(default_factory=list)


@dataclass(frozen=True)
class PregreetConfig:
    """Pregreet detection: the greeting on port 25 waits ``delay`` seconds; a client that talks first is caught."""

    enabled: bool = True
    delay: float = field(default=1.0, metadata=_positive)
    action: str = field(default="reject", metadata=_action)
    weight: float = 5.0
    #: Seconds a client that waited is remembered and greeted at once.
    pass_ttl: float = field(default=86400.0, metadata=_non_negative)


@dataclass(frozen=True)
class ScoreCheckConfig:
    """A check that adds ``weight`` to the client's score ("score") or refuses it ("reject")."""

    enabled: bool = True
    action: str = field(default="score", metadata=_action)
    weight: float = 1.0


@dataclass(frozen=True)
class GreylistConfig:
    """RFC 6647 greylisting of (client network, sender, recipient) triplets on port 25."""

    enabled: bool = False
    #: Seconds a new triplet is refused (451 4.7.1) before a retry is accepted.
    delay: float = field(default=300.0, metadata=_non_negative)
    #: Seconds a refused triplet waits for its retry before it starts over.
    retry_window: float = field(default=86400.0, metadata=_positive)
    #: Seconds an accepted triplet (or auto-allowed client) is remembered after its last use.
    expire: float = field(default=35 * 86400.0, metadata=_positive)
    #: Triplets a client network must pass before all its mail is accepted at once; 0: never.
    auto_allow: int = field(default=5, metadata=_non_negative)
    ipv4_prefix: int = field(default=24, metadata=_check(lambda v: 8 <= v <= 32, "must be from 8 to 32"))
    ipv6_prefix: int = field(default=64, metadata=_check(lambda v: 16 <= v <= 128, "must be from 16 to 128"))


@dataclass(frozen=True)
class RateLimitConfig:
    """Rate limits: per client IP (per minute) and per authenticated user (per hour); 0: no limit."""

    ip_connections_per_minute: int = field(default=60, metadata=_non_negative)
    ip_messages_per_minute: int = field(default=60, metadata=_non_negative)
    ip_recipients_per_minute: int = field(default=300, metadata=_non_negative)
    user_messages_per_hour: int = field(default=500, metadata=_non_negative)
    user_recipients_per_hour: int = field(default=2000, metadata=_non_negative)


@dataclass(frozen=True)
class MilterConfig:
    """One milter (an item of ``antispam.milters``), asked in the order listed."""

    #: "inet:host:port", "host:port", "inet6:[::1]:port" or "unix:/path/to/socket".
    address: str = field(default="", metadata=_check(lambda v: v.startswith("unix:/") or (":" in v and v.rpartition(":")[2].isdigit()), 'must be "inet:host:port" or "unix:/path"'))
    #: Seconds to wait for the connection and for each answer.
    timeout: float = field(default=10.0, metadata=_positive)
    #: When the milter is down or too slow: "tempfail" (451 4.7.1) or "accept" (go on without it).
    default_action: str = field(default="tempfail", metadata=_check(lambda v: v in ("tempfail", "accept"), 'must be "tempfail" or "accept"'))
    #: Also for authenticated sessions (submission); port-25 mail from other hosts always.
    submission: bool = False


@dataclass(frozen=True)
class AntispamConfig:
    """Spam defence at the door (mailsuite.antispam): port-25 checks, greylisting, rate limits."""

    #: Turn the whole section on; off, no check runs and no greeting waits.
    enabled: bool = False
    #: A port-25 client whose checks add up to this score is refused at RCPT (554 5.7.1).
    reject_score: float = field(default=5.0, metadata=_positive)
    #: Client networks (CIDR) exempt from port-25 checks and greylisting (rate limits still apply).
    allow_networks: list[str] = field(default_factory=list, metadata=_check(_valid_network, "must be a network such as 192.0.2.0/24 or 2001:db8::/32"))
    #: Sender domains (and FCrDNS-verified client host names under them) exempt from greylisting.
    allow_domains: list[str] = field(default_factory=list)
    #: Seconds to wait for the DNS answers of the port-25 checks (DNSBL, FCrDNS); unanswered checks count as not listed.
    dns_timeout: float = field(default=3.0, metadata=_positive)
    dnsbl: DNSBLConfig = field(default_factory=DNSBLConfig)
    pregreet: PregreetConfig = field(default_factory=PregreetConfig)
    fcrdns: ScoreCheckConfig = field(default_factory=ScoreCheckConfig)
    helo: ScoreCheckConfig = field(default_factory=ScoreCheckConfig)
    greylist: GreylistConfig = field(default_factory=GreylistConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    #: Content filters speaking the milter protocol (rspamd's proxy worker, opendkim, clamav-milter...).
    milters: list[MilterConfig] = field(default_factory=list)
    #: Folder local copies go to when a milter quarantines a message or junk_score is reached.
    junk_folder: str = "Junk"
    #: Deliver to junk_folder instead of the inbox when the port-25 checks' score plus the highest
    #: spam score a milter reports (X-Spam-Score, X-Spam-Status score=, X-Spamd-Result [n / m])
    #: reaches this, or a milter adds X-Spam: Yes; 0: off.
    junk_score: float = field(default=0.0, metadata=_non_negative)


@dataclass(frozen=True)
class SRSConfig:
    """Sender Rewriting Scheme for mail that aliases forward to other domains (mailsuite.srs)."""

    enabled: bool = False
    #: The HMAC key; required when enabled (keep it private and stable: bounces to old addresses need it).
    secret: str = ""
    #: The domain of rewritten senders; empty: the first of ``domains``, else ``hostname``.
    domain: str = ""
    #: Days a rewritten sender stays valid for bounces.
    max_age_days: int = field(default=21, metadata=_check(lambda v: 1 <= v <= 1000, "must be from 1 to 1000"))


@dataclass(frozen=True)
class CaptureConfig:
    """Capture mode, for tests and manual use: accept everything, relay nothing."""

    #: Accept every recipient into a mailbox of its own and let any address log in with any password.
    enabled: bool = False
    #: Serve the HTTP JSON API (mailsuite.testing.api) for looking at captured mail.
    http_enabled: bool = False
    http_address: str = field(default="127.0.0.1", metadata=_address)
    http_port: int = field(default=8025, metadata=_port)


#: Values of ``log.level``, lowest first (twisted.logger's LogLevel names).
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


@dataclass(frozen=True)
class LogConfig:
    """What the server's log keeps."""

    #: Lowest level written; "debug" adds a line for every IMAP command, which a client can make as many of as it likes.
    level: str = field(default="info", metadata=_check(lambda v: v in LOG_LEVELS, 'must be one of "debug", "info", "warn", "error", "critical"'))


@dataclass(frozen=True)
class Config:
    """The whole configuration; built once by :func:`load` and passed down."""

    #: The name this host greets with and writes in Received headers.
    hostname: str = "localhost"
    #: Domains whose mail is stored here (the directory may add more).
    domains: list[str] = field(default_factory=list)
    #: Where mail, queue, user database and generated certificates live.
    data_root: str = "./var"
    tls: TLSConfig = field(default_factory=TLSConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    mailauth: MailAuthConfig = field(default_factory=MailAuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    antispam: AntispamConfig = field(default_factory=AntispamConfig)
    srs: SRSConfig = field(default_factory=SRSConfig)
    smtp: ListenerConfig = _listener(25)
    submission: ListenerConfig = _listener(587, auth=True)
    submissions: ListenerConfig = _listener(465, auth=True)
    pop3: ListenerConfig = _listener(110)
    pop3s: ListenerConfig = _listener(995)
    imap: ListenerConfig = _listener(143)
    imaps: ListenerConfig = _listener(993)
    #: Path of the file this came from (set by load(); relative paths resolve against its folder).
    source: str = field(default="<defaults>", metadata={"internal": True})

    def listener(self, name: str) -> ListenerConfig:
        """The listener section called ``name`` (one of LISTENER_NAMES)."""
        return typing.cast(ListenerConfig, getattr(self, name))

    def path(self, value: str) -> Path:
        """Resolve a path from the file: relative paths are taken from the working directory."""
        return Path(value).resolve()

    @property
    def data_path(self) -> Path:
        """The data root as an absolute path."""
        return self.path(self.data_root)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s".replace("an ", "").replace("a list of a ", "a list of ")
    if dataclasses.is_dataclass(tp):
        return "a table"
    return _TYPE_NAMES.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str, file: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"must be a table ([{key}]), not {type(value).__name__}")
        return _build(tp, value, key, file, tp())
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(file, key, f"must be {_type_name(tp)}")
        return [_convert(item, item_type, f"{key}[{i}]", file) for i, item in enumerate(value)]
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a programming error in this module
        raise TypeError(f"unsupported config type {tp!r}")
    if not ok:
        raise ConfigError(file, key, f"must be {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: Any, table: dict[str, Any], prefix: str, file: str, defaults: Any) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for name in table:
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, _join(prefix, name), f"unknown key (known keys here: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in table:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            raw = table[name]
            if not isinstance(raw, dict):
                raise ConfigError(file, key, f"must be a table ([{key}]), not {type(raw).__name__}")
            value = _build(tp, raw, key, file, getattr(defaults, name))
        else:
            value = _convert(table[name], tp, key, file)
        check = f.metadata.get("check")
        if check is not None:
            predicate, reason = check
            items = value if isinstance(value, list) else [value]
            if not all(predicate(item) for item in items):
                raise ConfigError(file, key, f"{reason}, got {table[name]!r}")
        values[name] = value
    return dataclasses.replace(defaults, **values)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _validate_whole(config: Config, file: str) -> None:
    """Rules that involve more than one key."""
    if bool(config.tls.certificate) != bool(config.tls.key):
        raise ConfigError(file, "tls", "certificate and key must be given together (or both left empty for a self-signed certificate)")
    if config.queue.smarthost.enabled and not config.queue.smarthost.host:
        raise ConfigError(file, "queue.smarthost.host", "must be set when queue.smarthost.enabled is true")
    if any(d != d.strip() or not d or "@" in d or "/" in d for d in config.domains):
        raise ConfigError(file, "domains", "each domain must be a bare domain name such as example.org")
    if config.srs.enabled and len(config.srs.secret) < 16:
        raise ConfigError(file, "srs.secret", "must be set (16 characters or more) when srs.enabled is true")
    if not config.hostname or any(c.isspace() for c in config.hostname):
        raise ConfigError(file, "hostname", "must be a host name without spaces")
    bound: dict[tuple[str, int], str] = {}
    for name in LISTENER_NAMES:
        listener = config.listener(name)
        if listener.enabled and listener.port:
            where = (listener.address, listener.port)
            if where in bound:
                raise ConfigError(file, f"{name}.port", f"{listener.address}:{listener.port} is already used by [{bound[where]}]")
            bound[where] = name


def parse(text: str, file: str = "<string>") -> Config:
    """Build a Config from TOML text (used by load() and by tests)."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, None, f"not valid TOML: {e}") from None
    config = _build(Config, table, "", file, Config())
    config = dataclasses.replace(config, source=file, domains=[d.lower() for d in config.domains])
    _validate_whole(config, file)
    return config


def load(path: str | os.PathLike[str]) -> Config:
    """Read and check the configuration file; ConfigError says what is wrong and where."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(file, None, f"cannot read the file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(file, None, f"not UTF-8 text: {e}") from None
    return parse(text, os.path.abspath(file))


def default_config_path() -> Path:
    """The example configuration used when no --config is given (etc/mailsuite.toml links to it)."""
    here = Path(__file__).resolve().parent
    return here / "default.toml"

