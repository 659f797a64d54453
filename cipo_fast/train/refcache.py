"""Persistent, content-addressed cache of reference log-prob sums.

`R_s` depends only on the reference model and the sequence (token ids and where the completion starts),
so it is computed once and reused across epochs, runs and CiPO rounds; each round computes only the
sequences it has not seen.

Layout: `<root>/<namespace>/<shard>.safetensors`, where `namespace` hashes the reference model's weights
and everything else that changes the numbers (dtype, logit transform, format version). A shard holds
`keys` (uint8 [K, 16], BLAKE2b of the sequence) and `values` (float32 [K]), and carries in its metadata
a SHA-256 of both. Shards are written to a temporary file, fsynced and renamed, so a crash leaves either
the old state or the complete new shard. On load every shard is verified; a shard that does not parse or
whose checksum does not match is moved aside (`*.corrupt`) and its sequences are recomputed, never trusted.

Under a process group one writer (rank 0) writes the shards and moves damaged ones aside; the other ranks
open the cache with `writer=False`: they skip what fails verification and keep the values rank 0 writes
in memory (`put(..., write=False)`), so a step's values are the same on every rank and on disk once.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from cipo_fast.data.io import atomic_write
from cipo_fast.data.packing import Sequence

FORMAT = "cipo-fast-refcache-1"


def sequence_key(seq: Sequence) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(seq.prompt_ids, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(seq.completion_ids, dtype=np.int64).tobytes())
    return h.digest()


def namespace(model_fingerprint: str, **settings) -> str:
    text = FORMAT + ":" + model_fingerprint + ":" + ",".join(f"{k}={settings[k]}" for k in sorted(settings))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _digest(keys: np.ndarray, values: np.ndarray) -> str:
    return hashlib.sha256(keys.tobytes() + values.tobytes()).hexdigest()


def check_namespace(ns, where="reference cache") -> None:
    """A namespace names a folder of the cache, so it must be what `namespace` makes: 32 hex digits (an
    edited `reference.json` must not point the cache at another directory)."""
    if not isinstance(ns, str) or not re.fullmatch(r"[0-9a-f]{32}", ns):
        raise ValueError(
            f"{where}: namespace {ns!r:.60} is not a 32-digit hex hash; the record was edited or damaged "
            "(a namespace names a folder of the cache, never another path)"
        )


class RefCache:
    def __init__(self, root: str | Path, ns: str, writer: bool = True):
        check_namespace(ns)
        self.dir = Path(root) / ns
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = writer  # False: never changes the directory (a rank other than 0)
        self.values: dict[bytes, float] = {}
        self.rejected: list[Path] = []  # shards found corrupted in this session
        for shard in sorted(self.dir.glob("*.safetensors")):
            self._load(shard)

    def _load(self, shard: Path) -> None:
        try:
            from safetensors import safe_open

            with safe_open(str(shard), framework="numpy") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(shard))
            keys, values = tensors["keys"], tensors["values"]
            ok = (
                meta.get("format") == FORMAT
                and keys.dtype == np.uint8
                and keys.ndim == 2
                and keys.shape[1] == 16
                and values.dtype == np.float32
                and values.shape == (keys.shape[0],)
                and meta.get("sha256") == _digest(keys, values)
            )
        except Exception:  # unreadable header, truncated file, missing tensors: all mean "do not trust"
            ok = False
        if not ok and not self.writer:
            return  # not trusted; the writer moves it aside
        if not ok:
            bad = shard.with_suffix(".corrupt")
            os.replace(shard, bad)
            self.rejected.append(bad)
            warnings.warn(
                f"reference cache: {shard} failed verification; moved to {bad.name}, its sequences "
                "will be recomputed",
                stacklevel=2,
            )
            return
        for k, v in zip(keys, values):
            self.values[k.tobytes()] = float(v)

    def __len__(self) -> int:
        return len(self.values)

    def missing(self, seqs: list[Sequence]) -> list[int]:
        """Indices of `seqs` without a cached value (each distinct sequence once)."""
        seen, out = set(), []
        for i, s in enumerate(seqs):
            k = sequence_key(s)
            if k not in self.values and k not in seen:
                seen.add(k)
                out.append(i)
        return out

    def get(self, seqs: list[Sequence]) -> torch.Tensor:
        return torch.tensor([self.values[sequence_key(s)] for s in seqs], dtype=torch.float32)

    def put(self, seqs: list[Sequence], values: torch.Tensor, write: bool = True) -> Path | None:
        """Store new values as one verified shard; returns its path (None if nothing was new). With
        `write=False` (or `writer=False`) they are only kept in memory: another process writes them."""
        new = {}
        for s, v in zip(seqs, values.tolist()):
            k = sequence_key(s)
            if k not in self.values:
                new[k] = v
        if not new:
            return None
        if not (write and self.writer):
            self.values.update(new)
            return None
        keys = np.frombuffer(b"".join(new), dtype=np.uint8).reshape(-1, 16).copy()
        vals = np.asarray(list(new.values()), dtype=np.float32)
        name = hashlib.sha256(keys.tobytes()).hexdigest()[:16] + ".safetensors"
        path = self.dir / name
        meta = {"format": FORMAT, "sha256": _digest(keys, vals), "count": str(len(vals))}
        atomic_write(path, lambda tmp: save_file({"keys": keys, "values": vals}, str(tmp), metadata=meta))
        self.values.update(new)
        return path
