"""One DPO training step on a GPU: cipo-fast's step against the textbook step TRL's default DPOTrainer runs, on
randomly initialised models of two real shapes. Part of `make gpu-check` (`bench/gpu_check.py`).

Question: at 2k and 8k tokens per side, how long does one optimizer step on one preference pair take, how
much GPU memory does it hold at its peak, and what FLOP rate does it reach?

Models are built from their configs (no download): SmolLM2-135M (its config.json) and a Qwen2-1.5B-shaped
model (hidden 1536, 28 layers, 12 heads / 2 KV heads, MLP 8960, V = 151936, tied embeddings: Qwen2-1.5B's
config.json). fp32 master weights, bf16 autocast, fused AdamW, activation checkpointing of every layer,
one pair of a `PROMPT`-token prompt + L random completion tokens per side. Correctness (a failure fails the
check): at the same initial weights both systems' log-probs of the pair agree to `REL_TOL`.

    cipo-fast   `cipo_fast.train.step.optimizer_step`: the pair packed into one stream with its prompt
                stored once, packed causal attention, the fused log-prob op; reference log-probs from the
                cache (precomputed once per data set, so not part of a step)
    textbook    what TRL 1.x's DPOTrainer computes by default: the two sides as a batch of 2, SDPA
                attention, full `[2, T, V]` logits, log-softmax in fp32, and a forward pass of a second
                (reference) model every step. TRL itself is not run: it needs a tokenizer and `datasets`,
                neither of which the GPU machine has.

Time: the median of `repeats` steps after one warm-up step, `torch.cuda.synchronize()` around each. Memory:
the peak of `max_memory_allocated` over the timed steps (weights, AdamW state, reference model and
activations included). FLOP rate: the model FLOPs of both sides (`common.flops_per_token`: 6 x parameters
+ causal attention per token; no recomputation, no reference forward counted) per second.

    python bench/gpu_steps.py                     # on a CUDA machine; prints BENCH_RESULT {json}
    python bench/gpu_steps.py --device cpu --models tiny --lengths 64 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inplace import use_working_tree

use_working_tree()

from common import ModelShape, emit, flops_per_token  # noqa: E402

# cipo-fast-fused: `--backend chunked`, the loss inside the LM-head op (cipo_fast.ops.fused_loss)
SYSTEMS = ("cipo-fast", "cipo-fast-fused", "textbook")
PROMPT = 64
LR = 1e-6
# relative disagreement of the two systems' initial log-prob sums that fails the check: bf16 rounds each
# token's log-prob to ~2^-8 of itself (~0.05 nats at -12); over L tokens the sum's error is ~ sqrt(L) x
# that, far below 1 % of a sum of L x ~12 nats
REL_TOL = 1e-2
MODELS = {
    "smollm2-135m": {  # HuggingFaceTB/SmolLM2-135M-Instruct config.json (max positions raised for 8k sides)
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 32768,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    },
    "qwen2-1.5b": {  # Qwen/Qwen2-1.5B config.json
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "tiny": {  # the smoke test's
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    },
}


def build(name: str, attn: str, device):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(MODELS[name])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32).to(device)


def random_pair(vocab: int, length: int, seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (PROMPT + 2 * length,), generator=g).tolist()
    return ids[:PROMPT], ids[PROMPT : PROMPT + length], ids[PROMPT + length :]


class FixedReference:
    """Reference log-probs as the cache hands them out: numbers, no model (here the policy's own before
    its first step, so that the first step's loss is ln 2, as the textbook step's is)."""

    def __init__(self, logps):
        self.values = logps

    def get(self, seqs):
        return self.values[: len(seqs)]


def cipo_step(name: str, length: int, device, backend: str = "auto"):
    import torch

    from cipo_fast.config import TrainConfig
    from cipo_fast.data.packing import Sequence, collate
    from cipo_fast.model.attention import pick_attention, register_varlen_attention
    from cipo_fast.model.forward import micro_batch_logps, supports_prefix_sharing
    from cipo_fast.model.loading import ModelOptions, prepare_model
    from cipo_fast.train.policy import make_policy
    from cipo_fast.train.step import optimizer_step

    register_varlen_attention()
    dev = torch.device(device)
    model = build(name, pick_attention(dev), dev)
    model = prepare_model(model, ModelOptions(device=device, checkpoint_every=1), dev)
    cfg = TrainConfig(
        method="dpo", model="(random)", data="-", out="-", lr=LR, token_budget=2 * length + PROMPT,
        backend=backend,
    )  # fmt: skip
    policy = make_policy(cfg, model)
    prompt, chosen, rejected = random_pair(model.config.vocab_size, length)
    groups = [(Sequence(tuple(prompt), tuple(chosen)), Sequence(tuple(prompt), tuple(rejected)))]
    with torch.no_grad():  # packed as the step packs it
        mb = collate(groups, [0], share_prefix=cfg.share_prefix and supports_prefix_sharing(model))
        ref = FixedReference(micro_batch_logps(model, mb, cfg.backend, policy.autocast).cpu())
    steps = iter(range(1, 10**6))

    def step():
        return optimizer_step(policy, groups, [], ref, cfg, step=next(steps), lr=LR, position={})["loss"]

    return model, step, policy.autocast, ref.values.tolist()


def textbook_step(name: str, length: int, device):
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    model = build(name, "sdpa", dev)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, fused=dev.type in ("cpu", "cuda"))
    prompt, chosen, rejected = random_pair(model.config.vocab_size, length)
    ids = torch.tensor([prompt + chosen, prompt + rejected], device=dev)
    scored = torch.zeros_like(ids[:, 1:], dtype=torch.bool)
    scored[:, PROMPT - 1 :] = True  # position t predicts token t + 1: the completion's tokens
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if dev.type == "cuda" else None

    def logps(m):
        if amp is not None:
            with amp:
                logits = m(input_ids=ids).logits
        else:
            logits = m(input_ids=ids).logits
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None])[..., 0]
        return (lp * scored).sum(-1)

    with torch.no_grad():
        initial = logps(reference).tolist()

    def step():
        policy = logps(model)
        with torch.no_grad():
            ref = logps(reference)
        loss = -F.logsigmoid(0.1 * ((policy[0] - ref[0]) - (policy[1] - ref[1])))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return model, step, torch.bfloat16 if amp is not None else None, initial


def measure(system: str, name: str, length: int, device: str, repeats: int) -> dict:
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if system == "textbook":
        model, step, autocast, initial = textbook_step(name, length, device)
    else:
        backend = "chunked" if system == "cipo-fast-fused" else "auto"
        model, step, autocast, initial = cipo_step(name, length, device, backend)

    def timed():
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, loss

    first, _ = timed()
    runs = [timed() for _ in range(repeats)]
    times = [t for t, _ in runs]
    fields = dict(MODELS[name])
    shape = ModelShape.from_config(fields)
    per_token, _ = flops_per_token(shape, [PROMPT + length] * 2)
    tokens = 2 * (PROMPT + length)
    row = {
        "system": system,
        "model": name,
        "length": length,
        "tokens": tokens,
        "median_s": statistics.median(times),
        "times_s": times,
        "first_step_s": first,
        "losses": [loss for _, loss in runs],
        "initial_logps": initial,
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "model_tflops": per_token * tokens / statistics.median(times) / 1e12,
        "autocast": None if autocast is None else str(autocast).removeprefix("torch."),
    }
    return row


def run(a: argparse.Namespace) -> dict:
    import torch

    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("gpu_steps: --device cuda but torch sees no CUDA GPU")
    out = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "prompt": PROMPT,
        "points": [],
        "checks": [],
    }
    for name in a.models:
        for length in a.lengths:
            for system in a.systems:
                row = {"system": system, "model": name, "length": length}
                try:
                    row = measure(system, name, length, a.device, a.repeats)
                except torch.cuda.OutOfMemoryError:
                    row["status"] = "OOM"
                if cuda:
                    torch.cuda.empty_cache()
                out["points"].append(row)
                print(
                    f"[gpu_steps] {name} L={length} {system}: {row.get('median_s', row.get('status'))}",
                    flush=True,
                )
            out["checks"].append(agreement(out["points"], name, length))
    out["ok"] = all(c["ok"] is not False for c in out["checks"])
    return out


def agreement(points: list[dict], name: str, length: int) -> dict:
    """Both systems' log-probs of the pair at the same initial weights must agree: cipo-fast's packed,
    prefix-shared forward + fused op against HF's own forward + full logits (`REL_TOL` relative to the
    sums' size; None when a system did not run)."""
    got = {
        p["system"]: p.get("initial_logps") for p in points if p["model"] == name and p["length"] == length
    }
    a, b = got.get("cipo-fast"), got.get("textbook")
    check = {"model": name, "length": length, "ok": None}
    if a and b:
        rel = max(abs(x - y) / max(1.0, abs(y)) for x, y in zip(a, b))
        check.update(logps_rel=rel, ok=rel <= REL_TOL)
    return check


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", type=lambda s: s.split(","), default=["smollm2-135m", "qwen2-1.5b"])
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[2048, 8192])
    p.add_argument("--systems", type=lambda s: s.split(","), default=list(SYSTEMS))
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    unknown = sorted(set(a.models) - set(MODELS))
    if unknown:
        p.error(f"--models {unknown}: expected some of {', '.join(MODELS)}")
    result = run(a)
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
