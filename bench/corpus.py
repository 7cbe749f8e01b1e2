"""The generated log sets the suites share, made once per bench work directory (bench/generate.py).

comparison_corpus: 16-character ids (Debian 12's eximstats reads no other), cPanel's log_selector, the
default outcome mix — the file eximstats and eximtrack both read. Quick mode is a smoke-test size.
single_server_corpus: one busy cPanel server's log (issue 12: "a log shaped like the one a new user
tried"): more multi-recipient messages, deferrals, bounces and forwarders than the default mix.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

COMPARISON = {
    "quick": {"servers": 2, "messages_per_day": 2_000},
    "full": {"servers": 4, "messages_per_day": 60_000},
}


def build(outdir: Path, **config) -> tuple[dict[str, Path], dict]:
    """Generate (or reuse, when the manifest says it was made from the same config) a log set in `outdir`;
    returns ({server: log path}, manifest)."""
    from bench.generate import GenConfig, generate

    manifest_path = outdir / "manifest.json"
    cfg = GenConfig(**config)
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("config_key") == repr(cfg):
            return _files(outdir, manifest), manifest
    manifest = generate(cfg, outdir)
    manifest["config_key"] = repr(cfg)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return _files(outdir, manifest), manifest


def _files(outdir: Path, manifest: dict) -> dict[str, Path]:
    return {server: outdir / f"{server}.log" for server in sorted(manifest["servers"])}


def comparison_corpus(workdir: Path, quick: bool) -> tuple[dict[str, Path], dict]:
    size = COMPARISON["quick" if quick else "full"]
    return build(workdir / ("corpus-quick" if quick else "corpus"), id_format="old", seed=6, **size)


SINGLE_SERVER = {
    "quick": {"servers": 1, "messages_per_day": 3_000},
    "full": {"servers": 1, "messages_per_day": 40_000},
}
# the default mix with three times the multi-recipient messages, twice the deferrals, bounces and forwarders
SINGLE_SERVER_MIX = {
    "success_local": 28.0, "success_remote": 18.0, "script": 4.0, "multi_recipient": 24.0, "forwarder": 6.0,
    "defer_then_success": 12.0, "defer_pending": 4.0, "defer_local": 4.0, "failure": 8.0, "rejected": 10.0,
    "spam": 6.0, "archive": 1.0, "inprogress": 1.0, "auth_failed": 2.0,
}  # fmt: skip


def single_server_corpus(workdir: Path, quick: bool) -> tuple[dict[str, Path], dict]:
    size = SINGLE_SERVER["quick" if quick else "full"]
    name = "single-server" + ("-quick" if quick else "")
    return build(workdir / name, id_format="old", seed=12, mix=dict(SINGLE_SERVER_MIX), **size)


PIPELINE = {
    "quick": {"servers": 2, "messages_per_day": 1_000},
    "full": {"servers": 2, "messages_per_day": 40_000},
}


def pipeline_corpus(
    workdir: Path, quick: bool, seed: int, days_ago: int = 1, scale: int = 1
) -> tuple[dict[str, Path], dict]:
    """23-character ids (Exim 4.97+, what a current fleet writes); one log set per seed, starting `days_ago`
    days before today (UTC): recent, so the store's retention (90 days by default) keeps what is stored,
    and log sets appended one after another can move forward in time. `scale` multiplies the messages (a
    steady load long enough for its rate)."""
    size = dict(PIPELINE["quick" if quick else "full"])
    size["messages_per_day"] *= scale
    name = f"pipeline-{seed}" + (f"-x{scale}" if scale != 1 else "") + ("-quick" if quick else "")
    start = (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT00:00:00+00:00")
    return build(workdir / name, id_format="new", seed=seed, start=start, **size)
