"""`cipo-fast train` under torchrun (FSDP2) on the CPU: two gloo processes against one process.

One process trains the tiny model for 10 steps (constant learning rate; step 4's weights are in its
checkpoint 4). Against it:

* two processes, 4 steps: the same metrics rows (loss, grad norm, log-probs, rewards, tokens) and
  weights; one metrics row per step, one reference-cache shard holding every sequence; DCP checkpoints.
  Then that 2-process run resumes in one process to step 10 and ends where the single run ends.
* two processes, rank 0 SIGKILLed mid-run: the run resumes on two processes and ends the same.
* NPO with a KL retain term and per-step (lazy) reference sums: a one-process checkpoint resumes on two.
* the library under torchrun (this file run as a script): gradients of the fused head, tied and untied,
  read after the root's forward and as a sharded DTensor, equal one process's; generation with the
  batches dealt out to the ranks (`distributed.generating`) gives one process's texts and leaves the
  model sharded; `score_across` then equals `score_sequences`; the content hash of the sharded weights
  (a reference-cache namespace) is one process's.

Why the grad norm is compared: AdamW is invariant to the gradient's scale, so a wrong normalisation
(ranks averaged instead of summed) leaves losses and weights almost unchanged; the norm of the reduced
gradient is what shows it. Weights: float summation order differs (micro-batches, reduce-scatter), and
Adam turns noise-level differences of a gradient entry into visible ones, so the bound is relative to
what training changed: per tensor, the difference is under 1e-3 of the change in norm (measured: 5e-5
after 10 steps), and no entry is off by a tenth of one step's largest move (measured: 3e-5; lr = 1e-3).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import train_config, write_jsonl

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this torch build has no torch.distributed with the gloo backend (the 2-process tests need it)",
)

PAIRS = [
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"},
    {"prompt": "The capital of France is", "chosen": " Paris, a city on the Seine.", "rejected": " London."},
    {
        "prompt": "Water freezes at",
        "chosen": " 0 degrees Celsius.",
        "rejected": " 50 degrees Celsius, or so.",
    },
    {
        "prompt": "Q: Who wrote Hamlet?\nA:",
        "chosen": " William Shakespeare.",
        "rejected": " Charles Dickens.",
    },
    {"prompt": "Name a prime number:", "chosen": " 7", "rejected": " 9, which is odd."},
]
STEPS = 10
OPTIONS = dict(
    method="dpo",
    prompt_format="raw",
    batch_size=2,
    lr=1e-3,
    token_budget=64,
    scheduler="constant",  # step k's learning rate does not depend on the run's length
    save_steps=4,  # step 4's weights of the single run, in its checkpoint
    keep_checkpoints=20,
    progress=False,
)
METRICS = (
    "loss",
    "grad_norm",
    "logps/chosen",
    "logps/rejected",
    "rewards/margins",
    "logps/policy",
    "logps/reference",
    "loss/retain",
    "loss/retain_kl",
)


def argv(**opts) -> list[str]:
    out = ["train"]
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        out += ([flag] if v else [f"--no-{k.replace('_', '-')}"]) if isinstance(v, bool) else [flag, str(v)]
    return out


def torchrun(args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def launch(cmd: list[str], timeout: float = 240) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} ... hung for {timeout} s:\n{out.decode()[-3000:]}")
    assert proc.returncode == 0, out.decode()[-4000:]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_rows_match(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert g["tokens"] == w["tokens"], (g["step"], g["tokens"], w["tokens"])
        for k in METRICS:
            assert (k in g) == (k in w), (g["step"], k)
            # the fp32 norm of 3M gradient entries is itself good to ~3e-5 (13.1191 vs 13.1194 in fp64)
            rel = 1e-4 if k == "grad_norm" else 1e-5
            # a reward is beta x a difference of fp32 sums of hundreds of log-probs (each good to ~1e-7
            # of its size): it cancels, so it is bounded by the sums' size, not its own
            scale = abs(w.get("logps/chosen", 0.0)) + abs(w.get("logps/rejected", 0.0))
            tol = max(1e-6, 1e-7 * scale) if k.startswith("rewards/") else 1e-6
            if k in w:
                assert g[k] == pytest.approx(w[k], rel=rel, abs=tol), (g["step"], k, g[k], w[k])


def assert_weights_match(got: dict, want: dict, init: dict) -> None:
    """Per tensor: the difference is under 1e-3 of the training's change (in norm); no entry is off by one
    step's largest move (lr = 1e-3), and at most one entry in 10^5 by a tenth of it. Adam moves an entry by
    about lr whatever its gradient's size, so an entry whose gradient nearly cancels (a tied embedding row
    of a token in no sequence gets only the LM head's small sum) follows the sign of a sum whose fp32
    rounding depends on the reduction order (one process vs an all-reduce of two): such an entry can differ
    by a fraction of a step on one host and not on another (0.117 of a step on the Intel Xeon host, under
    0.1 on the AMD EPYC). A gradient not reduced, or reduced twice, moves most entries by whole steps."""
    assert got.keys() == want.keys()
    for k in want:
        diff = (got[k] - want[k]).abs()
        assert float(diff.norm()) <= 1e-3 * float((want[k] - init[k]).norm()), (k, float(diff.norm()))
        assert float(diff.max()) < 1e-3, (k, float(diff.max()))
        assert int((diff >= 1e-4).sum()) <= max(1, diff.numel() // 100_000), (k, int((diff >= 1e-4).sum()))


def loss_rows(run: Path) -> list[dict]:
    return [r for r in rows(run) if "loss" in r]


def final(run: Path) -> dict[str, torch.Tensor]:
    return weights(run / "model" / "model.safetensors")


def train_cli(opts: dict, **over) -> list[str]:
    """`torchrun --nproc-per-node=2 -m cipo_fast.cli train ...` with `opts` and `over`."""
    return torchrun(["-m", "cipo_fast.cli", *argv(**{**opts, **over})])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """In-process runs on one thread, like each torchrun worker (OMP_NUM_THREADS=1): the tiny model's steps
    are too small to share, and on a busy 2-core machine two threads made them 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single(tiny_model_dir, tmp_path_factory) -> tuple[Path, dict, dict]:
    """The one-process run the 2-process runs are compared against: (run directory, its options, the
    initial weights)."""
    from cipo_fast.trainers.preference import main as train

    root = tmp_path_factory.mktemp("dist")
    opts = dict(
        OPTIONS,
        model=str(tiny_model_dir),
        data=str(write_jsonl(root / "pairs.jsonl", PAIRS)),
        cache_dir=str(root / "cache-single"),
    )
    train(train_config(**opts, out=str(root / "single"), max_steps=STEPS))
    return root / "single", opts, weights(tiny_model_dir / "model.safetensors")


