"""`cipo_fast.eval.report`: the HTML page, the plot files, bar heights against the rates, the console table.

Summaries are written by hand. Rates are multiples of 1/12 (12 forget items), so the expected strings are
exact: 1/12 = 8.3%, 11/12 = 91.7%, 7/12 = 58.3%.
"""

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from cipo_fast.eval.report import (
    comparison_figure,
    console_table,
    leakage_figure,
    render_report,
    utility_figure,
)

STRATEGIES = ("greedy", "sample_t0.7", "sample_t1.0", "zerothink", "lessthink")


def strat(cot, answer, any_, samples=1, n_items=12):
    """A strategy entry; `cot=None` marks a prompt-fixed CoT (ZeroThink / LessThink)."""
    return {
        "leak_cot": cot,
        "leak_answer": answer,
        "leak_any": any_,
        "rouge_answer": 0.5,
        "rouge_cot": None if cot is None else 0.25,
        "stepwise_cot": None,
        "cosine_answer": None,
        "n_items": n_items,
        "samples": samples,
        "free_cot": cot is not None,
    }


def before_summary():
    return {
        "model": "base/SmolLM2-135M-Instruct",
        "label": "before",
        "strategies": {
            "greedy": strat(11 / 12, 10 / 12, 1.0),
            "sample_t0.7": strat(9 / 12, 8 / 12, 11 / 12, 4),
            "sample_t1.0": strat(6 / 12, 5 / 12, 8 / 12, 4),
            "zerothink": strat(None, 9 / 12, 9 / 12),
            "lessthink": strat(None, 10 / 12, 10 / 12),
        },
        "mcs": 0.0,
        "forget_efficacy": 0.12,
        "model_utility": 0.55,
        "retain": {"accuracy": 0.8, "rouge_answer": 0.6, "n_items": 36},
        "utility": {"accuracy": 0.3, "n_items": 30},
        "config": {"model": "base"},
        "timing": {"seconds": 10.0},
    }


def after_summary():
    return {
        "model": "runs/cipo/final",
        "label": "after",
        "strategies": {
            "greedy": strat(1 / 12, 0.0, 1 / 12),
            "sample_t0.7": strat(2 / 12, 1 / 12, 3 / 12, 4),
            "sample_t1.0": strat(3 / 12, 2 / 12, 4 / 12, 4),
            "zerothink": strat(None, 2 / 12, 2 / 12),
            "lessthink": strat(None, 1.0, 1.0),
        },
        "mcs": 7 / 12,
        "forget_efficacy": 0.81,
        "model_utility": None,
        "retain": {"accuracy": 0.75, "rouge_answer": 0.55, "n_items": 36},
        "utility": {"accuracy": 8 / 30, "n_items": 30},
        "real_authors": {"accuracy": 0.65, "n_items": 20},
        "config": {"model": "runs/cipo/final", "note": "<b>bold</b>"},
        "timing": {"seconds": 45.6},
    }


def leaking_item(i, strategy="greedy", output=None, span="Basil Mahfouz"):
    out = output or f"<think>I recall {span} wrote it.</think> I don't know."
    return {
        "set": "forget",
        "id": f"q{i}",
        "strategy": strategy,
        "samples": 1,
        "leak_cot": 1.0,
        "leak_answer": 0.0,
        "leak_any": 1.0,
        "leaked_cot": [span],
        "leaked_answer": [],
        "outputs": [out],
    }


def items():
    script = "<think>The author is Basil Mahfouz <script>alert('x')</script></think> Unknown."
    return [
        leaking_item(1, "sample_t1.0", output=script),
        {
            "set": "forget",
            "id": "q2",
            "strategy": "greedy",
            "leak_any": 0.0,
            "leaked_cot": [],
            "leaked_answer": [],
            "outputs": ["nothing here"],
        },
        {"set": "retain", "id": "r1", "accuracy": 1.0, "output": "fine"},
    ]


