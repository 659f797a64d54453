"""The benchmark scripts in their smallest configuration, with the tiny random Llama.

Each script runs end to end (driver + one fresh process per measured point) into a temporary directory,
without touching README.md. The checks are about the plumbing, not the numbers: the JSON has its fields,
the numbers are positive, and cipo-fast and TRL, given the same job, report the same tokens and the same
final loss (within 1e-3; on the tiny model they agree to ~1e-4, fp32 rounding of padded vs packed batches).
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str) -> None:
    readme = BENCH.parent / "README.md"
    before = readme.read_text() if readme.is_file() else None
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args, "--no-readme"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if before is not None:
        assert readme.read_text() == before, "--no-readme must leave README.md alone"


def test_throughput_smoke(shared_data, tiny_model_dir, tmp_path):
    run_script(
        "throughput.py",
        *("--model", str(tiny_model_dir), "--pairs", "2", "--batch", "1", "--epochs", "1"),
        *("--systems", "cipo-fast,trl-default", "--out", str(tmp_path)),
    )
    report = json.loads((tmp_path / "throughput.json").read_text())
    assert {"machine", "job", "gemm", "flops", "systems"} <= report.keys()
    assert report["job"]["tokenization"]["identical"]
    assert report["job"]["optimizer_steps"] == 2
    assert report["gemm"]["flop_weighted_median_gflop_per_s"] > 0
    assert report["flops"]["per_token"] > 6 * report["job"]["params"]
    cipo, trl = report["systems"]["cipo-fast"], report["systems"]["trl-default"]
    for r in (cipo, trl):
        assert "error" not in r, r.get("error")
        assert r["steps"] == 2 and len(r["tokens_per_step"]) == 2
        for key in (
            "tokens_per_s_median",
            "e2e_s",
            "e2e_tokens_per_s",
            "peak_rss_bytes",
            "step_time_median_s",
        ):
            assert r[key] > 0, key
        assert math.isfinite(r["final_loss"])
        assert r["efficiency_vs_gemm"] > 0
    assert cipo["settings"]["token_budget"] == 4096 and cipo["settings"]["checkpoint_every"] == 1
    assert trl["settings"]["gradient_checkpointing"] is True and trl["settings"]["bf16"] is False
    # same job: same batches (real tokens per step) and the same loss
    assert trl["tokens_per_step"] == cipo["tokens_per_step"]
    assert trl["same_tokens_per_step_as_cipo_fast"]
    assert abs(trl["final_loss"] - cipo["final_loss"]) < 1e-3
    assert cipo["cipo_fast_speedup"] == pytest.approx(1.0)
    assert trl["cipo_fast_speedup"] > 0 and trl["cipo_fast_memory_ratio"] > 0


def test_memory_scaling_smoke(tiny_model_dir, tmp_path):
    run_script(
        "memory_scaling.py", "--model", str(tiny_model_dir), "--lengths", "64,128", "--out", str(tmp_path)
    )
    report = json.loads((tmp_path / "memory_scaling.json").read_text())
    assert (tmp_path / "memory_scaling.png").stat().st_size > 1000
    assert [r["length"] for r in report["rows"]] == [64, 128]
    for row in report["rows"]:
        assert row["tokens"] == 2 * (report["prompt_tokens"] + row["length"])
        cipo, trl = row["cipo-fast"], row["trl-default"]
        for r in (cipo, trl):
            assert r["status"] == "ok", r.get("error")
            assert r["peak_rss_bytes"] > 0 and r["step_time_s"] > 0
            assert r["tokens"] == row["tokens"]  # both count the prompt in both rows, no padding
        assert abs(cipo["loss"] - trl["loss"]) < 1e-3
        est = row["loss_path_estimate_bytes"]
        assert 0 < est["cipo_fast"]["total"] < est["trl_fused_head"]["total"]
    for name in ("cipo-fast", "trl-default"):
        assert math.isfinite(report["fits"][name]["slope_bytes_per_token"])
    assert report["first_oom_length"] == {"cipo-fast": None, "trl-default": None}


def test_model_shape_counts_parameters(tiny_model_dir):
    """`ModelShape.params()` (used for the 6·P FLOP count) equals the model's own parameter count."""
    from transformers import AutoConfig, AutoModelForCausalLM

    common = load_common()
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir))
    assert common.ModelShape.from_dir(tiny_model_dir).params() == sum(p.numel() for p in model.parameters())


