"""The inputs of the joiner's golden file (tests/golden/joiner/expected.jsonl.gz) and how their output is
recorded. Issue 12 allows a compiled joiner only if it gives the same delivery events as the Python one —
ids, versions and every field — and the same rejects; this file pins what the Python joiner gives.

Streams, each joined by its own `Joiner` as one server's log:
- every real-Exim sample (samples/mainlog-*.log) and every golden case's input, line by line as `ingest`
  feeds them (no sequence numbers), and again as the stream worker does (sequence numbers), with the last
  third of the lines replayed after a simulated crash (`seq <= hw`: the rows and the removed rows' tombstones re-emitted, not applied twice);
- generated fleet logs (bench/generate.py: both id formats, the default mix and the busy cPanel server's),
  kept in the golden file itself, since the generator may change;
- lines mutated from the real ones (fixed seed, as the fuzz test mutates them): the reject paths.
Each line's output (events, rejects and log lines, every field, in order) is stored whole for the real
samples and as a digest for the others; at the end of a stream, the joiner's counters and every open
state's stored form (`MessageState.to_bytes`, what the stream worker keeps), then what a sweep far in the
future ends.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from stream.accounts import AccountMap
from stream.join import Joiner
from stream.parse import parse_line
from tests.golden.parser.lines import ROOT, anywhere_mutations

GOLDEN = Path(__file__).with_name("expected.jsonl.gz")


def real_streams() -> dict[str, list[str]]:
    files = sorted((ROOT / "samples").glob("mainlog-*.log")) + sorted(
        (ROOT / "tests/golden").glob("*/input.log")
    )
    return {
        f"real:{f.parent.name if f.name == 'input.log' else f.stem}": f.read_text(
            encoding="utf-8"
        ).splitlines()
        for f in files
    }


def generated_streams() -> dict[str, list[str]]:
    """Small generated logs (deterministic for this generator; stored in the golden file)."""
    from bench.corpus import SINGLE_SERVER_MIX
    from bench.generate import GenConfig, generate

    configs = {
        "fleet-new-ids": GenConfig(servers=2, messages_per_day=500, days=1.0, seed=16, id_format="new"),
        "cpanel-old-ids": GenConfig(
            servers=1, messages_per_day=700, days=1.0, seed=17, id_format="old", mix=dict(SINGLE_SERVER_MIX)
        ),
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in configs.items():
            manifest = generate(cfg, Path(tmp) / name)
            for server in sorted(manifest["servers"]):
                path = Path(tmp) / name / f"{server}.log"
                out[f"generated:{name}:{server}"] = path.read_text(encoding="utf-8").splitlines()
    return out


def mutated_stream(real: dict[str, list[str]]) -> dict[str, list[str]]:
    lines = [ln for v in real.values() for ln in v]
    return {"mutated": anywhere_mutations(lines, 6000, seed=20261203)}


def accounts_for(lines: list[str]) -> AccountMap:
    """A cPanel account map for a stream: the first 30 domains its arrivals and deliveries name, each a user
    of one of three resellers (so that the joiner's user and owner lookups are exercised)."""
    domains: list[str] = []
    for line in lines:
        p = parse_line(line)
        if p.kind not in ("arrival", "delivery", "defer", "failure") or "@" not in p.address:
            continue
        d = p.address.rsplit("@", 1)[1].lower().rstrip(">")
        if d and d not in domains:
            domains.append(d)
        if len(domains) >= 30:
            break
    users = [f"user{i}" for i in range(len(domains))]
    userdomains = "".join(f"{d}: {u}\n" for d, u in zip(domains, users, strict=True))
    owners = "".join(f"{u}: reseller{i % 3}\n" for i, u in enumerate(users))
    return AccountMap.from_text(userdomains, owners)


def output_of(out) -> dict:
    return {
        "events": [e.to_dict() for e in out.events],
        "rejects": [r.to_dict() for r in out.rejects],
        "lines": [ln.to_dict() for ln in out.lines],
    }


def digest(data) -> str:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def run(name: str, lines: list[str], *, whole: bool, sequenced: bool = False) -> list[dict]:
    """The records of one stream: one per line (its output whole or as a digest), then the end state."""
    joiner = Joiner(name, "UTC", accounts_for(lines), keep_latest=False)
    keep = (lambda d: d) if whole else digest
    records = []
    order = list(range(len(lines)))
    if sequenced:  # the last third again, as a restarted worker re-reads past its committed offset
        order += order[len(order) - len(order) // 3 :]
    for n, i in enumerate(order):
        out = joiner.process(lines[i], file_id=name, offset=i, seq=i if sequenced else None)
        records.append({"stream": name, "n": n, "out": keep(output_of(out))})
    states = {k: st.to_bytes().decode() for k, st in sorted(joiner.states.items())}
    end = {
        "stats": dict(joiner.stats),
        "ignored_by_rule": dict(joiner.ignored_by_rule),
        "states": keep(states),
    }
    ended = joiner.sweep(joiner.watermark + 30 * 86400)
    end["swept"] = {"ended": ended, "open": joiner.open_messages, "expired": joiner.stats["expired"]}
    records.append({"stream": name, "end": end})
    return records


def all_records(generated: dict[str, list[str]]) -> list[dict]:
    """Every record, in order, for the given generated streams (from the golden file when testing)."""
    real = real_streams()
    records: list[dict] = []
    for name, lines in real.items():
        records += run(name, lines, whole=True)
        records += run(name + ":sequenced", lines, whole=False, sequenced=True)
    for name, lines in generated.items():
        records += run(name, lines, whole=False)
    for name, lines in mutated_stream(real).items():
        records += run(name, lines, whole=False)
    return records
