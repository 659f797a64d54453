"""A record of `demo --compare` results that outlives one run directory.

The comparison's settings take hours on a CPU; a run directory holds their checkpoints and evaluations
but may not survive to the next session or machine. `--compare-record FILE` keeps each finished setting's
headline numbers (`comparison.headline`, with its wall time, host and code revision) in one small JSON
file, keyed by the SHA-256 of the target model's weights: a later run whose target has the same weights
reuses those settings instead of training them again, and one with other weights (another host's float
reductions, another seed) starts its own entry and never mixes the two. Each setting also carries the
`fingerprint` of what made it -- its training and evaluation settings with every data file replaced by
the digest of its bytes -- so a setting whose method options, budget or data changed is run again and the
others are not (entries written before fingerprints existed have none and are taken as they are). Writes
are atomic, one per finished setting, and merge into the file as it is on disk then, so a killed run
loses at most the setting it was in and an edit made to the file meanwhile survives.

Targets of one recipe. The same SFT recipe (the target's cache key: its settings and the bytes of its
data, `trainers.finetune.cache_key`) run on the same host type in another session gives other weights:
float reductions differ from process to process, so the SHA-256 differs while the target behaves the same
(the demo's three AMD EPYC targets of 2026-12-02/03: equal leaks, MCS, retain and arithmetic accuracy,
greedy log-prob -0.013165 / -0.013167 / -0.013165). A record opened with the target's `recipe` also takes a
setting from such a *sibling* -- a target of the same recipe whose row was written on the same host type
(`cpu_model`) -- when its own entry lacks it, so a sweep of many hours can go on across sessions whose
workspaces do not persist. The setting is then one trained on a float-different copy of the target; the
row says which (`target_sha256`), and the tables say how many came from where.

    {"kind": "cipo-fast compare record", "targets": {"<sha256>": {"target": {...headline, "recipe"},
      "settings": {"<method>": {"lr=0.0001": {...headline, "fingerprint": ..., "host": ..., "cpu_isa": ...,
      "revision": ...}}}}}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

from cipo_fast.data.io import write_json
from cipo_fast.train.precision import cpu_isa, cpu_model

KIND = "cipo-fast compare record"


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 of a model directory's `model.safetensors` bytes (the weights, names and dtypes)."""
    return file_digest(Path(model_dir) / "model.safetensors")


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# settings that say where a run lives or how it reports, not what it computes (the models are named by
# the target's weights digest instead of their paths), or only how fast: `checkpoint_attention` gives the
# same gradients bit for bit (tests/test_checkpointing.py)
UNFINGERPRINTED = frozenset(
    {"out", "resume", "overwrite", "progress", "label", "model", "original", "checkpoint_attention"}
)
# fields a settings class gained after records were written: left out while at the value every earlier
# run had, so the settings recorded before them keep their fingerprints
LATER_FIELDS = {"EvalConfig": {"cpu_autocast": "off"}, "R2muConfig": {"r2mu_adaptive_scale": None}}


