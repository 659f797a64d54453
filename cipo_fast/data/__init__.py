"""Data: files, formats and the token streams the trainer consumes.

io.py         the one JSONL reader (file:line errors) and the crash-safe writers
reasoning.py  the think block: render `{cot, answer}` and split generations back (one source for both)
tokenize.py   prompt / completion tokenization (chat template or raw), bounded truncation
formats.py    the training formats (preference pairs, single sequences) -> `Pair` / `Single`
items.py      question / answer items (R-TOFU, TOFU, synthetic, GSM8K) -> `Item`
packing.py    padding-free packing into token-budget micro-batches, prefix sharing
rtofu.py      R-TOFU's files -> one benchmark run's item files (forget / holdout folds, retain, utility)
"""
