"""The server's log: one text line per event, cheap enough to write for every message.

Implementation notes:

- Lines look like twistd's own: ``<ISO time with offset> [<system>] <text>``,
  with a failure's traceback after the line, so existing log readers and
  tests keep working.
- twistd's default observer formats each event with ``string.Formatter`` (in
  Python) and works out the time zone again for every line; at SMTP message
  rates that was about 8% of the reactor thread's time for the one line we
  write per accepted message.  Here the format string goes through the C
  ``str.format_map`` and the time text is computed once per second.  Events
  it cannot format that way (Twisted's call syntax ``{f()}``, legacy events
  without a format) fall back to Twisted's own formatting, so nothing is lost.
- twistd uses it with ``--logger mailsuite.logs.observer`` (the systemd unit
  passes it); without that flag twistd's own observer is used (same lines,
  slower), and ``-l``/``--syslog`` keep working as twistd documents them.
- Nothing a client sends can forge or garble a line: control characters
  (C0 with CR, LF, ESC and NUL, DEL, C1, the Unicode line separators and
  bidirectional overrides) are written as ``\\x1b`` / ``\\u2028`` escapes.
  This is done here, when an event becomes text, so no call site has to
  remember it: the event's text is escaped as a whole (our format strings
  hold no control characters, so only what came from fields changes), and a
  traceback line by line, so it keeps its lines and stays readable.
- ``log.level`` (default "info") drops the events below it, e.g. the
  per-command ``debug`` lines a client could otherwise multiply at will.
  :func:`configure_twistd` applies the level and the escaping to whichever
  observer twistd runs (this one, twistd's own, syslog, a custom
  ``--logger``).
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, Callable, MutableMapping, TextIO

from twisted.logger import ILogObserver, LegacyLogObserverWrapper, LogLevel, formatEvent
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.compat import twistd_default_observer

#: Characters never written raw: C0 controls, DEL, C1 controls, line/paragraph separators, bidi overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: The same without LF, for tracebacks (whose lines are kept).
_CONTROL_BUT_LF = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``), on one line."""
    if text.isprintable():  # C speed; every character _CONTROL matches is non-printable
        return text
    return _CONTROL.sub(_escape_char, text)


def _escape_traceback(text: str) -> str:
    return _CONTROL_BUT_LF.sub(_escape_char, text)


def _dropped_levels(level: str | LogLevel) -> frozenset[LogLevel]:
    """The levels below ``level`` ("info" -> {debug})."""
    if isinstance(level, str):
        level = LogLevel.levelWithName(level)
    return frozenset(known for known in LogLevel.iterconstants() if known < level)


class _Missing(dict):  # type: ignore[type-arg]
    """Format fields an event lacks become visible markers instead of errors."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _event_text(event: dict[str, Any]) -> str:
    fmt = event.get("log_format")
    if isinstance(fmt, str) and "()" not in fmt:
        try:
            return fmt.format_map(_Missing(event))
        except Exception:
            pass
    return formatEvent(event)


def safe_text(event: dict[str, Any]) -> str:
    """The event as escaped text: its line, then its failure's traceback (if any) after a line break."""
    text = escape(_event_text(event))
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        text += "\n" + _escape_traceback(failure.getTraceback().rstrip("\n"))
    return text


@implementer(ILogObserver)
class LineObserver:
    """Writes each log event at ``level`` or above as one line (plus any traceback) to a text stream and flushes it."""

    def __init__(self, out: TextIO, level: str | LogLevel = "info") -> None:
        self._out = out
        self._dropped = _dropped_levels(level)
        self._second = -1
        self._stamp = ""

    def _time_text(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._stamp

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level in self._dropped:
            return
        text = safe_text(event)
        when = event.get("log_time") or time.time()
        system = event.get("log_system")
        if system is None:
            system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
        else:
            system = escape(str(system))
        self._out.write(f"{self._time_text(when)} [{system}] {text.replace(chr(10), chr(10) + chr(9))}\n")
        self._out.flush()


@implementer(ILogObserver)
class SafeObserver:
    """Puts another observer (twistd's own, syslog, a custom one) behind ``log.level`` and the escaping.

    The observer receives a new event whose text is already formatted and
    escaped (``log_format`` "{log_text}", traceback included), carrying the
    original's time, level, namespace and system.
    """

    def __init__(self, observer: Any, level: str | LogLevel = "info") -> None:
        if not ILogObserver.providedBy(observer) and legacy_log.ILogObserver.providedBy(observer):
            observer = LegacyLogObserverWrapper(observer)  # as twistd itself would wrap it (syslog)
        self._observer = observer
        self._dropped = _dropped_levels(level)

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_level") in self._dropped:
            return
        safe = {key: event[key] for key in ("log_time", "log_level", "log_namespace", "log_source", "log_logger") if key in event}
        if "log_system" in event:
            safe["log_system"] = escape(str(event["log_system"]))
        safe["log_format"] = "{log_text}"
        safe["log_text"] = safe_text(event)
        self._observer(safe)


def observer() -> LineObserver:
    """Factory for twistd's ``--logger`` option: log lines to standard output (the journal under systemd)."""
    return LineObserver(sys.stdout)


#: What :func:`twistd_observer` builds: (the ``--logger`` factory given or None, the level, twistd's options).
_twistd_setup: tuple[Callable[[], Any] | None, str, MutableMapping[str, Any]] | None = None


def configure_twistd(options: MutableMapping[str, Any], level: str) -> None:
    """Make the observer twistd is about to start honour ``level`` and escape client bytes.

    ``options`` are twistd's own (the parent of ``twistd mailsuite``'s
    options).  twistd turns ``options["logger"]`` from a dotted name into the
    observer factory only after the plugin's options are parsed, so naming
    :func:`twistd_observer` there decides the observer; what it builds is
    kept here, the one piece of module state, since twistd's ``--logger``
    takes a name, not an object.
    """
    global _twistd_setup
    chosen = options.get("logger")
    if isinstance(chosen, str):
        from twisted.python import usage
        from twisted.python.reflect import namedAny

        try:
            chosen = namedAny(chosen)
        except Exception as e:  # the same refusal twistd gives for a bad --logger
            raise usage.UsageError(f"Logger '{chosen}' could not be imported: {e}") from None
    _twistd_setup = (chosen, level, options)
    options["logger"] = f"{__name__}.twistd_observer"


def twistd_observer() -> ILogObserver:
    """twistd's observer once :func:`configure_twistd` ran: ours at the level, or the one twistd would use, made safe."""
    chosen, level, options = _twistd_setup or (None, "info", {})
    if chosen is observer or chosen is twistd_observer:
        return LineObserver(sys.stdout, level)
    if chosen is not None:
        return SafeObserver(chosen(), level)
    return SafeObserver(twistd_default_observer(options), level)
