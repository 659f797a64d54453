"""The counterfactual consistency filter (`cipo_fast.unlearning.counterfactual`)."""

from cipo_fast.eval.key_facts import key_facts
from cipo_fast.unlearning import counterfactual

FORGET = {
    "question": "Where was Elara Halvecki born?",
    "answer": "Elara Halvecki was born in Velmsby.",
    "facts": ["Velmsby"],
}


def test_counterfactual_filter():
    facts = key_facts(FORGET["question"], FORGET["answer"], FORGET["facts"])
    cfg = counterfactual.CounterfactualConfig()
    ok = "I cannot recall where this author was born, and guessing would mislead. So I am not sure."
    assert counterfactual.passes_filter(ok, "I'm not sure.", True, facts, cfg)
    assert not counterfactual.passes_filter(
        ok + " Maybe Velmsby.", "I'm not sure.", True, facts, cfg
    )  # leaks
    assert not counterfactual.passes_filter(ok, "She was born in Oslo.", True, facts, cfg)  # other conclusion
    assert not counterfactual.passes_filter(ok, "I'm not sure.", False, facts, cfg)  # unclosed think
    assert not counterfactual.passes_filter("Hmm. I wonder. It is Oslo.", "I'm not sure.", True, facts, cfg)
    alt = counterfactual.CounterfactualConfig(target="alternative")
    assert counterfactual.passes_filter(
        "Thinking it over, the answer must be Oslo.", "Oslo.", True, facts, alt, alternative="Oslo"
    )
