"""Test-session set-up.

Without a GPU the Triton kernels run through Triton's interpreter, which is chosen when `triton.jit`
decorates a kernel: the variable must be set before any kernel module is imported, hence here.
"""

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` (R-TOFU, GSM8K); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (R-TOFU/GSM8K are not part of the project)")
    return SHARED_DATA