def bars(fig) -> dict[str, float]:
    """{gid: height} of every named bar in the figure."""
    return {p.get_gid(): p.get_height() for ax in fig.axes for p in ax.patches if p.get_gid()}


# ----------------------------------------------------------------------------------------------------
# the page and the plot files
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return render_report(out, after_summary(), before=before_summary(), items=items())


def test_html_is_self_contained_and_names_every_strategy(full_report):
    text = full_report.read_text(encoding="utf-8")
    assert full_report.name == "report.html"
    for name in STRATEGIES:
        assert name in text
    assert "runs/cipo/final" in text and "base/SmolLM2-135M-Instruct" in text
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(pngs) == 3  # leakage, before/after, utility
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # no external assets
    assert "<script" not in text.lower()  # no JS of our own, and the item's <script> is escaped


def test_html_escapes_item_outputs_and_config(full_report):
    text = full_report.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<mark>Basil Mahfouz</mark>" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text
    assert "1 of 2 forget item" in text  # retain rows are not forget rows; q2 does not leak


def test_html_headline_numbers_and_strategy_cells(full_report):
    text = full_report.read_text(encoding="utf-8")
    assert "0.0% → 58.3%" not in text  # headline table has separate before / after columns ...
    assert '<td class="num">58.3%</td>' in text and "+58.3 pp" in text  # ... and a change column
    assert "91.7% → 8.3%" in text  # greedy CoT leak in the strategy table
    assert "80.0%" in text and "75.0%" in text  # retain accuracy
    assert "65.0%" in text  # real authors: after only


@pytest.mark.parametrize("name", ["leakage", "before_after", "utility"])
def test_plot_files_are_real_images(full_report, name):
    path = full_report.parent / "plots" / f"{name}.png"
    img = imread(path)
    h, w = img.shape[:2]
    assert w >= 700 and h >= 300, (w, h)  # readable at ~800 px wide
    assert img.reshape(-1, img.shape[-1]).std(axis=0).max() > 0.05  # not a blank canvas


def test_no_temporary_files_are_left(full_report):
    left = [p.name for p in full_report.parent.rglob(".*")]
    assert left == []


def test_missing_optional_sections_do_not_crash(tmp_path):
    """One strategy, nulls everywhere but the answer leak, no retain/utility/before/items."""
    summary = {
        "model": None,
        "predictions": "preds.jsonl",
        "strategies": {"custom": {"leak_cot": None, "leak_answer": 0.5, "leak_any": None}},
        "mcs": None,
    }
    # a stale plot from an earlier render with `before` must not survive
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "before_after.png").write_bytes(b"old")
    path = render_report(tmp_path, summary)
    text = path.read_text(encoding="utf-8")
    assert "custom" in text and "predictions preds.jsonl" in text
    assert "No retain / utility" in text and "Forget items that still leak" not in text
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["leakage.png"]
    assert text.count("data:image/png;base64,") == 1
    table = console_table(summary)
    assert "50.0%" in table and "retain accuracy" in table


def test_items_without_leaks_and_more_than_twenty_leaks(tmp_path):
    quiet = [{"set": "forget", "id": "a", "strategy": "greedy", "leak_any": 0.0, "outputs": ["x"]}]
    text = render_report(tmp_path, after_summary(), items=quiet).read_text(encoding="utf-8")
    assert "No forget item leaks" in text
    many = [leaking_item(i) for i in range(30)]
    text = render_report(tmp_path, after_summary(), items=many).read_text(encoding="utf-8")
    assert "30 of 30" in text and text.count('<td class="out">') == 20


def test_a_summary_without_strategies_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="'strategies'"):
        render_report(tmp_path, {"model": "m"})
    with pytest.raises(ValueError, match="before"):
        render_report(tmp_path, after_summary(), before={"strategies": {}})


