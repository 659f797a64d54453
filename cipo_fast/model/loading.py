"""Loading a causal LM (and its tokenizer) ready for packed training on one device.

`load_model(source, ModelOptions(...))` resolves the source (`sources`), picks the attention
(`attention.pick_attention`: flash-attn varlen on CUDA when installed, else `cipo_varlen`), moves the
model to its device, applies Liger's RMSNorm/SwiGLU/RoPE kernels on CUDA when installed (never its
LM-head kernels: the head is cipo-fast's own fused op), turns on activation checkpointing every n-th
decoder layer (`checkpointing`: attention's outputs kept) and wraps the model in LoRA adapters when asked.
`model_fingerprint` hashes the weights: the key of everything cached per model (reference log-probs).
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from cipo_fast.model.attention import pick_attention, register_varlen_attention
from cipo_fast.model.checkpointing import enable_checkpointing
from cipo_fast.model.sources import resolve_source


@dataclass(frozen=True)
class ModelOptions:
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    trust_remote_code: bool = False
    lora_r: int = 0  # 0 = full fine-tuning
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    checkpoint_every: int = 0  # activation checkpointing of every n-th decoder layer; 0 = off
    checkpoint_keep_attention: bool = True  # checkpointing keeps attention's outputs (`checkpointing`)
    liger: bool = True  # Liger's RMSNorm/SwiGLU/RoPE kernels on CUDA when installed


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`; anything else is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: cipo-fast runs on cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, source, "tokenizer", trust_remote_code=trust_remote_code)
    if tok.eos_token_id is None:
        raise ValueError(f"--model {source}: the tokenizer has no EOS token; completions must end with one")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _from_pretrained(auto_class, source: str, what: str, **kwargs):
    """`auto_class.from_pretrained` of `--model`, with every way it can fail (no such directory, offline
    hub, damaged weights, foreign code) turned into a ValueError that names the source."""
    path = resolve_source(source)
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except Exception as e:  # OSError, SafetensorError, RuntimeError, ValueError, ...: all mean "cannot load"
        if "trust_remote_code" in str(e):
            raise ValueError(
                f"--model {source}: the model needs its own code; pass --trust-remote-code if you trust it"
            ) from e
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise ValueError(f"--model {source}: cannot load the {what} ({type(e).__name__}: {first})") from e


def load_model(source: str, opts: ModelOptions):
    """Load `(model, tokenizer)` ready for packed training on `opts.device`."""
    from transformers import AutoModelForCausalLM

    if opts.dtype not in DTYPES:
        raise ValueError(f"--dtype: expected one of {', '.join(DTYPES)}, got {opts.dtype!r}")
    device = resolve_device(opts.device)
    register_varlen_attention()
    tokenizer = load_tokenizer(source, opts.trust_remote_code)
    model = _from_pretrained(
        AutoModelForCausalLM,
        source,
        "model",
        dtype=DTYPES[opts.dtype],
        attn_implementation=pick_attention(device),
        trust_remote_code=opts.trust_remote_code,
    )
    return prepare_model(model, opts, device), tokenizer


def prepare_model(model, opts: ModelOptions, device: torch.device | None = None):
    """Ready a built model for packed training (the module docstring): on its device, Liger's body kernels
    on CUDA, activation checkpointing, LoRA. `load_model` ends with it; a model built from a config (a
    benchmark's random model) gets the same set-up from it. The model's attention must already be picked."""
    device = resolve_device(opts.device) if device is None else device
    model.to(device)
    if opts.liger and device.type == "cuda":
        _apply_liger(model)
    if opts.checkpoint_every > 0:
        enable_checkpointing(model, opts.checkpoint_every, opts.checkpoint_keep_attention)
    if opts.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=opts.lora_r,
            lora_alpha=opts.lora_alpha,
            lora_dropout=opts.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
        if opts.checkpoint_every > 0:
            model.enable_input_require_grads()
    return model


def _apply_liger(model) -> None:
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        return
    # only the model-body kernels: the LM head + loss is cipo-fast's own fused op
    _apply_liger_kernel_to_instance(
        model=model,
        rope=True,
        rms_norm=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
    )


def base_model(model):
    """The transformers model under a possible PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def model_fingerprint(model, skip: tuple[str, ...] = ()) -> str:
    """A content hash of the model's weights (names, shapes, dtypes and bytes), ignoring names with `skip`."""
    return state_fingerprint(base_model(model).state_dict().items(), skip)


def state_fingerprint(named_tensors, skip: tuple[str, ...] = ()) -> str:
    """`model_fingerprint` of (name, tensor) items in state-dict order; a tensor seen before under another
    name (a tied weight) counts once."""
    h = hashlib.blake2b(digest_size=16)
    seen = set()
    for name, t in named_tensors:
        if t.data_ptr() in seen or any(k in name for k in skip):  # tied weights appear once
            continue
        seen.add(t.data_ptr())
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy())  # no copy for CPU tensors
    return h.hexdigest()


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*use_cache=True.*gradient checkpointing.*")


def save_pretrained_atomic(model, tokenizer, target: Path, state_dict: dict | None = None) -> Path:
    """An HF-format directory (safetensors) that `AutoModelForCausalLM.from_pretrained` loads, written
    next to `target` and renamed over it; `state_dict` replaces the model's own (a sharded model's,
    gathered)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    extra = {} if state_dict is None else {"state_dict": state_dict}
    model.save_pretrained(tmp, safe_serialization=True, **extra)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def save_final(
    model, tokenizer, run_dir: Path, lora: bool, merged: bool = False, state_dict: dict | None = None
) -> str:
    """The run's final model in `run_dir`: `model/` (full fine-tuning) or `adapter/` (LoRA; with `merged`
    also the merged `model/`). Returns the name of the directory to load (`model` or `adapter`).
    `state_dict`: the weights to write instead of the model's own (the full state dict of a sharded model)."""
    name = "adapter" if lora else "model"
    save_pretrained_atomic(model, tokenizer, run_dir / name, state_dict)
    if lora and merged:
        save_pretrained_atomic(model.merge_and_unload(), tokenizer, run_dir / "model")
        return "model"
    return name
