"""The recipes: `setup -> loop -> cleanup`, each importing only the library (`cipo_fast`).

preference.py  `cipo-fast train` for every loss-based method (DPO family, SimPO, TRU, NPO, GA, SFT)
cipo.py        `cipo-fast train --method cipo`: the CiPO rounds (the engine's variant)
cipo_paper.py  `cipo-fast train --method cipo --cipo-variant paper`: CiPO as published
r2mu.py        `cipo-fast train --method r2mu`: representation misdirection (R²MU)
finetune.py    `cipo-fast finetune`: target models for unlearning experiments (cached by content)
"""