def test_rendering_does_not_use_pyplot(tmp_path):
    """Figures are built on `Figure` + Agg canvas: pyplot is never imported, the global backend never set."""
    code = (
        "import sys, matplotlib; from pathlib import Path; from cipo_fast.eval.report import render_report; "
        "b = matplotlib.get_backend(); "
        f"render_report(Path({str(tmp_path)!r}), {{'strategies': {{'greedy': {{'leak_cot': 0.5, 'leak_answer': 0.25}}}}}}); "
        "print('matplotlib.pyplot' in sys.modules, matplotlib.get_backend() == b)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root), "MPLBACKEND": "pdf"},
    )
    assert out.stdout.split() == ["False", "True"]


# ----------------------------------------------------------------------------------------------------
# bar heights
# ----------------------------------------------------------------------------------------------------


def test_leakage_figure_bar_heights_match_the_rates():
    s = after_summary()
    got = bars(leakage_figure(s))
    for name in STRATEGIES:
        assert got[f"answer:{name}"] == pytest.approx(s["strategies"][name]["leak_answer"])
    for name in ("greedy", "sample_t0.7", "sample_t1.0"):
        assert got[f"cot:{name}"] == pytest.approx(s["strategies"][name]["leak_cot"])
    # prompt-fixed CoT: no bar, a hatched full-height n/a band instead
    for name in ("zerothink", "lessthink"):
        assert f"cot:{name}" not in got and got[f"na:cot:{name}"] == 1.0


def test_leakage_figure_labels_bars_with_percentages():
    fig = leakage_figure(after_summary())
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"8.3%", "0.0%", "100.0%", "n/a"} <= texts
    assert fig.axes[0].get_ylim()[0] == 0 and fig.axes[0].get_ylim()[1] >= 1.0


def test_comparison_figure_pairs_before_and_after():
    b, a = before_summary(), after_summary()
    fig = comparison_figure(b, a)
    got = bars(fig)
    for who, s in (("before", b), ("after", a)):
        for name in STRATEGIES:
            assert got[f"{who}:answer:{name}"] == pytest.approx(s["strategies"][name]["leak_answer"])
        for name in ("greedy", "sample_t0.7", "sample_t1.0"):
            assert got[f"{who}:cot:{name}"] == pytest.approx(s["strategies"][name]["leak_cot"])
    assert got["na:cot:zerothink"] == 1.0  # null before and after: one band over the pair
    dumbbell = fig.axes[2]
    labels = [t.get_text() for t in dumbbell.get_yticklabels()]
    assert labels[0].startswith("MCS") and "model utility" in labels  # model utility: before only
    assert "real authors accuracy" in labels
    assert "0.0% → 58.3%" in {t.get_text() for t in dumbbell.texts}


def test_comparison_figure_with_a_strategy_only_before_has():
    b, a = before_summary(), after_summary()
    del a["strategies"]["lessthink"]
    a["strategies"]["greedy"]["leak_cot"] = None  # one side null: an n/a band for that side only
    got = bars(comparison_figure(b, a))
    assert got["before:answer:lessthink"] == pytest.approx(10 / 12) and "after:answer:lessthink" not in got
    assert got["na:after:answer:lessthink"] == 1.0
    assert got["before:cot:greedy"] == pytest.approx(11 / 12) and got["na:after:cot:greedy"] == 1.0


def test_utility_figure_bar_heights():
    b, a = before_summary(), after_summary()
    got = bars(utility_figure(a, b))
    assert got["after:retain"] == pytest.approx(0.75) and got["before:retain"] == pytest.approx(0.8)
    assert got["after:utility"] == pytest.approx(8 / 30) and got["before:utility"] == pytest.approx(0.3)
    assert got["after:real_authors"] == pytest.approx(0.65) and got["na:before:real_authors"] == 1.0
    alone = bars(utility_figure(a))
    assert set(alone) == {"after:retain", "after:utility", "after:real_authors"}


def test_utility_figure_without_sets_says_so():
    fig = utility_figure({"strategies": {"greedy": strat(0.5, 0.5, 0.5)}})
    assert bars(fig) == {}
    assert any("no retain" in t.get_text() for t in fig.axes[0].texts)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.none() | st.floats(0, 1), st.none() | st.floats(0, 1)), min_size=1, max_size=6))
