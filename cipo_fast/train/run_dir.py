"""The run directory's lifecycle, shared by train, finetune, eval and the demo's stages: nothing is lost.

    plan     `RunDir.plan(out, kind, resume=..., overwrite=...)` decides where the run lives and refuses
             what would lose data -- before anything is written:
               * `out` is a file, or a non-empty directory that is not a cipo-fast run (no `run.json`),
                 or a run of another kind (an eval over a training run): refused, even with --overwrite;
               * an existing run of the same kind: refused unless --overwrite (replace it at the end)
                 or --resume (continue it);
               * an interrupted run in `OUT.partial`: refused unless --resume (continue it) or
                 --overwrite (start over).
    check    the caller validates its inputs (data, model, device, numbers) -- still nothing written
    start    `start()` creates `OUT.partial` and writes its marker `run.json`, or, to continue a finished
             run, moves `OUT` to `OUT.partial` (one rename). A run lives in `OUT.partial` while it runs,
             so a crash leaves it there, resumable, and never touches `OUT`.
    finish   `finish()` moves `OUT.partial` to `OUT`; an old run being replaced is renamed aside first
             and deleted only after the new one is in place.

Paths are never read from inside a run: a run's files name cache entries by content hash, which the
cache checks (`cipo_fast.train.refcache`), and the final locations are derived from `out`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cipo_fast.data.io import fsync_dir, write_json

MARKER = "run.json"
KINDS = ("train", "finetune", "eval", "demo")


def partial_of(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def run_kind(path: Path) -> str | None:
    """The kind of cipo-fast run in `path` (None: not a run). A run written before `run.json` existed
    is recognized by its `config.json` with a `method` (a training run) or its `demo.json` (a demo)."""
    marker = path / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
        except (ValueError, AttributeError):
            return None
        return kind if kind in KINDS else None
    if (path / "demo.json").is_file():
        return "demo"
    config = path / "config.json"
    if config.is_file():
        try:
            return "train" if "method" in json.loads(config.read_text(encoding="utf-8")) else None
        except (ValueError, TypeError):
            return None
    return None


def read_marker(path: Path) -> dict:
    try:
        return json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


@dataclass
class RunDir:
    out: Path  # where the finished run ends up
    kind: str
    resume: bool  # continue `existing`
    overwrite: bool  # replace whatever run is in `out` / `work` when this one finishes / starts
    existing: Path | None  # the run to continue (`work` or `out`), when resuming
    info: dict  # extra fields of the marker (e.g. a finetune's cache key)

    @property
    def work(self) -> Path:
        return partial_of(self.out)

    @classmethod
    def plan(cls, out, kind: str, *, resume: bool = False, overwrite: bool = False, info=None) -> RunDir:
        assert kind in KINDS, kind
        out = Path(out)
        flag = "--out"
        if resume and overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if out.exists() and not out.is_dir():
            raise ValueError(f"{flag} {out}: a file of that name exists; a run needs a directory")
        work = partial_of(out)
        for where in (out, work):
            if where.is_dir() and not _is_empty_dir(where):
                found = run_kind(where)
                if found is None:
                    raise ValueError(
                        f"{flag} {where} exists and is not a cipo-fast run directory (no {MARKER}); "
                        "refusing to touch it -- choose another --out"
                    )
                if found != kind:
                    raise ValueError(
                        f"{flag} {where} holds a {found} run; a {kind} run would replace it -- choose another --out"
                    )
        has_out = out.is_dir() and not _is_empty_dir(out)
        has_work = work.is_dir() and not _is_empty_dir(work)
        existing = None
        if resume:
            existing = work if has_work else out if has_out else None
            if existing is None:
                raise ValueError(f"--resume: {out} holds no run to resume")
        elif has_work and not overwrite:
            raise ValueError(
                f"{flag} {out}: an interrupted run is in {work}; --resume continues it, --overwrite starts over"
            )
        elif has_out and not overwrite:
            raise ValueError(
                f"{flag} {out} already holds a {kind} run; pass --overwrite to replace it "
                "(once the new run has finished) or --resume to continue it"
            )
        return cls(out, kind, resume, overwrite, existing, dict(info or {}))

    def start(self) -> Path:
        """Make `work` the run's directory (see the module docstring); returns it."""
        work = self.work
        if self.resume:
            if self.existing == self.out:
                os.rename(self.out, work)  # continue a finished run: it is unfinished again until finish()
                fsync_dir(work.parent)
            self.existing = work
            return work
        if work.exists():  # --overwrite of an interrupted run (checked in plan)
            shutil.rmtree(work)
        work.mkdir(parents=True)
        write_json(work / MARKER, {"kind": self.kind, "replaces": self.overwrite, **self.info})
        return work

    def finish(self) -> Path:
        """Move the finished run into `out`; returns `out`."""
        work, out = self.work, self.out
        if out.is_dir() and not _is_empty_dir(out):
            if not (self.overwrite or read_marker(work).get("replaces")):
                raise ValueError(f"{out} appeared while the run was running; the run is kept in {work}")
            old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
            os.rename(out, old)
            os.rename(work, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out.is_dir():
                out.rmdir()
            os.rename(work, out)
        fsync_dir(out.parent)
        return out


def interrupted(out: str | Path) -> bool:
    """Whether an interrupted run with at least one checkpoint waits in `OUT.partial`."""
    return (partial_of(Path(out)) / "checkpoints" / "latest").is_file()
