"""cPanel's stats counters computed in Python from search rows: the oracle of the stats tests (the same
definitions as eximtrack/stats.py: messages whose arrival was seen, rows by latest outcome, SMTP-time
rejections, each message's size once)."""

from __future__ import annotations

SUCCESS = ("success", "filtered", "archive")
FAILED = ("failure", "rejected")


def cpanel_counters(rows) -> dict[str, int]:
    counted = [r for r in rows if r["protocol"] or r["type"] == "rejected"]
    sizes = {(r["server"], r["msgid"], r["size"]) for r in counted if r["type"] != "rejected"}
    out = {
        "SENDCOUNT": len({(s, m) for s, m, _ in sizes}),
        "SUCCESSCOUNT": sum(r["type"] in SUCCESS for r in counted),
        "FAILCOUNT": sum(r["type"] in FAILED for r in counted),
        "DEFERCOUNT": sum(r["type"] == "defer" for r in counted),
        "INPROGRESSCOUNT": sum(r["type"] == "inprogress" for r in counted),
        "TOTALSIZE": sum(size for _, _, size in sizes),
    }
    out["DEFERFAILCOUNT"] = out["DEFERCOUNT"] + out["FAILCOUNT"]
    return out


def arrival_hour(row) -> int:
    return int(row["sendunixtime"]) // 3600 * 3600
