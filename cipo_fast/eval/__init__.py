"""Evaluation: does a model still know what it should forget, in its CoT and its answer?

text.py, dates.py, number_words.py, lexicon.py   normalization and the word lists facts are read with
facts.py, key_facts.py                           what a target fact is; finding them in a gold answer
leakage.py                                       whether a text reveals a fact (and step-wise)
rouge.py, gsm8k.py, embedder.py                  ROUGE-L recall, final-number accuracy, MiniLM cosine
scoring.py                                       scoring generations; per-strategy rates, MCS, accuracy
metrics.py                                       forget efficacy and model utility (R-TOFU's style)
predictions.py                                   scoring generations made elsewhere
evaluate.py                                      `cipo-fast eval`
report/                                          figures, console table, HTML report
"""
