"""R-TOFU forget01 as DPO preference pairs, the job of throughput.py and profile_step.py, and the check
that TRL and cipo-fast tokenize them alike.

The data is not part of the project: it is read from ../shared/data/rtofu, and a run without it stops with
a message saying where it was looked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import SHARED_DATA

CHOSEN_TAIL = "I'm not sure about this author."


def rtofu_pairs(n: int) -> list[dict]:
    """R-TOFU forget01 as preference pairs: prompt = question, chosen = IDK CoT + a refusal,
    rejected = the original CoT + answer."""
    forget, idk = SHARED_DATA / "rtofu" / "forget01.json", SHARED_DATA / "rtofu" / "idkcot.jsonl"
    if not (forget.is_file() and idk.is_file()):
        raise SystemExit(
            f"bench/throughput.py needs R-TOFU in {SHARED_DATA / 'rtofu'} (forget01.json, idkcot.jsonl); "
            "it is not part of the project. Point ../shared/data at a copy and run again."
        )
    items = [json.loads(line) for line in forget.read_text().splitlines() if line.strip()]
    idk_cots = [json.loads(line) for line in idk.read_text().splitlines() if line.strip()]
    if n > min(len(items), len(idk_cots)):
        raise SystemExit(f"--pairs {n}: R-TOFU forget01 has only {min(len(items), len(idk_cots))} items")
    return [
        {
            "prompt": it["question"],
            "chosen": f"{idk_cots[i]}\n\n{CHOSEN_TAIL}",
            "rejected": f"{it['cot']}\n\n{it['answer']}",
        }
        for i, it in enumerate(items[:n])
    ]


def tokenization_check(pairs: list[dict], model_path: Path) -> dict:
    """Tokenize each side the TRL way and the cipo-fast way; they must give the same ids and prompt boundary.

    TRL (plain text): prompt_ids = tok(prompt); ids = tok(prompt + completion + eos_token); the completion
    starts at the common prefix. cipo-fast (raw): tok(prompt) + tok(completion, no special tokens) + [eos].
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    mismatches, lengths = [], []
    for i, p in enumerate(pairs):
        prompt_ids = tok(p["prompt"])["input_ids"]
        for side in ("chosen", "rejected"):
            trl_ids = tok(p["prompt"] + p[side] + tok.eos_token)["input_ids"]
            ours = prompt_ids + tok(p[side], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            if trl_ids != ours:
                mismatches.append(f"pair {i} {side}")
            lengths.append(len(ours))
    return {"identical": not mismatches, "mismatches": mismatches, "sequence_lengths": lengths}
