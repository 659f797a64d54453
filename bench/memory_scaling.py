"""Peak memory and time of ONE DPO training step against sequence length: cipo-fast vs TRL 1.16 defaults.

Question: how does the memory of a training step grow with the number of tokens, and where does each
trainer run out of memory on this machine? cipo-fast's loss path keeps O(tokens x d) (final hidden states,
one logsumexp per token) plus a fixed chunk x V buffer; an unfused LM head keeps O(tokens x V) logits.

Each point is one preference pair (batch 1, one optimizer step) whose chosen and rejected sides are a short
prompt + exactly L completion tokens (EOS included): plain text made of single-token English words drawn with
a fixed seed, so both trainers tokenize it identically (checked) and no padding is needed. Both sides have
the same length. Each point runs in a fresh process with its address space capped (`RLIMIT_AS`, default
22 GiB), so an out-of-memory fails the point ("OOM") instead of taking the machine down.

* cipo-fast: `cipo-fast train --method dpo` defaults (token budget 4096 -- a longer pair gets a micro-batch
  of its own --, activation checkpointing of every layer, reference log-probs precomputed by the policy;
  fresh cache directory per point) with `--max-steps 1 --batch-size 1 --prompt-format raw` and a
  `--max-length` that cuts nothing. Step time = its `step_time_s`.
  `cipo-fast-recompute` (only with `--systems`): the same with `--checkpoint-attention recompute`.
* TRL: DPOTrainer defaults (gradient checkpointing, a second model as the reference, fused AdamW) with
  `use_cpu=True, bf16=False, per_device_train_batch_size=1, max_steps=1` and `max_length=None` (its default
  1024 would cut the sequences). Step time = `on_step_begin` -> `on_step_end`.

Peak memory is the child's whole-process peak RSS (`ru_maxrss`): Python, libraries, model, optimizer state,
the reference pass, the step, and for cipo-fast the final save. The fixed part cancels in the fitted slope
(bytes per token of the step), which is compared with d x 4 (one fp32 hidden vector), d x 4 x (layers + 1)
(checkpointed layer inputs + final hidden states) and V x 4 (one fp32 logits row).

The JSON also holds analytic estimates of each loss path's own memory (LM head + log-softmax + gather,
forward and backward: cipo-fast's chunked path, TRL 1.16's fused head, an unfused head), derived from the
code in `loss_path_memory.py`.

    python bench/memory_scaling.py                        # SmolLM2-135M, L = 512 ... 16384
    python bench/memory_scaling.py --model DIR --lengths 64,128 --out /tmp/bench --no-readme   # smoke
    python bench/memory_scaling.py --timeout 600 --points LOG   # reuse the points an earlier run printed
    python bench/memory_scaling.py --point cipo-fast 1024 --model-path DIR --data pair.jsonl --workdir W
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import (
    OUT,
    SEED,
    GiB,
    ModelShape,
    RssSampler,
    cipo_dpo_config,
    emit,
    error_summary,
    is_oom,
    machine,
    publish,
    resolve_model,
    run_child,
    trl_dpo_config,
    vm_peak_bytes,
)
from loss_path_memory import LOSS_PATH_FORMULAS, loss_path_row
from memory_table import plot, table

SYSTEMS = ("cipo-fast", "trl-default")
# on request (--systems): cipo-fast with checkpointing recomputing attention too (cipo_fast.model.checkpointing)
EXTRA_SYSTEMS = ("cipo-fast-recompute",)
PROMPT = "Tell me a very long story about a journey:"
WORD_SOURCE = (  # common English words; those that are one token with a leading space are used
    "the of and to in is was for on that with as it his by at from he her they be this had not are but "
    "one have an which she were their all we there been has when who more would will what up out them into "
    "some time so no about can than only its like other then also new after first two over may these way "
    "people could any most made my long little very just good where before through back years much well "
    "day old great same right still man life world own house small found last never under place while home "
    "city name road river night light water land story king"
)


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------


def synthetic_pair(tok, length: int) -> dict:
    """A pair whose sides are PROMPT + exactly `length` completion tokens (EOS included) for this tokenizer."""
    words = [
        w
        for w in dict.fromkeys(WORD_SOURCE.split())
        if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1
    ]
    rng = random.Random(SEED + length)

    def side() -> str:  # length - 1 words + the EOS both trainers append
        return "".join(" " + rng.choice(words) for _ in range(length - 1))

    pair = {"prompt": PROMPT, "chosen": side(), "rejected": side()}
    prompt_ids = tok(PROMPT)["input_ids"]
    for s in ("chosen", "rejected"):
        ours = prompt_ids + tok(pair[s], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        trl = tok(PROMPT + pair[s] + tok.eos_token)["input_ids"]
        assert ours == trl, f"{s}: TRL and cipo-fast tokenize the synthetic text differently"
        assert len(ours) == len(prompt_ids) + length, f"{s}: {len(ours) - len(prompt_ids)} != {length} tokens"
    return pair


# ----------------------------------------------------------------------------------------------------
# one point (child process)
# ----------------------------------------------------------------------------------------------------


def point_cipo(a: argparse.Namespace) -> dict:
    import torch

    from cipo_fast.trainers.preference import main

    work = Path(a.workdir)
    keep = "recompute" if a.point[0] == "cipo-fast-recompute" else "keep"
    cfg = cipo_dpo_config(
        a.model_path,
        a.data,
        work,
        batch_size=1,
        max_steps=1,
        max_length=a.max_length,
        checkpoint_attention=keep,
    )
    summary = main(cfg)
    metrics = work / "run" / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    step = [r for r in rows if "loss" in r][-1]
    return {
        "step_end": metrics.stat().st_mtime,  # the step's metrics row is the file's last write
        "step_time_s": step["step_time_s"],
        "tokens": step["tokens"],
        "loss": step["loss"],
        "ref_forward_tokens": summary["reference_precompute_tokens"],
        "truncated_sequences": summary["truncated_sequences"],
        "settings": {
            "token_budget": cfg.token_budget,
            "checkpoint_every": cfg.checkpoint_every,
            "checkpoint_attention": cfg.checkpoint_attention,
            "ref_mode": cfg.ref_mode,
            "max_length": cfg.max_length,
        },
        "threads": torch.get_num_threads(),
    }


def point_trl(a: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)
            self.end = time.time()

    timer = StepTimer()
    cfg = trl_dpo_config(a.workdir, per_device_train_batch_size=1, max_steps=1, max_length=None)
    pair = json.loads(Path(a.data).read_text())
    trainer = DPOTrainer(
        model=a.model_path,
        args=cfg,
        train_dataset=Dataset.from_list([pair]),
        processing_class=AutoTokenizer.from_pretrained(a.model_path),
        callbacks=[timer],
    )
    trainer.train()
    row = [r for r in trainer.state.log_history if "loss" in r and "num_tokens" in r][-1]
    return {
        "step_end": timer.end,
        "step_time_s": timer.times[-1],
        "tokens": int(row["num_tokens"]),
        "loss": row["loss"],
        "settings": {
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "precompute_ref_log_probs": cfg.precompute_ref_log_probs,
            "max_length": cfg.max_length,
        },
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------


def fit(points: list[tuple[int, int]]) -> dict | None:
    """Least-squares peak = a + slope * tokens over the successful points, and the slope of the last two."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    (x1, y1), (x2, y2) = points[-2], points[-1]
    return {
        "slope_bytes_per_token": slope,
        "intercept_bytes": my - slope * mx,
        "last_two_slope": (y2 - y1) / (x2 - x1),
    }


