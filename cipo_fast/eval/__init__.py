"""Evaluation: does a model still know what it should forget, in its CoT and its answer?

text.py, dates.py, number_words.py, lexicon.py   normalization and the word lists facts are read with
facts.py, key_facts.py                           what a target fact is; finding them in a gold answer
leakage.py                                       whether a text states a fact as a span (and step-wise)
judge.py                                         the leak judge: spans, or a fact restated in other words
rouge.py, gsm8k.py, embedder.py                  ROUGE-L recall, final-number accuracy, MiniLM cosine
stepwise.py                                      step-wise CoT scores: best generated match per gold step
fluency.py                                       repetition, token entropy, log-prob under the original model
scoring.py                                       scoring generations; per-strategy rates, MCS, accuracy
metrics.py                                       forget efficacy and model utility (R-TOFU's definitions)
rtofu.py                                         R-TOFU's aggregates of one evaluated model, from its scored rows
mia.py                                           membership inference (LOSS, zlib, Min-K%, Min-K%++, reference)
                                                 on answer and CoT tokens; AUC and privleak
predictions.py                                   scoring generations made elsewhere
evaluate.py                                      `cipo-fast eval`
other_questions.py                               leakage on other questions: unseen phrasings, earlier requests
report/                                          figures, console table, HTML report
"""
