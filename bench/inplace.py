"""Import cipo-fast from this working tree without installing it, for `make gpu-check`.

The GPU machine the check runs on has no network: nothing can be built or downloaded there, and its
Python has torch, Triton, transformers, peft, accelerate, pytest and hypothesis but not the rest of the
project's dependencies. So the check does not install the project; `use_working_tree()`:

* puts the repository root first on `sys.path` (a `cipo_fast` installed elsewhere is not used);
* adds a finder for the two sub-packages that `pyproject.toml` maps outside `cipo_fast/`
  (`[tool.setuptools.package-dir]`, checked against this table by the test suite);
* puts every pure-Python wheel under `bench/wheels/` on `sys.path` (a wheel is a zip archive that
  `zipimport` reads): how peers the machine lacks (liger-kernel, cut-cross-entropy) can travel with
  the working tree.

`python bench/inplace.py -- ARGS` runs `pytest ARGS` with the same set-up (how the check runs the
kernel tests in a child process).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "bench" / "wheels"
PACKAGE_DIRS = {"cipo_fast.trainers": "trainers", "cipo_fast.csrc_triton": "csrc_triton"}


class _MappedPackages(importlib.abc.MetaPathFinder):
    """Finds `PACKAGE_DIRS` packages and their modules in the working tree."""

    def find_spec(self, name, path=None, target=None):
        for package, folder in PACKAGE_DIRS.items():
            if name == package:
                init = REPO / folder / "__init__.py"
                return importlib.util.spec_from_file_location(
                    name, init, submodule_search_locations=[str(REPO / folder)]
                )
            if name.startswith(package + "."):
                rel = name[len(package) + 1 :].replace(".", "/")
                for candidate in (REPO / folder / f"{rel}.py", REPO / folder / rel / "__init__.py"):
                    if candidate.is_file():
                        return importlib.util.spec_from_file_location(name, candidate)
        return None


def use_working_tree() -> list[str]:
    """Set up the imports (module docstring); returns the wheels put on `sys.path`."""
    wheels = sorted(str(w) for w in WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    for entry in [str(REPO), *wheels][::-1]:
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    if not any(isinstance(f, _MappedPackages) for f in sys.meta_path):
        sys.meta_path.insert(0, _MappedPackages())
    importlib.invalidate_caches()
    return wheels


if __name__ == "__main__":
    use_working_tree()
    import pytest

    args = sys.argv[1:]
    sys.exit(pytest.main(args[1:] if args[:1] == ["--"] else args))