def failure_status(status: str, wall_s: float | None, timeout_s: float | None) -> str:
    """A point killed by the per-point time limit is a timeout, even though SIGKILL looks like an OOM kill."""
    if status in ("OOM", "error") and timeout_s is not None and wall_s is not None and wall_s >= timeout_s:
        return "timeout"
    return status


def load_points(path: Path) -> dict[tuple[int, str], dict]:
    """Per-point JSON lines printed by an earlier run (its stdout), by (L, system); later lines win."""
    points = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
            key = (int(r.pop("length")), str(r.pop("system")))
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise SystemExit(f"--points {path}:{lineno}: not a point line ({e})") from None
        r.pop("reused", None)
        if not str(r.get("status", "")).startswith("skipped"):
            points[key] = r
    return points


def measure(a: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    facts = machine()  # before anything runs (it records the load average)
    out = Path(a.out)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model_path = resolve_model(a.model, work)
    shape = ModelShape.from_dir(model_path)
    tok = AutoTokenizer.from_pretrained(model_path)
    prompt_tokens = len(tok(PROMPT)["input_ids"])
    lengths = [int(x) for x in a.lengths.split(",")]
    systems = a.systems.split(",")
    limit = int(a.mem_limit_gb * GiB)

    reused = load_points(Path(a.points)) if a.points else {}
    rows = []
    for length in lengths:
        data = work / f"pair_{length}.json"
        data.write_text(json.dumps(synthetic_pair(tok, length)))
        row = {
            "length": length,
            "tokens": 2 * (prompt_tokens + length),
            **loss_path_row(shape, prompt_tokens, length),
        }
        for name in systems:
            stop = next((r[name]["status"] for r in rows if r[name]["status"] in ("OOM", "timeout")), None)
            if stop:  # a longer pair needs more memory and time: a system that failed so is not rerun
                row[name] = {"status": f"skipped ({stop} at a shorter L)", "peak_rss_bytes": None}
                print(json.dumps({"length": length, "system": name, **row[name]}), flush=True)
                continue
            if (length, name) in reused:  # measured by an earlier run (--points)
                r = reused[(length, name)]
                r["status"] = failure_status(r["status"], r.get("process_wall_s"), a.timeout)
                row[name] = r
                print(json.dumps({"length": length, "system": name, "reused": True, **r}), flush=True)
                continue
            wd = work / f"{name}_{length}"
            args = [
                __file__,
                "--point",
                name,
                str(length),
                "--model-path",
                str(model_path),
                "--data",
                str(data),
            ]
            args += ["--workdir", str(wd), "--max-length", str(prompt_tokens + length + 8)]
            run = run_child(args, mem_limit_bytes=limit, timeout_s=a.timeout)
            r = run.result()
            if run.returncode != 0 or r is None:
                status = failure_status("OOM" if is_oom(run) else "error", run.wall_s, a.timeout)
                r = {"status": status, "error": error_summary(run)}
            else:
                r["status"] = "ok"
            r.update(peak_rss_bytes=run.peak_rss_bytes, process_wall_s=run.wall_s)
            row[name] = r
            shutil.rmtree(wd, ignore_errors=True)
            print(json.dumps({"length": length, "system": name, **r}), flush=True)
        rows.append(row)

    fits = {}
    for name in systems:
        ok = [(r["tokens"], r[name]["peak_rss_bytes"]) for r in rows if r[name]["status"] == "ok"]
        fits[name] = fit(ok)
        if fits[name]:
            s = fits[name]["slope_bytes_per_token"]
            fits[name].update(
                vs_hidden_row=s / (shape.d * 4),
                vs_checkpointed_activations=s / (shape.d * 4 * (shape.layers + 1)),
                vs_logits_row=s / (shape.vocab * 4),
            )
    first_oom = {
        name: next((r["length"] for r in rows if r[name]["status"] == "OOM"), None) for name in systems
    }
    first_timeout = {
        name: next((r["length"] for r in rows if r[name]["status"] == "timeout"), None) for name in systems
    }
    # the cap is on address space: how much more of it than RSS each process holds (libraries' reservations)
    vm_overhead = {
        name: statistics.median(
            [r[name]["vm_peak_bytes"] - r[name]["peak_rss_bytes"] for r in rows if r[name]["status"] == "ok"]
            or [0]
        )
        for name in systems
    }
    report = {
        "question": "peak memory and time of one DPO step vs pair length: cipo-fast vs TRL 1.16 defaults",
        "machine": facts,
        "model": a.model,
        "model_path": str(model_path),
        "shape": shape.__dict__,
        "prompt_tokens": prompt_tokens,
        "mem_limit_gib": a.mem_limit_gb,
        "reference_bytes_per_token": {
            "hidden_row_d_x_4": shape.d * 4,
            "checkpointed_activations_d_x_4_x_(layers+1)": shape.d * 4 * (shape.layers + 1),
            "logits_row_V_x_4": shape.vocab * 4,
        },
        "loss_path_formulas": LOSS_PATH_FORMULAS,
        "fits": fits,
        "first_oom_length": first_oom,
        "first_timeout_length": first_timeout,
        "timeout_s": a.timeout,
        "address_space_minus_rss_bytes": vm_overhead,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_scaling.json").write_text(json.dumps(report, indent=2))
    plot(report, systems, out / "memory_scaling.png")
    shutil.rmtree(work, ignore_errors=True)
    publish("bench-memory", table(report, systems), a.readme)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | an HF model directory")
    ap.add_argument("--lengths", default="512,1024,2048,4096,8192,16384", help="completion tokens per side")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--mem-limit-gb", type=float, default=22.0, help="address-space cap per point (GiB)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per point before it is killed")
    ap.add_argument("--out", default=str(OUT), help="where memory_scaling.json and .png go")
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    ap.add_argument(
        "--points",
        help="stdout of an earlier run: its per-point lines are reused (same --model, lengths and cap), "
        "only the missing points run",
    )
    # child entry point
    ap.add_argument("--point", nargs=2, metavar=("SYSTEM", "L"), help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.point:
        if a.point[0] not in SYSTEMS + EXTRA_SYSTEMS:
            raise SystemExit(
                f"--point: unknown system {a.point[0]!r}; valid: {', '.join(SYSTEMS + EXTRA_SYSTEMS)}"
            )
        sampler = RssSampler()
        r = (point_trl if a.point[0] == "trl-default" else point_cipo)(a)
        r["peak_rss_sampled_until_step_end_bytes"] = sampler.peak_until(r.pop("step_end"))
        r["vm_peak_bytes"] = vm_peak_bytes()  # address space, which the cap limits (> RSS)
        emit(r)
        return 0
    for name in a.systems.split(","):
        if name not in SYSTEMS + EXTRA_SYSTEMS:
            raise SystemExit(
                f"--systems: unknown system {name!r}; valid: {', '.join(SYSTEMS + EXTRA_SYSTEMS)}"
            )
    os.makedirs(a.out, exist_ok=True)
    return measure(a)


if __name__ == "__main__":
    sys.exit(main())
