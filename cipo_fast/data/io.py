"""Files in and out: the one JSON-lines reader, crash-safe writers and append-only logs.

Reading (`read_jsonl`): every input file a user hands to cipo-fast (training data, item sets, predictions,
seeds) goes through one reader, so every format fails the same way on bad bytes: a `ValueError` naming
the file and the line -- for text that is not UTF-8, a line that is not JSON (including JSON nested past
Python's recursion limit and the non-standard `NaN` / `Infinity`), or a row that is not an object when
objects are expected. Blank lines are skipped; a file without data rows is an error.

Writing: `atomic_write` writes a temporary file in the target's directory, fsyncs it and renames it over
the target, so a reader (or a process restarted after a crash) sees the old file or the complete new one,
never a prefix. Logs (`metrics.jsonl`) are appended a line at a time instead, and `read_log` -- for files
cipo-fast wrote itself -- stops at a last line cut short by a crash.

JSON is written with `ensure_ascii=False` (names with accents stay readable), one object per line, and
non-finite floats as `null` (standard JSON has no NaN; other tools refuse a bare `NaN`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def _no_constants(name: str):
    raise ValueError(f"{name} is not standard JSON")


def parse_json_line(line: str, where: str):
    """One JSON value; any failure is a ValueError naming `where` ("file:line")."""
    try:
        return json.loads(line, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{where}: malformed JSON (nested too deeply)") from None
    except ValueError as e:  # NaN / Infinity, integers too long to convert
        raise ValueError(f"{where}: malformed JSON ({e})") from None


def read_jsonl(path: str | Path, *, objects: bool = True) -> list[tuple[int, object]]:
    """`(line number, value)` for every non-blank line of a JSON-lines file.

    With `objects` (the default) every value must be a JSON object. Errors are ValueErrors that name the
    file and line; a missing file, a directory or a file with no data rows is an error too."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    rows = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not UTF-8 text (byte {e.start + 1} of the line)"
                ) from None
            if not line.strip():
                continue
            value = parse_json_line(line, f"{path}:{lineno}")
            if objects and not isinstance(value, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {_json_type(value)}")
            rows.append((lineno, value))
    if not rows:
        raise ValueError(f"{path}: the file has no data rows")
    return rows


def _json_type(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def read_log(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines log cipo-fast wrote (metrics, pairs); stops at a line cut short by a crash;
    [] if the file is absent."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            break
        if not isinstance(row, dict):
            break
        rows.append(row)
    return rows


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path` (same directory, so the rename is atomic)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def finite(obj):
    """`obj` with every NaN / infinite float replaced by None (recursively through dicts and lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj, indent: int | None = None) -> str:
    return json.dumps(finite(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8", newline="\n"))


def write_json(path: str | Path, obj, indent: int | None = 2) -> None:
    write_text(path, dumps(obj, indent) + "\n")


def jsonl_text(rows: Iterable[dict]) -> str:
    return "".join(dumps(r) + "\n" for r in rows)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_text(path, jsonl_text(rows))


def append_jsonl(path: str | Path, row: dict) -> None:
    """One log line, flushed (a crash loses at most the line being written; `read_log` skips it)."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(dumps(row) + "\n")
        f.flush()
