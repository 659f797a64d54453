"""The README tables of `demo --compare` from its record file (`cipo_fast.comparison_record`), finished or not.

    python bench/compare_tables.py                                   # docs/results/demo_compare.json
    python bench/compare_tables.py --record FILE --target SHA256 --no-readme

The sweep takes hours on a CPU and may span sessions; the record keeps every finished setting. This renders
one target's entry (the one with the most settings unless `--target` names it) together with its
siblings -- the targets of the same recipe built on the same host type in other sessions, which differ
from it in float rounding only (`cipo_fast.comparison_record`) -- as one sweep: a status line (which of
the sweep's settings are done, on which targets, hosts and code revisions, and how far the targets' own
rows differ), each method at its best setting (`comparison.best_setting`) and the whole sweep, between the
`demo-compare` markers of README.md. A method whose sweep is incomplete is marked so: its "best" is the
best of what has run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import REPO, publish

sys.path.insert(0, str(REPO))

from cipo_fast.comparison import METHODS, compare_table, summarize_sweep, sweep_settings, sweep_table
from cipo_fast.comparison_record import same_host_type

DEFAULT_RECORD = REPO / "docs" / "results" / "demo_compare.json"
BASE_LR = 1e-4  # `cipo-fast demo --lr` default, the base of every sweep but R²MU's


def expected_settings(base_lr: float = BASE_LR) -> dict[str, list[str]]:
    """Every setting the full sweep runs, by method (the keys `demo.compare` uses)."""
    return {name: list(sweep_settings(spec, base_lr)) for name, spec in METHODS.items()}


def group(record: dict, digest: str) -> list[str]:
    """`digest` and its siblings: the targets whose own row has its recipe and host type
    (`comparison_record.same_host_type`), most settings first."""
    targets = record.get("targets", {})
    own = targets[digest].get("target") or {}
    recipe, host, isa = own.get("recipe"), own.get("host"), own.get("cpu_isa")
    sib = [
        d
        for d, e in targets.items()
        if d != digest
        and recipe is not None
        and (e.get("target") or {}).get("recipe") == recipe
        and same_host_type(e.get("target") or {}, host, isa)
    ]
    return [digest, *sorted(sib, key=lambda d: -count(targets[d].get("settings", {})))]


def count(runs: dict) -> int:
    return sum(len(v) for v in runs.values())


def merged_settings(record: dict, digests: list[str]) -> tuple[dict, dict[str, int]]:
    """{method: {setting: row}} over the group (the first target that has a setting gives it) and how many
    settings each target gave."""
    runs: dict[str, dict] = {}
    given = dict.fromkeys(digests, 0)
    for d in digests:
        for method, rows in record["targets"][d].get("settings", {}).items():
            for key, row in rows.items():
                if key not in runs.setdefault(method, {}):
                    runs[method][key] = row
                    given[d] += 1
    return runs, given


TARGET_FIELDS = ("max_leak_cot", "max_leak_answer", "mcs", "retain_accuracy", "arithmetic_accuracy")


def spread(record: dict, digests: list[str]) -> str:
    """How far the group's own target rows differ: equal fields, and the greedy log-prob's range."""
    rows = [record["targets"][d].get("target") or {} for d in digests]
    rows = [r for r in rows if r]
    present = [f for f in TARGET_FIELDS if any(f in r for r in rows)]
    same = [f for f in present if len({r.get(f) for r in rows}) == 1]
    differ = [f for f in present if f not in same]
    lps = [r["greedy_logprob"] for r in rows if r.get("greedy_logprob") is not None]
    text = f"their own rows equal in {', '.join(same) or 'no field'}"
    if differ:
        text += f", differ in {', '.join(differ)}"
    if lps:
        text += f"; greedy log-prob {min(lps):.6f} to {max(lps):.6f}"
    return text


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
    return max(  # the most complete group, shown by its member with the most settings of its own
        targets,
        key=lambda d: (
            count(merged_settings(record, group(record, d))[0]),
            count(targets[d].get("settings", {})),
        ),
    )


def unverified(runs: dict, base_lr: float = BASE_LR) -> list[str]:
    """Settings recorded without a fingerprint (before they existed), but the demo's own CiPO run, which
    never has one (its settings are the demo's)."""
    own = f"lr={base_lr:g}"
    return [
        f"{m} {k}"
        for m, rows in runs.items()
        for k, r in rows.items()
        if not r.get("fingerprint") and not (m == "cipo" and k == own)
    ]


def render(record: dict, digest: str, base_lr: float = BASE_LR) -> str:
    entry = record["targets"][digest]
    digests = group(record, digest)
    target = entry.get("target") or {}
    runs, given = merged_settings(record, digests)
    expected = expected_settings(base_lr)
    missing = {m: [k for k in keys if k not in runs.get(m, {})] for m, keys in expected.items()}
    missing = {m: keys for m, keys in missing.items() if keys}
    done = sum(1 for m, keys in expected.items() for k in keys if k in runs.get(m, {}))
    extra = sum(len(v) for v in runs.values()) - done  # e.g. --compare-at at an lr outside the sweep
    total = sum(len(v) for v in expected.values())
    rows = [r for v in runs.values() for r in v.values()]
    rows += [t for d in digests if (t := record["targets"][d].get("target"))]
    hosts = sorted({r.get("host") for r in rows if r.get("host")})
    revisions = sorted({r.get("revision") for r in rows if r.get("revision")})
    wall = sum(r.get("wall_s") or 0.0 for v in runs.values() for r in v.values())
    status = (
        f"Target weights sha256 {digest[:12]}…; {done} of {total} settings done"
        + (f" (+{extra} outside the sweep)" if extra else "")
        + " "
        f"({wall / 3600:.1f} h of training + evaluation), host(s): {', '.join(hosts) or '?'}, "
        f"code: {', '.join(revisions) or '?'}."
    )
    if len(digests) > 1:
        host = target.get("host") or "?"
        status += (
            f" The settings come from {len(digests)} builds of one target recipe (SFT settings + data bytes, "
            f"key {target.get('recipe')}) on {host}, in sessions that did not share a workspace, whose "
            f"weights differ in float rounding: "
            + ", ".join(f"{d[:8]}… {given[d]}" for d in digests)
            + f"; {spread(record, digests)}."
        )
    legacy = unverified(runs, base_lr)
    if legacy:
        status += (
            f" {len(legacy)} setting(s) were recorded before settings had fingerprints, so whether today's "
            "method options would make the same run is not checked (the demo reuses them as they are): "
            + ", ".join(legacy)
            + "."
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
