"""One place where every benchmark records its figures, so one command can print one table.

A benchmark calls :func:`record` for each figure it prints.  When run by
``bench/run_all.py`` (which sets ``MAILSUITE_BENCH_JSON``), the figures are
appended to that file as JSON lines; run alone, ``record`` does nothing more
than the script's own printing.
"""

from __future__ import annotations

import json
import os


def record(area: str, operation: str, value: float, unit: str, *, peer: str | None = None, peer_value: float | None = None, higher_is_better: bool = True) -> None:
    """Remember one figure (and the same figure for Postfix/Dovecot when measured in the same run)."""
    path = os.environ.get("MAILSUITE_BENCH_JSON")
    if not path:
        return
    row = {"area": area, "operation": operation, "value": value, "unit": unit, "peer": peer, "peer_value": peer_value, "higher_is_better": higher_is_better}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
