"""The fused LM-head log-prob op.

    logprobs.py      `sequence_logprobs` / `token_logprobs`: hidden states -> per-token log-probs and
                     per-sequence sums without `[tokens, vocab]` logits; the PyTorch reference (the spec),
                     the chunked CPU path and the autograd Function over the Triton kernels
    fused_loss.py    `fused_group_loss`: the LM head, the log-probs and a loss that is a sum over groups of
                     sequences (a DPO-family pair, one unlearning sequence) in one pass, its gradient
                     computed while a chunk's logits are in memory: 3 GEMMs instead of 4, 2 with a frozen
                     head (what the trainer runs with the chunked backend)
    head_gemms.py    the LM head's GEMMs in both chunked ops: operands, precision (bf16 gradient GEMMs on
                     a CPU; 16-bit operands with fp32 outputs on CUDA), the reused `[C, V]` buffer
    kl.py            `token_kl`: KL(reference || policy) per token through both LM heads, chunked, for the
                     KL retain term
    kernel_check.py  compiles every Triton kernel variant for sm_80 / sm_86 / sm_90a / sm_100a without a
                     GPU and checks registers, spills and shared memory

The kernels themselves are in `cipo_fast.csrc_triton.logprobs` and (the fused loss's row passes)
`cipo_fast.csrc_triton.fused_rows`.
"""
