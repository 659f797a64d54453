"""Analytic estimates of each loss path's own memory in one DPO step (LM head + log-softmax + gather,
forward and backward), derived from the code; `bench/memory_scaling.py` puts them beside what it measures.

N = tokens forwarded (two rows of S tokens), M = completion tokens scored (EOS included), d = hidden size,
V = vocabulary size; fp32 throughout:

* cipo-fast `chunked` (CPU): saved N·d·4 (hidden) + M·12 (lse, index); backward working set
  2·M·d·4 + N·d·4 (hidden copy, its gradient, scattered back) + c·V·4 (c = tokens per chunk, ~32 MiB) + V·d·4
  (weight gradient).
* TRL 1.16 fused head (`trl.kernels.chunked_logprob`, torch fallback on CPU; it scores every position,
  N' = rows x (S - 1)): saved N'·d·4 + N'·16; backward working set ~9 fp32 tiles of min(N', 4096) x
  min(V, 32768) (the tile buffer and the temporaries of `_backward_tile`; a direct measurement of
  `ChunkedLogProbFunction` forward + backward here gave 9.2-10.2 tile sizes at N' = 1024-2048) + N'·d·4 +
  V·d·4. It grows with tokens x 32768 x 4 bytes x 9 up to 4096 tokens (~4.8 GB), then stays flat.
* an unfused head (the textbook path; not what TRL 1.16 does): logits, log-softmax and their gradient,
  3 · N'·V·4.
"""

from __future__ import annotations

from common import ModelShape

TRL_TILE = (4096, 32768)  # trl.kernels.chunked_logprob: TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE
TRL_BACKWARD_TILES = 9
LOSS_PATH_FORMULAS = {
    "cipo_fast": "saved N*d*4 + M*12; working 2*M*d*4 + N*d*4 + c*V*4 + V*d*4 "
    "(N tokens, M scored completion tokens, c tokens per chunk)",
    "trl_fused_head": f"saved N'*d*4 + N'*16; working {TRL_BACKWARD_TILES} * min(N',{TRL_TILE[0]}) * "
    f"min(V,{TRL_TILE[1]}) * 4 + N'*d*4 + V*d*4 (N' = 2*(S-1) scored positions)",
    "unfused_logits": "3 * N' * V * 4 (logits, log-softmax, gradient)",
}


def loss_path_bytes(shape: ModelShape, prompt: int, length: int) -> dict:
    """Bytes of each loss path for one pair whose two rows are `prompt` + `length` tokens."""
    from cipo_fast.ops.logprobs import default_chunk_size

    d, v = shape.d, shape.vocab
    n = 2 * (prompt + length)  # tokens forwarded (both rows)
    m = 2 * length  # completion tokens scored (EOS included)
    c = default_chunk_size(v)
    cipo_saved = n * d * 4 + m * 12
    cipo_work = 2 * m * d * 4 + n * d * 4 + min(c, m) * v * 4 + v * d * 4
    n_trl = 2 * (prompt + length - 1)  # every position of both rows is scored on CPU
    tile = min(n_trl, TRL_TILE[0]) * min(v, TRL_TILE[1]) * 4
    trl_saved = n_trl * d * 4 + n_trl * 16
    trl_work = TRL_BACKWARD_TILES * tile + n_trl * d * 4 + v * d * 4
    return {
        "tokens": n,
        "cipo_fast": {"saved": cipo_saved, "working": cipo_work, "total": cipo_saved + cipo_work, "chunk": c},
        "trl_fused_head": {
            "saved": trl_saved,
            "working": trl_work,
            "total": trl_saved + trl_work,
            "tile": tile,
        },
        "unfused_logits": 3 * n_trl * v * 4,
    }


def loss_path_row(shape: ModelShape, prompt_tokens: int, length: int) -> dict:
    """The estimates as a report row holds them (the row has the token count already)."""
    est = loss_path_bytes(shape, prompt_tokens, length)
    return {"loss_path_estimate_bytes": {k: v for k, v in est.items() if k != "tokens"}}
