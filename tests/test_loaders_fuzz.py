"""Every input format, fuzzed: any bytes give either a valid result or a ValueError that names the file
(and the line, where one line is at fault) -- never another exception.

Two generators per format: raw bytes (invalid UTF-8, broken JSON, deep nesting, `NaN`), and JSON lines
built from the format's own field names with values of every JSON type, including strings that no
tokenizer encodes (unpaired surrogate escapes) and chat messages with odd roles, so the checks behind
the JSON parser are reached too.
"""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipo_fast.config import TrainConfig
from cipo_fast.data.formats import load_pairs, load_singles, load_training_data
from cipo_fast.data.io import read_jsonl
from cipo_fast.data.items import Item, load_gsm8k, load_items
from cipo_fast.eval.predictions import read_predictions
from cipo_fast.train.reference import reference_namespace
from cipo_fast.trainers.finetune import sft_rows
from cipo_fast.unlearning.pairs import load_alternatives, load_seeds

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
ITEMS = [Item("0", "Q?", "A."), Item("a", "Q2?", "B.")]
SPECIAL = st.sampled_from(
    ["", " ", "\ud800", "x\udfff", "#### 12", "a #### 1,200", "<think>", "0", "a", "\x00"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS | SPECIAL,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | SPECIAL, inner, max_size=3)
    ),
    max_leaves=6,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]) | SPECIAL, "content": VALUES}
    ),
    max_size=3,
)


TEXTS = st.text(max_size=16) | SPECIAL


def rows(*keys: str):
    """JSON objects over `keys` (and a few others), values of any JSON type; half of them hold every key,
    mostly with text, so the checks after a row's shape (tokenization, chat templates) are reached."""
    key = st.sampled_from(keys) | st.sampled_from(["id", "cot", "answer", "task_id"]) | st.text(max_size=4)
    value = VALUES | MESSAGES | st.fixed_dictionaries({"cot": VALUES, "answer": VALUES})
    textish = TEXTS | TEXTS | MESSAGES | st.fixed_dictionaries({"cot": TEXTS, "answer": TEXTS}) | VALUES
    complete = st.fixed_dictionaries({k: textish for k in keys})
    return complete | st.dictionaries(key, value, max_size=len(keys) + 2)


def jsonl(*keys: str):
    """File contents: JSON lines of `rows(keys)`, mixed with raw lines."""
    line = rows(*keys).map(lambda r: json.dumps(r).encode()) | VALUES.map(lambda v: json.dumps(v).encode())
    line = line | st.binary(max_size=24) | st.sampled_from([b"NaN", b"[" * 5000, b"{", b"\xff\xfe", b""])
    return st.lists(line, max_size=6).map(lambda ls: b"\n".join(ls))


def check(path: Path, load) -> None:
    try:
        load(path)
    except ValueError as e:
        assert str(path) in str(e), f"the message does not name the file: {e}"


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    from cipo_fast.data.tokenize import TextFormat, Tokenizer

    return Tokenizer(AutoTokenizer.from_pretrained(tiny_model_dir), TextFormat(max_length=64))


def fuzz(name: str, keys: tuple[str, ...], make_loader):
    """Two hypothesis tests (raw bytes, structured lines) for one loader."""

    def run(contents, tmp_path_factory, request):
        path = tmp_path_factory.mktemp("fuzz") / f"{name}.jsonl"
        path.write_bytes(contents)
        check(path, make_loader(request))

    @SETTINGS
    @given(contents=st.binary(max_size=200))
    def raw(tmp_path_factory, request, contents):
        run(contents, tmp_path_factory, request)

    @SETTINGS
    @given(contents=jsonl(*keys))
    def structured(tmp_path_factory, request, contents):
        run(contents, tmp_path_factory, request)

    return raw, structured


def _tok(request):
    return request.getfixturevalue("tok")


LOADERS = {
    "jsonl": (("id",), lambda r: read_jsonl),
    "pairs": (("prompt", "chosen", "rejected"), lambda r: lambda p: load_pairs(p, _tok(r))),
    "singles": (
        ("prompt", "completion", "prefill", "question"),
        lambda r: lambda p: load_singles(p, _tok(r)),
    ),
    "singles_answer": (
        ("prompt", "completion", "question"),
        lambda r: lambda p: load_singles(p, _tok(r), loss_on="answer"),
    ),
    "training_data": (
        ("prompt", "chosen", "completion"),
        lambda r: lambda p: load_training_data(p, _tok(r), "pairwise"),
    ),
    "items": (("question", "answer", "cot", "facts", "id"), lambda r: load_items),
    "items_folds": (("question", "answer", "task_id"), lambda r: lambda p: load_items(p, task_ids=[1, 2])),
    "gsm8k": (("question", "answer"), lambda r: load_gsm8k),
    "predictions": (("id", "strategy", "output"), lambda r: lambda p: read_predictions(p, ITEMS)),
    "seeds": (("id", "cot", "answer", "idk_cot", "idk_answer"), lambda r: lambda p: load_seeds(p, ITEMS)),
    "alternatives": (("id", "alternative"), lambda r: load_alternatives),
    "finetune": (("question", "answer", "cot"), lambda r: lambda p: sft_rows((str(p),), direct_answers=True)),
}
for _name, (_keys, _make) in LOADERS.items():
    _raw, _structured = fuzz(_name, _keys, _make)
    globals()[f"test_{_name}_raw_bytes"] = _raw
    globals()[f"test_{_name}_structured_rows"] = _structured


CONFIG_KEYS = ("method", "model", "data", "out", "beta", "lr", "cipo", "max_steps", "resume")


@SETTINGS
@given(contents=st.binary(max_size=200) | rows(*CONFIG_KEYS).map(lambda r: json.dumps(r).encode()))
def test_run_config_json(tmp_path_factory, contents):
    """A run's `config.json`, read back on --resume."""
    path = tmp_path_factory.mktemp("fuzz") / "config.json"
    path.write_bytes(contents)
    check(path, TrainConfig.from_json)


@SETTINGS
@given(contents=st.binary(max_size=100) | rows("namespace", "source").map(lambda r: json.dumps(r).encode()))
def test_reference_record(tmp_path_factory, contents):
    """A run's `reference.json`: only a namespace hash is ever accepted."""
    run = tmp_path_factory.mktemp("fuzz")
    path = run / "reference.json"
    path.write_bytes(contents)
    try:
        ns = reference_namespace(None, None, run)
    except ValueError as e:
        assert str(path) in str(e)
    else:
        assert len(ns) == 32 and set(ns) <= set("0123456789abcdef")