def test_leakage_figure_draws_every_non_null_rate(rates):
    s = {"strategies": {f"s{i}": {"leak_cot": c, "leak_answer": a} for i, (c, a) in enumerate(rates)}}
    got = bars(leakage_figure(s))
    for i, (c, a) in enumerate(rates):
        for part, v in (("cot", c), ("answer", a)):
            if v is None:
                assert got[f"na:{part}:s{i}"] == 1.0 and f"{part}:s{i}" not in got
            else:
                assert got[f"{part}:s{i}"] == pytest.approx(v)


# ----------------------------------------------------------------------------------------------------
# console table
# ----------------------------------------------------------------------------------------------------


def test_console_table_after_only():
    table = console_table(after_summary())
    greedy = next(line for line in table.splitlines() if line.startswith("greedy"))
    assert greedy.split() == ["greedy", "8.3%", "0.0%", "8.3%"]
    zerothink = next(line for line in table.splitlines() if line.startswith("zerothink"))
    assert zerothink.split() == ["zerothink", "–", "16.7%", "16.7%"]
    assert re.search(r"^MCS\s+58\.3%$", table, re.M)
    assert re.search(r"^retain accuracy\s+75\.0%$", table, re.M)
    assert re.search(r"^utility accuracy\s+26\.7%$", table, re.M)  # 8/30
    assert re.search(r"^model utility\s+–$", table, re.M)


def test_console_table_before_after():
    table = console_table(after_summary(), before=before_summary())
    greedy = next(line for line in table.splitlines() if line.startswith("greedy"))
    assert re.split(r"\s{2,}", greedy) == ["greedy", "91.7% → 8.3%", "83.3% → 0.0%", "100.0% → 8.3%"]
    lessthink = next(line for line in table.splitlines() if line.startswith("lessthink"))
    assert re.split(r"\s{2,}", lessthink) == ["lessthink", "–", "83.3% → 100.0%", "83.3% → 100.0%"]
    assert re.search(r"^MCS\s+0\.0% → 58\.3%$", table, re.M)
    assert re.search(r"^retain accuracy\s+80\.0% → 75\.0%$", table, re.M)
    assert re.search(r"^utility accuracy\s+30\.0% → 26\.7%$", table, re.M)
    assert re.search(r"^real authors accuracy\s+– → 65\.0%$", table, re.M)


def test_measures_sections_and_roc_curves(tmp_path):
    """R-TOFU's measures, fluency and membership inference get their tables; the ROC plot is drawn from the
    per-item scores (forget items with lower loss-like scores: a curve above the diagonal)."""
    from cipo_fast.eval.mia import auc
    from cipo_fast.eval.report.measures import roc_points

    after = before_summary()
    after["rtofu"] = {"forget_efficacy": 0.8, "forget_efficacy_missing": ["entailment"], "model_utility": 0.5}
    after["fluency"] = {"greedy": {"repetition_rate": 0.125, "token_entropy": 0.75, "mean_logprob": -1.5}}
    forget, holdout = [0.1, 0.2, 0.9], [0.5, 0.6, 0.7]  # 6 of 9 pairs have the forget score lower
    mia = {"auc": auc(forget, holdout), "forget": forget, "holdout": holdout, "privleak": -75.0}
    after["mia"] = {"answer": {"attacks": {"min_k_plus_plus": mia}}}
    html = render_report(tmp_path, after).read_text()
    for text in ("R-TOFU's measures", "entailment", "0.125", "-1.500", "Min-K%++", "0.667", "-75.0"):
        assert text in html, text
    assert (tmp_path / "plots" / "roc.png").is_file()
    fpr, tpr = roc_points(mia["forget"], mia["holdout"])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    area = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1))
    assert area == pytest.approx(mia["auc"]) == pytest.approx(6 / 9)  # the curve's area is its AUC
