"""The methods of `demo --compare`: one registry, a learning-rate sweep per method, one selection rule.

Every trained method starts from the same target, trains for the same number of optimizer steps as the
demo's CiPO run (same batch size, constant schedule, the same retain set) and is evaluated by the same
`cipo-fast eval`. The guards train nothing: they steer the target's decoding.

    name               cipo-fast train ...                                   data (cipo_fast.unlearning.baselines)
    cipo               --method cipo (the engine variant: the demo's own run at --lr)  forget items
    cipo_paper         --method cipo --cipo-variant paper                    forget items
    ga, ga_answer,     --method ga --loss-on all | answer | cot, retain NLL  forget
    ga_cot             (R-TOFU GA1 / GA2 / GA3 + GD)
    ga_kl, ...         the same with --retain-loss kl (R-TOFU + KL)          forget
    npo                --method npo, retain NLL                              forget
    direct_idk,        --method sft (+ --loss-on answer for answer_idk),     direct_idk, answer_idk,
    answer_idk,        retain NLL (R-TOFU IDK1 / IDK2 / IDK3 + GD)           reasoned_idk
    reasoned_idk
    idk_dpo,           --method dpo, pairs over the gold trace               direct_idk_pairs,
    reasoned_idk_dpo                                                         reasoned_idk_pairs
    tru                --method tru (--tru-alpha 1), retain NLL              tru_pairs
    r2mu               --method r2mu (its own defaults, c by Adaptive RMU)   forget items
    r2mu_alpha1200     the same with RMU's retain weight alpha = 1200 (the     forget items
                       WMDP RMU code's, which Adaptive RMU keeps), swept
                       around 100x R²MU's learning rate
    star, guard        no training: eval --guard star | guard on the target

A fair budget is a learning rate that suits the method, so each trained method runs at every multiple in
`LR_SWEEP` of its base rate (the demo's `--lr`; R²MU's own default for R²MU) and the best setting is
reported, with the whole sweep beside it. `best_setting` is the rule: among the settings that keep retain
and arithmetic accuracy within `UTILITY_DROP` of the target's, the lowest worst leak (CoT or answer,
over the decoding strategies), ties broken by retain accuracy; when no setting keeps utility, the one
that keeps the most of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LR_SWEEP = (0.3, 1.0, 3.0)  # multiples of the method's base learning rate
UTILITY_DROP = 0.10  # retain / arithmetic accuracy a setting may lose and still count as keeping utility


@dataclass(frozen=True)
class MethodSpec:
    """How one compared method trains: its `TrainConfig` fields and the data file it reads."""

    method: str | None  # None: no training (a guard)
    data: str = "forget"  # a file of `baseline_rows`, or "items" for the forget items themselves
    options: dict = field(default_factory=dict)
    guard: str = "none"
    own_lr: bool = False  # the method's own default learning rate is its base (R²MU)
    lr_scale: float = 1.0  # the base learning rate times this (a variant that needs larger steps)


METHODS: dict[str, MethodSpec] = {  # run in this order: the costly CiPO sweep points last
    "cipo_paper": MethodSpec("cipo", "items", {"cipo_variant": "paper"}),
    "ga": MethodSpec("ga"),
    "ga_answer": MethodSpec("ga", options={"loss_on": "answer"}),
    "ga_cot": MethodSpec("ga", options={"loss_on": "cot"}),
    "ga_kl": MethodSpec("ga", options={"retain_loss": "kl"}),
    "ga_answer_kl": MethodSpec("ga", options={"loss_on": "answer", "retain_loss": "kl"}),
    "ga_cot_kl": MethodSpec("ga", options={"loss_on": "cot", "retain_loss": "kl"}),
    "npo": MethodSpec("npo"),
    "direct_idk": MethodSpec("sft", "direct_idk"),
    "answer_idk": MethodSpec("sft", "answer_idk", {"loss_on": "answer"}),
    "reasoned_idk": MethodSpec("sft", "reasoned_idk"),
    "idk_dpo": MethodSpec("dpo", "direct_idk_pairs"),
    "reasoned_idk_dpo": MethodSpec("dpo", "reasoned_idk_pairs"),
    "tru": MethodSpec("tru", "tru_pairs"),
    "r2mu": MethodSpec("r2mu", "items", own_lr=True),
    # with alpha = 1.7 R²MU forgets only from 10x its lr on, at the cost of the retain set (README); a
    # retain weight of 1200 holds the retained activations while larger steps move the forget ones. On the
    # demo's EPYC target (2026-12-04) it left every leak at 100 % up to 10x R²MU's lr and forgot from
    # 30x (75 % / 92 % worst CoT / answer leak) to 300x (16.7 % / 16.7 %) at retain 85 %, retain falling
    # to 55 % at 1000x: its sweep is centred at 100x
    "r2mu_alpha1200": MethodSpec("r2mu", "items", {"r2mu_alpha": 1200.0}, own_lr=True, lr_scale=100.0),
    "star": MethodSpec(None, guard="star"),
    "guard": MethodSpec(None, guard="guard"),
    "cipo": MethodSpec("cipo", "items"),
}


def sweep_lrs(spec: MethodSpec, base_lr: float, own_default: float | None = None) -> list[float]:
    """The learning rates a method is tried at (none for a guard)."""
    if spec.method is None:
        return []
    base = (own_default if spec.own_lr and own_default else base_lr) * spec.lr_scale
    return [round(base * m, 12) for m in LR_SWEEP]


def sweep_settings(spec: MethodSpec, base_lr: float) -> dict[str, float | None]:
    """{setting key: learning rate} of a method's sweep, in the order of `LR_SWEEP` (R²MU's base is its
    own default, `R2muConfig.r2mu_lr`); a guard has the one setting "target" (no rate)."""
    if spec.method is None:
        return {"target": None}
    from cipo_fast.config import R2muConfig

    own = R2muConfig().r2mu_lr if spec.method == "r2mu" else None
    return {f"lr={lr:g}": lr for lr in sweep_lrs(spec, base_lr, own)}


def worst_leak(row: dict) -> float:
    return max(v for v in (row.get("max_leak_cot"), row.get("max_leak_answer")) if v is not None)


def keeps_utility(row: dict, target: dict) -> bool:
    return all(
        row.get(k) is None or target.get(k) is None or row[k] >= target[k] - UTILITY_DROP
        for k in ("retain_accuracy", "arithmetic_accuracy")
    )


def best_setting(rows: dict[str, dict], target: dict) -> str:
    """The key of the best setting in `rows` (settings' headline numbers) by the module's rule."""
    if not rows:
        raise ValueError("no settings to choose from")
    kept = [k for k, r in rows.items() if keeps_utility(r, target)]
    if kept:
        return min(kept, key=lambda k: (worst_leak(rows[k]), -(rows[k].get("retain_accuracy") or 0.0)))

    def utility(k):
        r = rows[k]
        return (r.get("retain_accuracy") or 0.0) + (r.get("arithmetic_accuracy") or 0.0)

    return max(rows, key=utility)


def headline(summary: dict) -> dict:
    """An evaluation summary's numbers that the comparison reports (MIA: the Min-K% AUC,
    `cipo_fast.eval.mia.HEADLINE_ATTACK`)."""
    from cipo_fast.eval.mia import HEADLINE_ATTACK

    st = summary["strategies"]
    cot = [v["leak_cot"] for v in st.values() if v["leak_cot"] is not None]
    fluency = summary.get("fluency") or {}
    mia = summary.get("mia") or {}

    def auc(part):
        entry = ((mia.get(part) or {}).get("attacks") or {}).get(HEADLINE_ATTACK)
        return None if entry is None else entry["auc"]

    def privleak(part):
        entry = ((mia.get(part) or {}).get("attacks") or {}).get(HEADLINE_ATTACK)
        return None if entry is None else entry.get("privleak")

    rtofu = summary.get("rtofu") or {}

    return {
        "max_leak_cot": max(cot) if cot else None,
        "max_leak_answer": max(v["leak_answer"] for v in st.values()),
        "greedy_leak_cot": st["greedy"]["leak_cot"],
        "greedy_leak_answer": st["greedy"]["leak_answer"],
        "mcs": summary["mcs"],
        "retain_accuracy": summary.get("retain", {}).get("accuracy"),
        "arithmetic_accuracy": summary.get("utility", {}).get("accuracy"),
        "greedy_logprob": (fluency.get("greedy") or {}).get("mean_logprob"),
        "retain_logprob": (fluency.get("retain") or {}).get("mean_logprob"),
        "sampled_repetition": (fluency.get("sample_t1.0") or {}).get("repetition_rate"),
        "mia_auc_answer": auc("answer"),
        "mia_auc_cot": auc("cot"),
        "privleak_answer": privleak("answer"),
        "privleak_cot": privleak("cot"),
        "rtofu_forget_efficacy": rtofu.get("forget_efficacy"),
        "rtofu_cot_forget_efficacy": rtofu.get("cot_forget_efficacy"),
        "rtofu_model_utility": rtofu.get("model_utility"),
        "wall_s": summary.get("wall_s"),
    }


def summarize_sweep(runs: dict[str, dict[str, dict]], target: dict) -> dict:
    """{method: {"best": setting, "settings": {setting: headline}}} from {method: {setting: headline}}."""
    out = {}
    for name, rows in runs.items():
        out[name] = {"best": best_setting(rows, target) if rows else None, "settings": dict(rows)}
    return out


COLUMNS = {  # key -> (header, format)
    "max_leak_cot": ("worst CoT leak", "pct"),
    "max_leak_answer": ("worst answer leak", "pct"),
    "mcs": ("MCS", "pct"),
    "retain_accuracy": ("retain acc", "pct"),
    "arithmetic_accuracy": ("arithmetic acc", "pct"),
    "greedy_logprob": ("log-prob, forget greedy", "num"),
    "retain_logprob": ("log-prob, retain", "num"),
    "sampled_repetition": ("3-gram rep., T = 1.0", "num"),
    "mia_auc_answer": ("MIA AUC answer", "num"),
    "mia_auc_cot": ("MIA AUC CoT", "num"),
    "wall_s": ("wall time", "s"),
}
EXTRA_COLUMNS = {  # R-TOFU's aggregates (bench/rtofu.py's table)
    "rtofu_forget_efficacy": ("R-TOFU FE", "pct"),
    "rtofu_cot_forget_efficacy": ("CoT FE", "pct"),
    "rtofu_model_utility": ("R-TOFU MU", "pct"),
    "privleak_answer": ("privleak answer", "num1"),
}


def _cells(row: dict, keys) -> list[str]:
    formats = {"pct": lambda v: f"{100 * v:.1f}%", "s": lambda v: f"{v:.0f} s", "num1": lambda v: f"{v:.1f}"}
    out = []
    for key in keys:
        v, kind = row.get(key), {**COLUMNS, **EXTRA_COLUMNS}[key][1]
        out.append("–" if v is None else formats.get(kind, lambda v: f"{v:.2f}")(v))
    return out


def compare_table(summary: dict, target: dict, keys=tuple(COLUMNS)) -> str:
    """Markdown table: the target, then each method at its best setting (log-probs under the target
    model; MIA: Min-K% AUC of forget vs holdout authors, 0.5 = indistinguishable from unseen ones).
    `keys`: the columns, of `COLUMNS` and `EXTRA_COLUMNS`."""
    header = {**COLUMNS, **EXTRA_COLUMNS}
    head = ["method", "setting", *(header[k][0] for k in keys)]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    lines.append(" | ".join(["target (before)", "–", *_cells(target, keys)]))
    for name, entry in sorted(summary.items(), key=lambda kv: kv[0] not in ("cipo", "cipo_paper")):
        if entry["best"] is not None:
            lines.append(" | ".join([name, entry["best"], *_cells(entry["settings"][entry["best"]], keys)]))
    return "\n".join(lines)


def sweep_table(summary: dict) -> str:
    """Markdown table of every setting tried (the best one of each method marked)."""
    keys = ("max_leak_cot", "max_leak_answer", "retain_accuracy", "arithmetic_accuracy", "wall_s")
    head = ["method", "setting", *(COLUMNS[k][0] for k in keys)]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, entry in summary.items():
        for key, row in entry["settings"].items():
            mark = " (best)" if key == entry["best"] else ""
            lines.append(" | ".join([name, key + mark, *_cells(row, keys)]))
    return "\n".join(lines)
