"""CiPO's own parts: what turns the policy's leaking outputs into preference pairs.

counterfactual.py  counterfactual traces (redirects, knowledge-boundary / alternative-path prompts,
                   seeds, template) and the consistency filter
pairs.py           pairs from a round's leaking samples; seeds and alternative answers
mirrors.py         retain mirror pairs and how each step's mirrors are matched to its forget pairs
rounds.py          a round's training plan, its reference, and what a resumed run rebuilds
"""