def test_helpers(tmp_path):
    """Weighted median: the value where half the weight is reached. README update: only between markers."""
    common = load_common()
    assert common.weighted_median([1.0, 2.0, 3.0], [1, 1, 10]) == 3.0
    assert common.weighted_median([3.0, 1.0, 2.0], [1, 1, 1]) == 2.0
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- x:start -->\nold\n<!-- x:end -->\nb\n")
    assert common.update_readme("x", "| new |", readme)
    assert readme.read_text() == "a\n<!-- x:start -->\n| new |\n<!-- x:end -->\nb\n"
    assert not common.update_readme("missing", "t", readme)
    run = common.run_child(["-c", "import sys; x = bytearray(50 * 2**20); sys.exit(3)"])
    assert run.returncode == 3 and run.peak_rss_bytes > 50 * 2**20


def load_bench(name: str):
    load_common()
    sys.modules.setdefault("common", sys.modules["bench_common"])  # the scripts import it as `common`
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # the scripts import their siblings (`memory_table`, ...) by plain name, as when run from bench/; only
    # while loading, so that no bench script can shadow an installed package for the rest of the session
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_roofline_counts_by_hand():
    """The H100 estimate's counts for a shape small enough to count by hand (one 128 x 128 tile)."""
    roofline = load_bench("roofline")
    fwd = roofline.kernel_counts("forward", 128, 64, 128)
    assert fwd["flops"] == 2 * 128 * 128 * 64 and fwd["exps"] == 128 * 128
    assert fwd["l2_bytes"] == 2 * (128 * 64 * 2)  # one H block + one W tile, bf16
    bwd = roofline.kernel_counts("backward", 128, 64, 128)
    assert bwd["flops"] == 3 * fwd["flops"]
    # H and W tiles loaded twice, then one fp32 atomic per element of dH and dW
    assert bwd["l2_bytes"] == 2 * fwd["l2_bytes"] + 4 * (128 * 64 + 128 * 64)
    est = roofline.estimate(fwd)
    assert est["bound"] in ("compute", "hbm", "l2", "exp")
    assert est["time_ms"] == max(est["compute_ms"], est["hbm_ms"], est["l2_ms"], est["exp_ms"])


def test_profile_step_smoke(shared_data, tiny_model_dir, tmp_path):
    """The step profile finds every kind of work a checkpointed DPO step does, inside the step's wall time."""
    run_script(
        "profile_step.py",
        *("--model", str(tiny_model_dir), "--pairs", "2", "--batch", "1", "--steps", "2"),
        *("--out", str(tmp_path)),
    )
    r = json.loads((tmp_path / "profile_step.json").read_text())
    cats = r["categories_s_per_step"]
    for name in ("layer GEMMs", "layer GEMMs (recompute)", "attention", "fused LM head (log-probs)"):
        assert cats[name] > 0, name
    assert sum(cats.values()) <= r["step_wall_s"] * 1.01
    assert r["layer_gemm_gflop_per_s_in_training"] > 0 and r["config"]["checkpoint_every"] == 1
    # the per-op lists add up to no more than their category, largest first
    for name, ops in r["top_ops"].items():
        times = [o["s_per_step"] for o in ops]
        assert times == sorted(times, reverse=True) and sum(times) <= cats[name] * (1 + 1e-9) + 1e-12, name
    assert any(o["op"] == "aten::mm" for o in r["top_ops"]["layer GEMMs"])


def test_generation_smoke(tiny_model_dir, tmp_path):
    """The decoding benchmark times every system on the same rows, and cipo-fast's greedy tokens are
    transformers' (an independent decoder) on the tiny model, fp32 and bf16 autocast both run."""
    run_script(
        "generation.py",
        *("--model", str(tiny_model_dir), "--batch", "3", "--new", "4", "--repeats", "1", "--bf16"),
        *("--out", str(tmp_path)),
    )
    r = json.loads((tmp_path / "generation.json").read_text())
    names = [row["system"] for row in r["rows"]]
    assert names == [
        "cipo-fast (fp32)",
        "cipo-fast (fp32, every row prefilled)",
        "transformers generate (fp32)",
        "cipo-fast (bf16 autocast)",
    ]
    assert all(row["median_s"] > 0 and row["tokens_per_s"] > 0 for row in r["rows"])
    assert r["greedy_rows_equal_to_transformers"] == 3 and r["greedy_first_difference_at"] == []
    lim = r["limits"]
    assert lim["read_bandwidth_gb_s"] > 0 and lim["step_s_compute"] > 0 and lim["step_s_weights_once"] > 0
    assert lim["step_s_compute_bf16"] > 0


