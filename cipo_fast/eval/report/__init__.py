"""The evaluation report: figures, a console table and one self-contained `report.html`.

`render_report` reads the summary dict that `cipo-fast eval` writes to `summary.json` (optionally the same
dict for the model before unlearning, and the per-item rows of `items.jsonl`) and writes `plots/*.png`
plus `report.html` into the run directory; `console_table` is the terminal version of the same numbers.

* `summary.py`: the readers of a summary dict (null-tolerant numbers, percentages, names) the others share;
* `figures.py`: `leakage_figure`, `comparison_figure`, `utility_figure` (matplotlib, no pyplot);
* `console.py`: `console_table`;
* `measures.py`: the sections for R-TOFU's aggregates, fluency and membership inference (with ROC curves);
* `html.py`: `render_report` and the pieces of the page.

Nothing in this package computes a metric: it only formats what evaluation measured, and a null metric
prints as "–".
"""

from cipo_fast.eval.report.console import console_table
from cipo_fast.eval.report.figures import comparison_figure, leakage_figure, utility_figure
from cipo_fast.eval.report.html import render_report

__all__ = ["comparison_figure", "console_table", "leakage_figure", "render_report", "utility_figure"]
