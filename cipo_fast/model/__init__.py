"""Models: where they come from, how they are loaded, how a packed micro-batch runs through them.

sources.py     what `--model` may name (HF directory, hub name, .gguf, the smollm2-135m alias)
loading.py     `load_model` (device, dtype, attention, Liger kernels, activation checkpointing, LoRA),
               `model_fingerprint`, saving the final HF-format directory
checkpointing.py  activation checkpointing that keeps attention's outputs (selective, same gradients)
attention.py   `cipo_varlen`: causal SDPA per packed sequence, with the prefix ranges of prefix sharing
forward.py     final hidden states of a packed micro-batch -> fused log-prob sums (`micro_batch_logps`,
               `score_sequences`), the LM-head transform (`HeadSpec`) and its check
generation.py  decoding strategies and batched generation with a preallocated KV cache
decode_cache.py  that cache: transformers' `StaticCache`, attended over its filled positions only
"""