def fingerprint(settings, extra: dict | None = None) -> str:
    """A digest of `settings` (dataclasses, dicts, lists, scalars): fields in `UNFINGERPRINTED` left out,
    every string naming an existing file replaced by the SHA-256 of its bytes, `extra` added."""

    def norm(x):
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            later = LATER_FIELDS.get(type(x).__name__, {})
            x = {
                f.name: getattr(x, f.name)
                for f in dataclasses.fields(x)
                if f.name not in later or getattr(x, f.name) != later[f.name]
            }
        if isinstance(x, dict):
            return {str(k): norm(v) for k, v in sorted(x.items()) if k not in UNFINGERPRINTED}
        if isinstance(x, (list, tuple)):
            return [norm(v) for v in x]
        if isinstance(x, (str, Path)) and str(x) and Path(x).is_file():
            return "sha256:" + file_digest(x)
        return x if isinstance(x, (int, float, bool, type(None))) else str(x)

    blob = json.dumps({"settings": norm(settings), "extra": norm(extra or {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def revision() -> str | None:
    """The git commit of the code that ran (with "+dirty" for local changes), or None outside a checkout."""

    def git(*args):
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        ).stdout

    try:
        commit, dirty = (
            git("rev-parse", "--short", "HEAD").strip(),
            git("status", "--porcelain", "-uno").strip(),
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def same_host_type(target_row: dict, host: str | None, isa: str | None) -> bool:
    """Whether a target's own row was written on a host of model name `host` and instruction set `isa`
    (`precision.cpu_isa`); a row or caller without an instruction set (rows before 2026-12-07) matches on
    the name alone."""
    theirs = target_row.get("cpu_isa")
    return target_row.get("host") == host and (theirs is None or isa is None or theirs == isa)


class CompareRecord:
    """The entry of one target's weights in a record file (created on the first `put`); with `recipe`,
    also its siblings' settings (module docstring)."""

    def __init__(self, path: str | Path, digest: str, recipe: str | None = None):
        self.path, self.digest, self.recipe = Path(path), digest, recipe
        self.data = {"kind": KIND, "targets": {}}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"--compare-record {self.path}: not a readable JSON file ({e})") from e
            if not (
                isinstance(data, dict) and data.get("kind") == KIND and isinstance(data.get("targets"), dict)
            ):
                raise ValueError(
                    f"--compare-record {self.path}: not a cipo-fast compare record "
                    f'(expected {{"kind": "{KIND}", "targets": {{...}}}}); choose another file'
                )
            for digest_, entry in data["targets"].items():
                if not (isinstance(entry, dict) and isinstance(entry.get("settings", {}), dict)):
                    raise ValueError(f"--compare-record {self.path}: targets.{digest_}: not an entry object")
            self.data = data

    @property
    def entry(self) -> dict:
        return self.data["targets"].get(self.digest, {})

    def others(self) -> list[str]:
        """Digests of the other targets the file holds results for (not used by this run)."""
        return [d for d in self.data["targets"] if d != self.digest]

    def siblings(self) -> list[str]:
        """Digests of the other targets of this record's recipe built on this host type, most settings
        first (none without a recipe)."""
        if self.recipe is None:
            return []
        host, isa = cpu_model(), cpu_isa()
        found = [
            d
            for d, e in self.data["targets"].items()
            if d != self.digest
            and (e.get("target") or {}).get("recipe") == self.recipe
            and same_host_type(e.get("target") or {}, host, isa)
        ]
        return sorted(
            found, key=lambda d: -sum(map(len, self.data["targets"][d].get("settings", {}).values()))
        )

    def get(self, method: str, setting: str, fingerprint=None) -> dict | None:
        """The setting's row, unless it was made with another fingerprint than the one given; from this
        target's entry, else from a sibling's (`siblings`; the row then names its `target_sha256`).
        `fingerprint`: a string, or a function of a target digest giving the fingerprint on that target."""
        for digest in [self.digest, *self.siblings()]:
            entry = self.data["targets"].get(digest, {})
            row = entry.get("settings", {}).get(method, {}).get(setting)
            want = fingerprint(digest) if callable(fingerprint) else fingerprint
            if row is not None and (want is None or row.get("fingerprint") in (None, want)):
                return row if digest == self.digest else {**row, "target_sha256": digest}
        return None

    def _merged(self) -> dict:
        """The file as it is on disk now (another process or an editor may have written it), or ours."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return self.data
        if isinstance(data, dict) and data.get("kind") == KIND and isinstance(data.get("targets"), dict):
            self.data = data
        return self.data

    def put(self, method: str, setting: str, row: dict, fingerprint: str | None = None) -> None:
        entry = self._merged()["targets"].setdefault(self.digest, {"settings": {}})
        stamp = {"fingerprint": fingerprint} if fingerprint else {}
        entry.setdefault("settings", {}).setdefault(method, {})[setting] = {
            **row,
            **stamp,
            "host": cpu_model(),
            "cpu_isa": cpu_isa(),
            "revision": revision(),
        }
        write_json(self.path, self.data)

    def put_target(self, row: dict) -> None:
        """The target's own headline (what the table's first row shows)."""
        entry = self._merged()["targets"].setdefault(self.digest, {"settings": {}})
        recipe = {} if self.recipe is None else {"recipe": self.recipe}
        entry["target"] = {**row, **recipe, "host": cpu_model(), "cpu_isa": cpu_isa(), "revision": revision()}
        write_json(self.path, self.data)