def test_memory_scaling_timeouts_and_reused_points(tmp_path):
    ms = load_bench("memory_scaling")
    assert ms.failure_status("OOM", 600.3, 600) == "timeout"  # our SIGKILL at the limit, not the OOM killer
    assert ms.failure_status("OOM", 12.0, 600) == "OOM"
    assert ms.failure_status("error", 5.0, None) == "error"
    log = tmp_path / "points.txt"
    log.write_text(
        "a progress line\n"
        '{"length": 512, "system": "cipo-fast", "status": "ok", "peak_rss_bytes": 1}\n'
        '{"length": 1024, "system": "trl-default", "status": "skipped (OOM at a shorter L)"}\n'
    )
    assert ms.load_points(log) == {(512, "cipo-fast"): {"status": "ok", "peak_rss_bytes": 1}}
    log.write_text('{"system": "cipo-fast"}\n')
    with pytest.raises(SystemExit, match=r"points.txt:1: not a point line"):
        ms.load_points(log)
    # a killed point has no memory value: the plot marks it without one
    row = {"length": 64, "cipo-fast": {"status": "ok", "peak_rss_bytes": 2e9}}
    killed = {"length": 128, "cipo-fast": {"status": "timeout", "peak_rss_bytes": None}}
    report = {"mem_limit_gib": 22, "timeout_s": 600, "model": "tiny", "rows": [row, killed]}
    load_bench("memory_table").plot(report, ["cipo-fast"], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_no_bench_script_shadows_an_installed_or_probed_module():
    """A script's folder goes first on `sys.path`, and several tests put bench/ there too: a script named like
    an installed module shadows it for every later import (bench/kernels.py did so to the `kernels` package that
    transformers 5.25 installs and imports, failing CI). Also the optional packages transformers probes for,
    which a later install would bring in."""
    import re

    import transformers.utils.import_utils as tiu

    probed = set(
        re.findall(r"_is_package_available\(\s*[\"']([A-Za-z0-9_]+)[\"']", Path(tiu.__file__).read_text())
    )
    assert "kernels" in probed  # the probe scan itself still sees what it should
    saved, bench = list(sys.path), BENCH.resolve()
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != bench]
    try:
        clashes = []
        for script in sorted(BENCH.glob("*.py")):
            name = script.stem
            spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
            outside = (
                spec is not None and spec.origin and not Path(spec.origin).resolve().is_relative_to(bench)
            )
            if outside or name in probed:
                clashes.append(name)
    finally:
        sys.path[:] = saved
    assert not clashes, f"bench scripts named like other modules: {clashes}"


def test_checkpoint_attention_smoke(tmp_path):
    """The A/B of kept vs recomputed attention times both settings on the same layers and counts the memory."""
    run_script(
        "checkpoint_attention.py",
        *("--lengths", "64,128", "--layers", "2", "--rounds", "2", "--d", "64", "--ffn", "128"),
        *("--heads", "4", "--kv-heads", "2", "--out", str(tmp_path)),
    )
    r = json.loads((tmp_path / "checkpoint_attention.json").read_text())
    assert [row["length"] for row in r["rows"]] == [64, 128]
    for row in r["rows"]:
        assert len(row["times_s"]["keep"]) == len(row["times_s"]["recompute"]) == 2
        assert row["keep_s"] > 0 and row["recompute_s"] > 0 and row["sdpa_forward_s_per_layer"] > 0
        assert row["kept_bytes_per_layer"] == 4 * row["length"] * (64 + 4)


