"""Shared pieces of the benchmark scripts: fresh-process runs, models, machine facts, GEMM rate, README tables.

Every measured point runs in a child process started by `run_child`, which returns the child's own peak
resident memory (`ru_maxrss` from `os.wait4`, so nothing of the driver or of other points is counted) and,
when asked, caps the child's address space (`RLIMIT_AS`) so that running out of memory fails that point
instead of the machine. A child reports its result as one `BENCH_RESULT {json}` line on stdout; libraries
may print anything else around it.

Children get a controlled environment: hub access off (`HF_HUB_OFFLINE=1`), and `TRITON_INTERPRET`
removed, so a Triton kernel that would need a GPU fails the way it does on a plain CPU machine instead of
running in Triton's interpreter (the test session sets that variable for the kernel tests).

Of the trainers, only the settings every benchmark run gives them are here (`cipo_dpo_config`,
`trl_dpo_config`: DPO, outputs under the run's work directory, no progress bar, seed SEED; TRL on the CPU
in fp32, logging every step, saving and reporting nothing), so that a script sets nothing but its job. How
a trainer is timed and what is read back from it live in the script that asks the question.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
README = REPO / "README.md"
SHARED_DATA = REPO.parent / "shared" / "data"
RESULT_TAG = "BENCH_RESULT "
SEED = 42
GiB = 2**30


# ----------------------------------------------------------------------------------------------------
# fresh-process runs
# ----------------------------------------------------------------------------------------------------


@dataclass
class ChildRun:
    returncode: int
    wall_s: float
    peak_rss_bytes: int  # ru_maxrss of the child itself
    stdout: str
    stderr: str

    def result(self) -> dict | None:
        """The child's `BENCH_RESULT` payload, or None if it printed none (it crashed first)."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith(RESULT_TAG):
                return json.loads(line[len(RESULT_TAG) :])
        return None


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    return env


def run_child(
    args: list[str],
    mem_limit_bytes: int | None = None,
    timeout_s: float | None = None,
    env_extra: dict[str, str | None] | None = None,
    cwd: Path | None = None,
) -> ChildRun:
    """Run `python args...` in a fresh process; its peak RSS comes from `os.wait4` (KiB on Linux).
    `env_extra` sets variables on top of `child_env()` (None: unset one)."""
    env = child_env()
    for key, value in (env_extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value

    def limit():
        if mem_limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (mem_limit_bytes, mem_limit_bytes))

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=err, env=env, preexec_fn=limit, cwd=cwd
        )
        status, usage = _wait4(proc, timeout_s)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return ChildRun(proc.returncode, wall, usage.ru_maxrss * 1024, out.read(), err.read())


def _wait4(proc: subprocess.Popen, timeout_s: float | None):
    """(wait status, rusage) of the child; killed (SIGKILL) once `timeout_s` has passed."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
        if pid == proc.pid:
            return status, usage
        if time.monotonic() > deadline:
            proc.kill()
            deadline = None  # now wait for it to go
        else:
            time.sleep(0.2)


def error_summary(run: ChildRun) -> str:
    """The exception line of a crashed child (and the innermost frame it came from), for the results."""
    lines = [ln.rstrip() for ln in run.stderr.splitlines() if ln.strip()]
    exc = [i for i, ln in enumerate(lines) if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", ln)]
    if exc:
        i = exc[-1]
        frames = [ln.strip() for ln in lines[:i] if ln.strip().startswith("File ")]
        where = f" (at {frames[-1]})" if frames else ""
        return f"{lines[i]}{where}"
    if run.returncode < 0:
        return f"killed by signal {-run.returncode}"
    return lines[-1] if lines else f"exit code {run.returncode}"


def is_oom(run: ChildRun) -> bool:
    text = run.stderr[-4000:]
    markers = (
        "can't allocate memory",
        "Cannot allocate memory",
        "MemoryError",
        "std::bad_alloc",
        "out of memory",
    )
    return run.returncode == -9 or any(m in text for m in markers)


class RssSampler:
    """Child side: samples this process's RSS every `interval_s` in a daemon thread.

    `peak_until(t)` is the largest sample taken up to wall time `t`; it separates, say, the peak during
    training from a save that follows it, which `ru_maxrss` (the whole process) cannot. Sampling can miss
    a spike shorter than the interval, so it complements `ru_maxrss`, not replaces it. Only new maxima are
    kept, so the sampler itself costs no memory to speak of.
    """

    def __init__(self, interval_s: float = 0.02):
        import threading

        self.maxima: list[tuple[float, int]] = [(0.0, 0)]  # (wall time, RSS bytes), RSS increasing
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.interval_s = interval_s
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with open("/proc/self/statm") as f:
            while True:
                f.seek(0)
                rss = int(f.read().split()[1]) * self.page
                if rss > self.maxima[-1][1]:
                    self.maxima.append((time.time(), rss))
                time.sleep(self.interval_s)

    def peak_until(self, t: float) -> int:
        return max(rss for ts, rss in list(self.maxima) if ts <= t)


def vm_peak_bytes() -> int:
    """Child side: this process's peak virtual memory (`VmPeak`), what `RLIMIT_AS` caps."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    return 0


