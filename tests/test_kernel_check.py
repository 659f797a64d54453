"""`cipo_fast.ops.kernel_check`: every kernel variant the launchers can pick compiles for sm_80, sm_86,
sm_90a and sm_100a without spills and within shared memory, and the check does fail on a config that cannot fit.

The check compiles real GPU code, which Triton refuses for interpreted kernels, so it runs in a
subprocess without TRITON_INTERPRET (the test session sets it). ~2 minutes on 2 CPU cores with a cold Triton cache.
"""

import json
import os
import subprocess
import sys

from cipo_fast.ops import kernel_check

ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def run_python(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def test_every_pickable_kernel_variant_is_ok_on_every_target():
    res = run_python("-m", "cipo_fast.ops.kernel_check")
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    targets = set(kernel_check.DEFAULT_TARGETS)
    assert {"sm_80", "sm_90a"} <= targets
    assert {r["target"] for r in rows} == targets
    assert {(r["kernel"], r["target"]) for r in rows} == {
        (k, t) for k in ("forward", "backward", *kernel_check.ROW_KERNELS) for t in targets
    }
    assert {r["dtype"] for r in rows} == set(kernel_check.DTYPES)
    for r in rows:
        assert r["spills"] == 0 and r["shared_bytes"] <= r["shared_limit"] and r["ok"], r
        assert isinstance(r["registers"], int) and 0 < r["registers"] <= 255, r
    # each backward config is compiled for every flag combination the launcher can pass
    backward = {(r["config"], r["dtype"], r["target"], r["flags"]) for r in rows if r["kernel"] == "backward"}
    assert len(backward) == len(kernel_check.BACKWARD_FLAGS) * len(kernel_check.DTYPES) * len(targets)


def test_an_oversized_config_is_reported_not_ok():
    code = (
        "import json\n"
        "from cipo_fast.ops import kernel_check as kc\n"
        "from cipo_fast.csrc_triton.logprobs import KernelConfig\n"
        "cfg = KernelConfig(BLOCK_N=128, BLOCK_V=256, BLOCK_D=128, num_warps=8, num_stages=5)\n"
        "print(json.dumps(kc.check_variant(kc.Variant('forward', 'oversized', cfg, 'fp16', (), 'sm_80'))))\n"
    )
    res = run_python("-c", code)
    assert res.returncode == 0, res.stderr[-3000:]
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["shared_bytes"] > row["shared_limit"] == 164 * 1024
    assert row["ok"] is False


def test_refuses_to_run_under_the_interpreter(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernel_check.main([]) == 2
    assert "TRITON_INTERPRET" in capsys.readouterr().err
