"""The package as users and packagers see it: the public API, the sub-packages a wheel ships, the
sub-package docstrings that list their modules, and the size of every module."""

import ast
import importlib
import types
from pathlib import Path

import pytest

import cipo_fast

REPO = Path(__file__).resolve().parents[1]


def test_public_api():
    for sub in ("ops", "model", "data", "train", "unlearning", "eval", "synthetic"):
        importlib.import_module(f"cipo_fast.{sub}")
    for name in cipo_fast.__all__:
        assert getattr(cipo_fast, name) is not None, name
    kind, fn = cipo_fast.get_loss("sigmoid")
    assert kind == "pairwise" and cipo_fast.LOSSES["sigmoid"] is fn
    assert cipo_fast.TrainConfig(method="dpo", model="m", data="d", out="o").cipo == cipo_fast.CipoConfig()
    for sub in (
        "ops",
        "model",
        "data",
        "train",
        "unlearning",
        "eval",
        "synthetic",
    ):  # no public name shadows one
        assert isinstance(getattr(cipo_fast, sub), types.ModuleType), sub


def test_every_sub_package_is_shipped_and_lists_its_modules():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    shipped = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for init in sorted((REPO / "cipo_fast").rglob("__init__.py")):
        package = ".".join(init.parent.relative_to(REPO).parts)
        assert package in shipped, f"{package} is missing from pyproject.toml's packages"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if package == "cipo_fast":
            continue
        for module in sorted(init.parent.glob("*.py")):
            if module.name != "__init__.py":
                assert module.name in doc or module.stem in doc, (
                    f"{package}'s docstring does not list {module.name}"
                )
    assert {"cipo_fast.trainers", "cipo_fast.csrc_triton"} <= shipped


def test_no_module_over_500_lines():
    files = [
        *REPO.glob("cipo_fast/**/*.py"),
        *REPO.glob("trainers/*.py"),
        *REPO.glob("bench/*.py"),
        *REPO.glob("csrc_triton/*.py"),
    ]
    long = {str(f.relative_to(REPO)): n for f in files if (n := len(f.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"