def emit(result: dict) -> None:
    """Child side: print the result line the driver looks for."""
    print(RESULT_TAG + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------------
# the trainers' harness settings (the job is the caller's)
# ----------------------------------------------------------------------------------------------------


def cipo_dpo_config(model_path: str | Path, data: str | Path, workdir: Path, **job):
    """cipo-fast's `TrainConfig` for DPO on raw-text pairs (`--prompt-format raw`: tokenized as TRL does
    plain text), run directory `workdir/run`, a fresh reference cache `workdir/refcache`; `job` sets the
    rest (batch size, steps or epochs, lr, ...)."""
    from cipo_fast.config import TrainConfig

    return TrainConfig(
        method="dpo",
        model=str(model_path),
        data=str(data),
        out=str(workdir / "run"),
        prompt_format="raw",
        cache_dir=str(workdir / "refcache"),  # fresh per run: nothing reused across systems or points
        progress=False,
        overwrite=True,
        seed=SEED,
        **job,
    )


def trl_dpo_config(workdir: str | Path, bf16: bool = False, **job):
    """TRL's `DPOConfig` for fp32 (or, with `bf16`, bf16 autocast over fp32 weights) on the CPU, output
    under `workdir/trl`, a log row per step, nothing saved or reported; `job` sets the rest (batch size,
    steps or epochs, lr, ...)."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(Path(workdir) / "trl"),
        use_cpu=True,
        bf16=bf16,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=SEED,
        **job,
    )


# ----------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------


def resolve_model(name: str, work: Path) -> Path:
    """`smollm2` | an HF model directory -> a directory both TRL and cipo-fast load by path (the test suite
    passes its tiny random Llama's directory)."""
    if name == "smollm2":
        from cipo_fast.model.sources import SMOLLM2_ALIAS, resolve_source

        return Path(resolve_source(SMOLLM2_ALIAS))
    path = Path(name)
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model: expected smollm2 or an HF model directory, got {name!r}")
    return path


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count and the GEMM shapes need from an HF Llama-style config.json."""

    vocab: int
    d: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool

    @classmethod
    def from_dir(cls, path: Path) -> ModelShape:
        return cls.from_config(json.loads((path / "config.json").read_text()))

    @classmethod
    def from_config(cls, c: dict) -> ModelShape:
        heads = c["num_attention_heads"]
        return cls(
            vocab=c["vocab_size"],
            d=c["hidden_size"],
            layers=c["num_hidden_layers"],
            heads=heads,
            kv_heads=c.get("num_key_value_heads", heads),
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            intermediate=c["intermediate_size"],
            tied=c.get("tie_word_embeddings", False),
        )

    def linears(self) -> list[tuple[str, int, int, int]]:
        """(name, in, out, count) of every matmul weight a token passes through; the LM head once."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = [
            ("q_proj", self.d, q),
            ("k_proj", self.d, kv),
            ("v_proj", self.d, kv),
            ("o_proj", q, self.d),
            ("gate_proj", self.d, self.intermediate),
            ("up_proj", self.d, self.intermediate),
            ("down_proj", self.intermediate, self.d),
        ]
        return [(n, i, o, self.layers) for n, i, o in per_layer] + [("lm_head", self.d, self.vocab, 1)]

    def params(self) -> int:
        """Parameters: matmul weights + RMSNorm weights + the embedding (counted once when tied to the head)."""
        mats = sum(i * o * c for _, i, o, c in self.linears())
        norms = (2 * self.layers + 1) * self.d
        embed = 0 if self.tied else self.vocab * self.d
        return mats + norms + embed


FLOPS_FORMULA = (
    "model FLOPs per real token = 6 * P + 12 * n_layers * (n_heads * head_dim) * c_mean, where P = parameters "
    "(tied embedding counted once, as the LM head) and c_mean = mean causal context length per token "
    "(sum over sequences of S(S+1)/2 divided by total tokens); forward + backward, no recomputation from "
    "activation checkpointing and no reference forward counted"
)


def flops_per_token(shape: ModelShape, seq_lengths: list[int]) -> tuple[float, float]:
    """(model FLOPs per token, mean causal context) for training on sequences of these lengths."""
    c_mean = sum(s * (s + 1) / 2 for s in seq_lengths) / sum(seq_lengths)
    return 6 * shape.params() + 12 * shape.layers * shape.heads * shape.head_dim * c_mean, c_mean


# ----------------------------------------------------------------------------------------------------
# GEMM rate of this machine at the model's own shapes
# ----------------------------------------------------------------------------------------------------


def gemm_rate(shape: ModelShape, m: int, repeats: int = 5, dtype: str = "float32") -> dict:
    """GFLOP/s (fp32, or `dtype`) of every training matmul at M tokens: forward, input gradient and weight
    gradient.

    forward  [M, in] @ [in, out];  dgrad  [M, out] @ [out, in];  wgrad  [out, M] @ [M, in]
    The summary is the FLOP-weighted median (each shape weighted by its FLOPs per token x its count).
    """
    import torch

    torch.manual_seed(SEED)
    dt = getattr(torch, dtype)
    rows = []
    for name, k, n, count in shape.linears():
        for kind, (a_shape, b_shape) in {
            "fwd": ((m, k), (k, n)),
            "dgrad": ((m, n), (n, k)),
            "wgrad": ((n, m), (m, k)),
        }.items():
            a, b = torch.randn(a_shape, dtype=dt), torch.randn(b_shape, dtype=dt)
            c = torch.empty(a_shape[0], b_shape[1], dtype=dt)
            torch.mm(a, b, out=c)  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                torch.mm(a, b, out=c)
                times.append(time.perf_counter() - t)
            flop = 2 * m * k * n
            rows.append(
                {
                    "op": f"{name}.{kind}",
                    "shape": [list(a_shape), list(b_shape)],
                    "count": count,
                    "gflop_per_s": flop / statistics.median(times) / 1e9,
                    "weight": flop * count,
                }
            )
    return {
        "m_tokens": m,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "flop_weighted_median_gflop_per_s": weighted_median(
            [r["gflop_per_s"] for r in rows], [r["weight"] for r in rows]
        ),
        "shapes": rows,
    }


def weighted_median(values: list[float], weights: list[float]) -> float:
    pairs = sorted(zip(values, weights))
    half, acc = sum(weights) / 2, 0.0
    for v, w in pairs:
        acc += w
        if acc >= half:
            return v
    return pairs[-1][0]


# ----------------------------------------------------------------------------------------------------
# machine facts and README tables
# ----------------------------------------------------------------------------------------------------


def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from cipo_fast.train.precision import cpu_isa, cpu_model

    cpu = cpu_model()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) * 1024 / GiB, 1)
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "transformers", "trl", "liger-kernel", "cipo-fast"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cpu_isa": cpu_isa(),
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        **versions,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_avg_at_start": os.getloadavg()[0],
    }


def update_readme(marker: str, text: str, readme: Path = README) -> bool:
    """Replace what is between `<!-- marker:start -->` and `<!-- marker:end -->`; False if there are none."""
    if not readme.is_file():
        return False
    body = readme.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in body or end not in body:
        return False
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")
    return True


def publish(marker: str, table: str, readme: bool) -> None:
    """Print the table and, unless disabled, render it into README.md between the marker comments."""
    print(table)
    if readme and not update_readme(marker, table):
        print(
            f"(README.md has no <!-- {marker}:start --> / <!-- {marker}:end --> markers; table not written)"
        )


def save_and_publish(
    out: str | Path, name: str, facts: dict, result: dict, marker: str, table: str, readme: bool
) -> None:
    """Write `OUT/name` ({"machine": facts, **result}) and `publish` the table."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / name).write_text(json.dumps({"machine": facts, **result}, indent=2))
    publish(marker, table, readme)


def gb(nbytes: float | None) -> str:
    return "–" if nbytes is None else f"{nbytes / 1e9:.2f}"
