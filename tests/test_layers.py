"""The layers of ../shared/DESIGN.md hold: import-linter's contracts in pyproject.toml (core never imports
Streamlit; only core.learning imports Keras or TensorFlow; reading imports no model runtime; serving
does not import the learning tier) are all kept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERAS_CONTRACT = "Only core.learning imports Keras or TensorFlow"


def _lint_imports() -> list[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    # No cache: nothing is written into the repository, and a stale graph can never pass.
    return [exe, "--config", "pyproject.toml", "--no-cache"]


def test_import_contracts_are_kept():
    proc = subprocess.run(_lint_imports(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    print(output)
    assert proc.returncode == 0, f"lint-imports exited {proc.returncode}:\n{output}"
    assert "5 kept, 0 broken" in output, output


def _core_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "core").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def _matches(expression: str, module: str) -> bool:
    pattern = re.escape(expression).replace(r"\*\*", r"[^.]+(\.[^.]+)*").replace(r"\*", r"[^.]+")
    return re.fullmatch(pattern, module) is not None


def test_the_keras_contract_covers_every_core_module_outside_the_learning_tier():
    """Its source modules are listed one by one (so that `core` does not take core.learning with it):
    a new core module must be added to the list, or the contract would not see it."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        contracts = tomllib.load(fh)["tool"]["importlinter"]["contracts"]
    contract = next(c for c in contracts if c["name"] == KERAS_CONTRACT)
    assert contract["as_packages"] is False and set(contract["forbidden_modules"]) == {"keras", "tensorflow"}
    assert not contract.get("allow_indirect_imports") and not contract.get("ignore_imports")
    modules = _core_modules()
    exempt = {m for m in modules if m == "core.learning" or m.startswith("core.learning.")} | {"core.__main__"}
    assert "core.learning.persist" in exempt and "core.storage.store" in modules
    covered = {m for m in modules if any(_matches(e, m) for e in contract["source_modules"])}
    assert modules - exempt - covered == set(), "core modules missing from the contract's source_modules"
    assert covered & exempt == set(), "the learning tier and the CLI are not held to the contract"
