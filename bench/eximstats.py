"""The reference: Exim's own `eximstats` (Perl, Debian's exim4-base) run over the same files.

`eximstats` reads a main log once and prints message-level totals (received, delivered, delayed, failed,
rejects) — what an admin runs today to see "what happened" on a server. It is the speed bar the core and
`eximtrack ingest` are compared with. Debian 12's eximstats (4.96) takes a fixed 16-character message id,
so the comparison corpus uses 16-character ids (bench/corpus.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

EXIMSTATS = "/usr/sbin/eximstats"


class MissingReference(RuntimeError):
    """eximstats is not installed (`make apt` installs exim4-base, which ships it)."""


def path() -> str:
    found = shutil.which("eximstats") or (EXIMSTATS if Path(EXIMSTATS).exists() else None)
    if not found:
        raise MissingReference("eximstats not found: install exim4-base (`make apt`)")
    return found


def run(paths: list[Path], out: Path) -> float:
    """Run eximstats with its default report over `paths` (one process, as an admin would); seconds."""
    t0 = time.perf_counter()
    with open(out, "w") as fh:
        subprocess.run([path(), *map(str, paths)], stdout=fh, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


_RECEIVED = re.compile(r"^\s*Received\s+\S+\s+(\d+)", re.M)
_DELIVERED = re.compile(r"^\s*Delivered\s+\S+\s+(\d+)\s+(\d+)", re.M)


def totals(report: str) -> dict:
    """Received messages, delivered messages/addresses from eximstats' grand total summary."""
    out = {}
    m = _RECEIVED.search(report)
    if m:
        out["received"] = int(m.group(1))
    m = _DELIVERED.search(report)
    if m:
        out["delivered_messages"], out["delivered_addresses"] = int(m.group(1)), int(m.group(2))
    return out


def version() -> str:
    proc = subprocess.run([path(), "--version"], capture_output=True, text=True)
    m = re.search(r"build:\s*(\S+)", proc.stdout + proc.stderr)
    return f"eximstats (exim {m.group(1)})" if m else "eximstats"
