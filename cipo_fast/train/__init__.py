"""Training: everything a recipe needs between the data and the checkpoint.

losses.py      the loss registry (DPO family, SimPO, NPO, GA, NLL) over per-sequence log-prob sums
schedule.py    learning rate and data order as pure functions of (config, step)
step.py        one optimizer step for every trainer, and its metrics row
policy.py      process set-up, tokenizer, the policy with its optimizer
precision.py   bf16 autocast or fp32: CUDA, CPUs with bf16 units (detected), the reference alike
reference.py   reference log-prob sums of a run (cache first, then a reference pass)
refcache.py    the persistent content-addressed cache of reference sums
checkpoint.py  atomic, verified checkpoints (safetensors + JSON)
run_dir.py     the run directory's lifecycle: validate, build in OUT.partial, move into place
distributed.py torchrun: the process group, FSDP2 sharding, the LM head under it, generation, rank-0 helpers
balance.py     a step's samples split over the ranks by token count, equal pass counts
sharded_checkpoint.py  checkpoints of a sharded run (torch.distributed.checkpoint), any world size
"""
