"""The unlearning methods' own parts: CiPO's (both variants), R²MU's, the baselines' data, the guards'.

counterfactual.py  counterfactual traces (redirects, knowledge-boundary / alternative-path prompts,
                   seeds, template) and the consistency filter
pairs.py           pairs from a round's leaking samples; seeds and alternative answers
mirrors.py         retain mirror pairs and how each step's mirrors are matched to its forget pairs
rounds.py          a round's training plan, its reference, and what a resumed run rebuilds
paper_cipo.py      CiPO as published: fixed counterfactual answers with backward CoTs, own-response pairs
baselines.py       forget-set files of R-TOFU's baseline grid (GA, Direct/Answer/Reasoned IDK) and TRU
r2mu.py            R²MU (arXiv 2506.12963): representation misdirection at one layer, its truncated
                   forward (nothing above layer l, shared frozen lower layers) and one step's terms
r2mu_data.py       R²MU's unthink traces (generated once, cached in the run) and its reasoning set
guards.py          inference-time guards, STaR and GUARD: scope detection, forbidden token sequences, the
                   logits processor that bans, penalizes and (STaR) cuts a leaking think block
trie.py            the reversed-prefix trie: which next tokens would complete a forbidden sequence
similarity.py      text similarities (MiniLM, word overlap) of the guards' scope and monitor, with thresholds
"""