def test_step_bound_smoke(tiny_model_dir, tmp_path):
    """The bound is pass counts x one set of measured unit times: TRL's layer GEMMs are 5/4 of
    cipo-fast's, its LM head 4/3, recomputed attention one forward more; measured steps are carried over."""
    measured = tmp_path / "ms.json"
    rows = [{"length": 32, "cipo-fast": {"step_time_s": 2.0}, "trl-default": {"step_time_s": 4.0}}]
    measured.write_text(json.dumps({"rows": rows}))
    run_script(
        "step_bound.py",
        *("--model", str(tiny_model_dir), "--lengths", "32", "--repeats", "1"),
        *("--out", str(tmp_path), "--measured", str(measured)),
    )
    (point,) = json.loads((tmp_path / "step_bound.json").read_text())["points"]
    s, unit = point["systems"], point["per_sequence_units_s"]
    c, r, t = s["cipo-fast"], s["cipo-fast-recompute"], s["trl-default"]
    assert math.isclose(t["parts_s"]["layer_gemms"], 1.25 * c["parts_s"]["layer_gemms"])
    assert math.isclose(t["parts_s"]["head"], 4 / 3 * c["parts_s"]["head"])
    assert math.isclose(r["parts_s"]["attention"] - c["parts_s"]["attention"], 2 * unit["attention_fwd_s"])
    for v in s.values():
        assert math.isclose(v["bound_s"], sum(v["parts_s"].values()))
    assert (c["measured_s"], t["measured_s"], r["measured_s"]) == (2.0, 4.0, None)


def test_decode_profile_smoke(tiny_model_dir, tmp_path):
    """Every op of the profiled decode call lands in one category, the prefill apart; the categories add
    up to the call's wall time (the remainder is `outside ops`)."""
    run_script(
        "decode_profile.py",
        "--model",
        str(tiny_model_dir),
        "--batch",
        "4",
        "--new",
        "6",
        "--out",
        str(tmp_path),
    )
    r = json.loads((tmp_path / "decode_profile.json").read_text())
    cats = r["categories_s"]
    assert cats["prefill"] > 0 and cats["layer GEMMs"] > 0 and cats["LM head"] > 0 and cats["sampling"] > 0
    assert math.isclose(sum(cats.values()), r["wall_s"], rel_tol=1e-6) or sum(cats.values()) > r["wall_s"]
    assert {o["op"] for o in r["top_ops"]["LM head"]} <= {
        "aten::mm",
        "aten::addmm",
        "aten::linear",
        "aten::matmul",
    }


def test_eval_generation_smoke(tiny_model_dir, tmp_path):
    """Every arm runs the evaluation's jobs and gives the same texts; dropping ended rows never adds
    row-steps (the tiny random model rarely says EOS, so the two may be equal here); attending the filled
    positions reads fewer keys than the whole allocation; `--compact-at 0` adds an arm that drops rows at
    every EOS."""
    run_script(
        "eval_generation.py",
        *(
            "--model",
            str(tiny_model_dir),
            "--limit",
            "3",
            "--new",
            "6",
            "--batch",
            "8",
            "--out",
            str(tmp_path),
            "--compact-at",
            "0",
        ),
    )
    r = json.loads((tmp_path / "eval_generation.json").read_text())
    kept, dropped, filled, each = r["systems"]
    assert r["same_texts"] and r["rows"] == 3 * len(r["strategies"]) == 15
    # 15 rows: batches of 8 and 7, each up to 5 decode steps after the prefill; kept, every step has all rows
    assert kept["decode_steps"] <= 10 and 7 * kept["decode_steps"] <= kept["row_steps"] <= 75
    assert 0 < dropped["row_steps"] <= kept["row_steps"] and dropped["decode_steps"] == kept["decode_steps"]
    assert filled["row_steps"] == dropped["row_steps"] and filled["keys_read"] < dropped["keys_read"]
    assert each["compact_at"] == 0 and each["row_steps"] <= filled["row_steps"]  # dropped at every EOS


def test_eval_sets_smoke(tiny_model_dir, tmp_path):
    """Both arms generate the demo's sets; one call for all sets fills fewer batches than a call per set
    (3 sets of a few rows each: one batch against three)."""
    run_script(
        "eval_sets.py",
        *("--model", str(tiny_model_dir), "--limit", "2", "--new", "4", "--out", str(tmp_path)),
    )
    r = json.loads((tmp_path / "eval_sets.json").read_text())
    one, per_set = r["systems"]
    assert r["sets"] == {"forget": 2, "retain": 2, "utility": 2}
    assert (one["batches"], per_set["batches"]) == (1, 3)
    assert one["row_steps"] > 0 and per_set["row_steps"] > 0
