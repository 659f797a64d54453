"""Triton kernels and their host launchers; `cipo_fast.ops.logprobs` holds their PyTorch reference."""
