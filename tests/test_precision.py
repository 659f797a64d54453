"""bf16 autocast on the CPU (`cipo_fast.train.precision`): when it is chosen, that the reference is scored
as the policy trains (DPO's first margin is 0, not the two precisions' rounding gap), the namespace that
keeps fp32 and bf16 reference sums apart, and parity with TRL 1.16's DPOTrainer at `bf16=True`."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import PAIRS, config, rows, trl_step1

from cipo_fast.train import precision
from cipo_fast.trainers.preference import main as train

ZEN4_FLAGS = "flags\t\t: fpu vme avx512f avx512bw avx512_bf16 avx512_vnni\n"
XEON_FLAGS = "flags\t\t: fpu vme avx512f avx512bw avx512_vnni\n"


@pytest.mark.parametrize(("text", "units"), [(ZEN4_FLAGS, True), (XEON_FLAGS, False), ("", False)])
def test_bf16_units_come_from_the_cpu_flags(text, units):
    assert precision.has_bf16_flags(text) is units


@pytest.mark.parametrize(
    ("text", "isa"),
    [
        (ZEN4_FLAGS, "avx512_bf16"),
        (XEON_FLAGS, "avx512f"),
        ("flags\t\t: fpu sse2 avx avx2 fma\n", "avx2"),
        ("flags\t\t: fpu avx512f amx_bf16 amx_tile avx512_bf16\n", "amx_bf16"),
        ("flags\t\t: fpu sse2\n", "other"),
        ("", "other"),
    ],
)
def test_instruction_set_is_the_widest_flag_listed(text, isa):
    assert precision.isa_of(text) == isa


def test_autocast_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for units in (True, False):
        monkeypatch.setattr(precision, "cpu_bf16_units", lambda units=units: units)
        table = {
            (mode, dtype): precision.autocast_dtype(config_like(mode, dtype), cpu)
            for mode in ("auto", "bf16", "off")
            for dtype in ("float32", "bfloat16")
        }
        assert table == {
            ("auto", "float32"): torch.bfloat16 if units else None,
            ("bf16", "float32"): torch.bfloat16,
            ("off", "float32"): None,
            **{(m, "bfloat16"): None for m in ("auto", "bf16", "off")},  # bf16 weights: no autocast
        }
    assert precision.autocast_dtype(config_like("off", "float32"), cuda) is torch.bfloat16
    assert precision.precision_tag(torch.bfloat16) == "bf16-autocast"
    assert precision.precision_tag(None) == "native"


def config_like(mode, dtype):
    class C:
        cpu_autocast = mode

    C.dtype = dtype
    return C()


def test_bf16_reference_is_scored_like_the_policy(tiny_model_dir, tmp_path):
    """Step 1 runs on the initial weights, so the policy's and the reference's sums are the same numbers:
    with both under bf16 autocast the margin is 0 up to packing; an fp32 reference would leave the
    precisions' gap in it (measured here beside it)."""
    train(config(tmp_path, tiny_model_dir, cpu_autocast="bf16", max_steps=1))
    first = next(r for r in rows(tmp_path / "run") if "loss" in r)
    train(config(tmp_path, tiny_model_dir, out=str(tmp_path / "fp32"), max_steps=1))
    fp32 = next(r for r in rows(tmp_path / "fp32") if "loss" in r)
    gap = abs(first["logps/chosen"] - fp32["logps/chosen"]) + abs(
        first["logps/rejected"] - fp32["logps/rejected"]
    )
    assert gap > 1e-3, "bf16 autocast did not change the sums: it did not run"
    assert abs(first["rewards/margins"]) < 0.01 * 0.1 * gap  # beta = 0.1
    assert first["loss"] == pytest.approx(0.6931472, abs=1e-4)
    ns = {p.name for p in (tmp_path / "cache").iterdir()}
    assert len(ns) == 2  # fp32 and bf16 sums of the same model live apart
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["precision"] == "bf16-autocast"
    assert json.loads((tmp_path / "fp32" / "summary.json").read_text())["precision"] == "native"


def test_trl_parity_bf16(tiny_model_dir, tmp_path):
    """Step-1 row against TRL 1.16 with `bf16=True` on the CPU (autocast over fp32 weights, as here)."""
    pytest.importorskip("trl")
    theirs = trl_step1(tiny_model_dir, tmp_path, bf16=True)
    train(config(tmp_path, tiny_model_dir, batch_size=len(PAIRS), max_steps=1, lr=1e-4, cpu_autocast="bf16"))
    ours = next(r for r in rows(tmp_path / "run") if "loss" in r)
    # measured: logps within 4e-6 relative, grad norm 3.2e-3 (bf16 rounding of the backward's GEMMs falls
    # in different places: TRL's full-logits head vs the fused op)
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-6)
    for key in ("logps/chosen", "logps/rejected"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4), key
    assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-2)
