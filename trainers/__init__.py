"""The recipes: `setup -> loop -> cleanup`, each importing only the library (`cipo_fast`).

preference.py  `cipo-fast train` for every method but CiPO
cipo.py        `cipo-fast train --method cipo`: the CiPO rounds
finetune.py    `cipo-fast finetune`: target models for unlearning experiments (cached by content)
"""
