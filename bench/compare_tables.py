"""The README tables of `demo --compare` from its record file (`cipo_fast.comparison_record`), finished or not.

    python bench/compare_tables.py                                   # docs/results/demo_compare.json
    python bench/compare_tables.py --record FILE --target SHA256 --no-readme

The sweep takes hours on a CPU and may span sessions; the record keeps every finished setting. This renders
one target's entry (the one with the most settings unless `--target` names it): a status line (which of
the sweep's settings are done, on which hosts and code revisions), each method at its best setting
(`comparison.best_setting`) and the whole sweep, between the `demo-compare` markers of README.md. A method
whose sweep is incomplete is marked so: its "best" is the best of what has run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import REPO, publish

sys.path.insert(0, str(REPO))

from cipo_fast.comparison import METHODS, compare_table, summarize_sweep, sweep_lrs, sweep_table
from cipo_fast.config import R2muConfig

DEFAULT_RECORD = REPO / "docs" / "results" / "demo_compare.json"
BASE_LR = 1e-4  # `cipo-fast demo --lr` default, the base of every sweep but R²MU's


def expected_settings(base_lr: float = BASE_LR) -> dict[str, list[str]]:
    """Every setting the full sweep runs, by method (the keys `demo.compare` uses)."""
    out = {}
    for name, spec in METHODS.items():
        own = R2muConfig().r2mu_lr if spec.method == "r2mu" else None
        out[name] = [f"lr={lr:g}" for lr in sweep_lrs(spec, base_lr, own)] if spec.method else ["target"]
    return out


def pick_target(record: dict, digest: str | None) -> str:
    targets = record.get("targets", {})
    if digest is not None:
        if digest not in targets:
            raise SystemExit(
                f"--target {digest}: not in the record (it holds {', '.join(targets) or 'none'})"
            )
        return digest
    if not targets:
        raise SystemExit("the record holds no target yet")
    return max(targets, key=lambda d: sum(len(v) for v in targets[d].get("settings", {}).values()))


def render(record: dict, digest: str, base_lr: float = BASE_LR) -> str:
    entry = record["targets"][digest]
    target, runs = entry.get("target") or {}, entry.get("settings", {})
    expected = expected_settings(base_lr)
    missing = {m: [k for k in keys if k not in runs.get(m, {})] for m, keys in expected.items()}
    missing = {m: keys for m, keys in missing.items() if keys}
    done = sum(len(v) for v in runs.values())
    total = sum(len(v) for v in expected.values())
    rows = [r for v in runs.values() for r in v.values()] + ([target] if target else [])
    hosts = sorted({r.get("host") for r in rows if r.get("host")})
    revisions = sorted({r.get("revision") for r in rows if r.get("revision")})
    wall = sum(r.get("wall_s") or 0.0 for v in runs.values() for r in v.values())
    status = (
        f"Target weights sha256 {digest[:12]}…; {done} of {total} settings done "
        f"({wall / 3600:.1f} h of training + evaluation), host(s): {', '.join(hosts) or '?'}, "
        f"code: {', '.join(revisions) or '?'}."
    )
    if missing:
        status += " Not run yet: " + "; ".join(f"{m} ({', '.join(k)})" for m, k in missing.items()) + "."
    summary = summarize_sweep({m: r for m, r in runs.items() if r}, target)
    best = compare_table(summary, target)
    partial = [m for m in summary if m in missing]
    if partial:
        best += "\n\n(best of an incomplete sweep: " + ", ".join(partial) + ")"
    return f"{status}\n\n{best}\n\nEvery setting:\n\n{sweep_table(summary)}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", type=Path, default=DEFAULT_RECORD)
    p.add_argument("--target", default=None, help="the target's weights digest (default: the most complete)")
    p.add_argument("--no-readme", dest="readme", action="store_false")
    a = p.parse_args(argv)
    record = json.loads(a.record.read_text())
    publish("demo-compare", render(record, pick_target(record, a.target)), a.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