@needs_gloo
def test_two_processes_match_one_then_resume_in_one(single):
    from cipo_fast.trainers.preference import main as train

    ref_run, opts, init = single
    root = ref_run.parent
    run, cache = root / "two", root / "cache-two"
    launch(train_cli(opts, cache_dir=cache, out=run, max_steps=4))

    assert_rows_match(loss_rows(run), loss_rows(ref_run)[:4])
    assert [r["step"] for r in rows(run)] == [0, 1, 2, 3, 4]  # the reference row, then one row per step
    step4 = weights(ref_run / "checkpoints" / "step-00000004" / "model.safetensors")
    assert_weights_match(final(run), step4, init)
    # the reference sums were computed once and written once: one shard with every sequence
    (ns_dir,) = cache.iterdir()
    (shard,) = ns_dir.iterdir()
    assert shard.suffix == ".safetensors"
    assert weights(shard)["keys"].shape[0] == 2 * len(PAIRS)
    assert [p.name for p in (root / "cache-single").iterdir()] == [ns_dir.name]  # the same namespace
    state = json.loads((run / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert state["format"] == "dcp" and state["world_size"] == 2
    assert {"dcp/.metadata", "dcp/__0_0.distcp", "dcp/__1_0.distcp"} <= set(state["sha256"])

    # the 2-process checkpoint resumes in one process and ends where the single run ends
    train(train_config(**{**opts, "cache_dir": str(cache)}, out=str(run), max_steps=STEPS, resume=True))
    assert_rows_match(loss_rows(run), loss_rows(ref_run))
    assert_weights_match(final(run), final(ref_run), init)


def _workers(agent: int) -> dict[int, int]:
    """rank -> pid of the worker processes of the torchrun agent `agent` (Linux /proc)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != agent:
                continue
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        out.update({int(e[5:]): int(stat.parent.name) for e in env if e.startswith(b"RANK=")})
    return out


@needs_gloo
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds torchrun's workers through /proc")
def test_rank_killed_mid_run_resumes_and_matches(single):
    ref_run, opts, init = single
    root = ref_run.parent
    run, cache = root / "killed", root / "cache-killed"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    agent = subprocess.Popen(
        train_cli(opts, cache_dir=cache, out=run, max_steps=STEPS, save_steps=1),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latest = root / "killed.partial" / "checkpoints" / "latest"  # a run lives in OUT.partial until it ends
    deadline = time.time() + 180
    try:
        while time.time() < deadline and agent.poll() is None:
            if latest.is_file() and latest.read_text().strip() >= "step-00000003":
                break
            time.sleep(0.01)
        ranks = _workers(agent.pid)
        assert 0 in ranks, f"torchrun's workers not found ({ranks}); the run may have ended"
        os.kill(ranks[0], signal.SIGKILL)  # rank 0: the one that writes
        agent.wait(timeout=120)  # torchrun sees its dead worker and stops the other
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
    assert agent.returncode != 0
    assert not run.exists(), "the run finished before it could be killed"

    launch(train_cli(opts, cache_dir=cache, out=run, max_steps=STEPS, save_steps=1, resume=True))
    assert [r["step"] for r in loss_rows(run)] == list(range(1, STEPS + 1))  # none lost, none twice
    assert_rows_match(loss_rows(run), loss_rows(ref_run))
    assert_weights_match(final(run), final(ref_run), init)


@needs_gloo
def test_npo_kl_retain_lazy_reference_resumes_from_one_process_on_two(tiny_model_dir, tmp_path):
    """NPO on single sequences, a KL retain term (frozen reference on every rank) and reference sums
    computed per step (`--ref-mode lazy`): 1 step in one process, resumed on two to step 6 (step 2 has
    sequences nobody scored yet), against 6 steps in one process."""
    from cipo_fast.trainers.preference import main as train

    forget = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    retain = [{"prompt": p["prompt"], "completion": p["rejected"]} for p in PAIRS]
    opts = dict(
        OPTIONS,
        method="npo",
        model=str(tiny_model_dir),
        data=str(write_jsonl(tmp_path / "forget.jsonl", forget)),
        retain=str(write_jsonl(tmp_path / "retain.jsonl", retain)),
        retain_loss="kl",
        ref_mode="lazy",
        batch_size=3,
        save_steps=0,
    )
    one, mixed = tmp_path / "one", tmp_path / "mixed"
    train(train_config(**opts, out=str(one), max_steps=6, cache_dir=str(tmp_path / "cache-one")))
    train(train_config(**opts, out=str(mixed), max_steps=1, cache_dir=str(tmp_path / "cache-mixed")))
    launch(train_cli(opts, out=mixed, max_steps=6, resume=True, cache_dir=tmp_path / "cache-mixed"))
    assert_rows_match(loss_rows(mixed), loss_rows(one))
    assert [r["ref_forward_tokens"] > 0 for r in loss_rows(mixed)] == [True, True, False, False, False, False]
    assert_weights_match(final(mixed), final(one), weights(tiny_model_dir / "model.safetensors"))


@needs_gloo
def test_fused_head_and_scoring_under_torchrun(tiny_model_dir, tmp_path):
    launch(torchrun([__file__, str(tiny_model_dir), str(tmp_path / "result.json")]))
    result = json.loads((tmp_path / "result.json").read_text())
    for case, err in result["grad_err"].items():
        assert err < 1e-6, (case, err)
    assert result["score_err"] < 1e-5
    assert result["texts"] == result["texts_one"]  # batch by batch the same rows and generators
    assert len({t for job in result["texts"] for outs in job for t in outs}) > 3  # not one text everywhere
    assert result["rows_per_rank"] == [5, 4]  # batches 0, 2, 4 on rank 0; 1, 3 on rank 1
    assert result["resharded"]
    assert result["same_hash"]  # a sharded model's reference namespace is the one its full weights give


# ---- no processes: the split, and what the sharded trainer refuses ----


def test_balance_gives_every_item_once_within_one_item_of_even():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from cipo_fast.train.balance import balance

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(1, 500), max_size=40), st.integers(1, 8))
    def check(sizes, parts):
        out = balance(sizes, parts)
        assert sorted(i for p in out for i in p) == list(range(len(sizes)))
        loads = [sum(sizes[i] for i in p) for p in out]
        assert max(loads) - min(loads) <= max(sizes, default=0)  # Graham's LPT bound
        assert out == balance(sizes, parts)  # deterministic

    check()


def test_share_step_keeps_pairs_and_counts_the_passes_pack_makes():
    """Pairs of sizes (6, 6), (3, 3), (2, 2), (1, 1) over 2 ranks, budget 12: rank 0 gets the largest
    pair (12 tokens, one bin), rank 1 the other three (12 tokens, one bin); retain sequences 5, 4, 3:
    rank 0 gets 5, rank 1 gets 4 + 3 (two of 7, one bin). Passes: 2 on each rank."""
    from cipo_fast.data.packing import Sequence, pack
    from cipo_fast.train.balance import share_step

    def seq(n):
        return Sequence((1,), (2,) * (n - 1))

    groups = [(seq(n), seq(n)) for n in (1, 6, 3, 2)]
    retain = [seq(5), seq(4), seq(3)]
    shares = [share_step(groups, retain, r, 2, 12, share_prefix=False) for r in (0, 1)]
    assert [s.groups for s in shares] == [(1,), (0, 2, 3)]
    assert [s.retain for s in shares] == [(0,), (1, 2)]
    for s in shares:
        made = len(pack([groups[i] for i in s.groups], 12)) + len(pack([(retain[i],) for i in s.retain], 12))
        assert made <= s.passes == 2
    assert shares[0].filler == groups[0]


def test_sharded_trainer_refuses_what_it_does_not_do(monkeypatch, tmp_path):
    from cipo_fast import fit
    from cipo_fast.train import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    base = dict(model="m", data="d", out=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="cipo-variant paper under torchrun"):
        fit(train_config(method="cipo", cipo_variant="paper", **base))
    with pytest.raises(ValueError, match="r2mu under torchrun"):
        fit(train_config(method="r2mu", retain="r", r2mu_cot_weight=0, **base))
    with pytest.raises(ValueError, match="cpu-offload"):
        distributed.init(train_config(method="dpo", device="cpu", fsdp_cpu_offload=True, **base))
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        distributed.init(train_config(method="dpo", device="cuda:1", **base))
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.init(train_config(method="dpo", **base)) is None  # one process: no process group


# ---- the worker: this file under torchrun ----


def _worker(model_dir: str, out: str) -> None:
    """Per head layout (tied, untied) and way of reading the head weight (after the root's forward, or as a
    sharded DTensor before it), the gradient of `-sum(log p) / N` over 4 sequences, 2 per rank, against
    the same loss in one process on an unsharded copy; and `score_across` against `score_sequences`."""
    from torch.distributed.tensor import DTensor

    from cipo_fast.data.packing import Sequence, collate
    from cipo_fast.model import generation
    from cipo_fast.model.forward import forward_hidden, lm_head_weight, micro_batch_logps, score_sequences
    from cipo_fast.model.generation import GenConfig, generate_many, make_strategies
    from cipo_fast.model.loading import ModelOptions, load_model, load_tokenizer, model_fingerprint
    from cipo_fast.ops.logprobs import sequence_logprobs
    from cipo_fast.train import distributed

    world = distributed.World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), 0, torch.device("cpu"))
    dist.init_process_group("gloo")
    seqs = [
        Sequence((1, 5, 6, 7), (8, 9, 10, 2)),
        Sequence((1, 5, 11), (12, 2)),
        Sequence((1, 3), (4, 4, 4, 2)),
        Sequence((1, 30, 31), (40, 2)),
    ]

    loaded, _ = load_model(model_dir, ModelOptions())

    def tiny(tied: bool):
        model = copy.deepcopy(loaded)
        if not tied:
            embed = model.get_input_embeddings().weight
            model.lm_head = torch.nn.Linear(embed.shape[1], embed.shape[0], bias=False)
            model.lm_head.weight = torch.nn.Parameter(embed.detach().flip(0).clone())
            model.config.tie_word_embeddings = False
        return model

    def logps(model, mb, read_before: bool):
        if not read_before:
            return micro_batch_logps(model, mb, "chunked")
        weight = lm_head_weight(model)  # the root has not run: a sharded DTensor, gathered here
        hidden = forward_hidden(model, mb.input_ids, mb.position_ids, mb.cu_seqlens, mb.max_seqlen)
        return sequence_logprobs(
            hidden, weight, mb.targets, mb.seq_ids, mb.loss_mask, mb.num_seqs, backend="chunked"
        )

    def grads(model) -> dict:
        return {
            n: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).clone()
            for n, p in model.named_parameters()
        }

    grad_err = {}
    for tied in (True, False):
        one = tiny(tied)
        (-micro_batch_logps(one, collate([(s,) for s in seqs], [0, 1, 2, 3]), "chunked").sum() / 4).backward()
        expect = grads(one)
        for read_before in (False, True):
            model = tiny(tied)
            distributed.shard_model(model, world)
            mine = seqs[world.rank :: world.size]
            (-logps(model, collate([(s,) for s in mine], [0, 1]), read_before).sum() / 4).backward()
            got = grads(model)
            assert got.keys() == expect.keys()
            when = "before" if read_before else "after"
            case = f"{'tied' if tied else 'untied'}, head read {when} the forward"
            grad_err[case] = max(float((got[n] - expect[n]).abs().max()) for n in expect)
    plain, model = tiny(True), tiny(True)
    distributed.shard_model(model, world)
    # generation: 3 prompts x (greedy + 2 samples at T = 1) = 9 rows in 5 batches of 2, dealt out to the ranks
    tok = load_tokenizer(model_dir)
    jobs = [
        (["The sky is", "Q: Who wrote Hamlet?\nA:", "2 + 2 ="], st)
        for st in make_strategies(["greedy", "sample_t1.0"])
    ]
    gen = GenConfig(max_new_tokens=5, batch_size=2, seed=3)
    decoded, real_decode = [], generation.decode

    def counting_decode(model, ids, *args, **kwargs):
        decoded.append(ids.shape[0])
        return real_decode(model, ids, *args, **kwargs)

    generation.decode = counting_decode
    with distributed.generating(model, world):
        texts = generate_many(model, tok, jobs, gen, chat=False)
    generation.decode = real_decode
    rows_per_rank = distributed.gather(world, sum(decoded))
    sharded = all(isinstance(p, DTensor) for p in model.parameters())  # resharded after generating
    same_hash = distributed.fingerprint(model, world) == model_fingerprint(plain)
    # ... and the sharded model still scores (and trains) as one process's copy
    across = distributed.score_across(world, model, seqs, 12, "chunked", share_prefix=True)
    score_err = float((across - score_sequences(plain, seqs, 12, "chunked")).abs().max())
    if world.rank == 0:
        result = {
            "grad_err": grad_err,
            "score_err": score_err,
            "texts": texts,
            "texts_one": generate_many(plain, tok, jobs, gen, chat=False),
            "resharded": sharded,
            "same_hash": same_hash,
            "rows_per_rank": rows_per_rank,
        }
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":  # torchrun tests/test_distributed.py MODEL_DIR OUT.json
    _worker(sys.argv[1], sys.argv[2])
