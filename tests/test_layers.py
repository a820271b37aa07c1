"""The import-linter contract in pyproject.toml holds: layers import only downwards, no import cycles (imports inside
functions included), and nothing below `genvision.training` imports Accelerate. A second run on a copy of the
package with one upward import added shows the contract is not vacuous."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = (ROOT / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")  # no tomllib on 3.10


def lint_imports(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(package_parent)})


def test_the_import_contract_holds():
    result = lint_imports(ROOT, ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert CONTRACTS == 5 and f"Contracts: {CONTRACTS} kept, 0 broken." in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("module, upward, message, broken", [
    # the package layers, no-cycle, and the run's stages (training.finish -> sampling -> training.fid, indirectly)
    ("sampling.py", "genvision.training.fid import TrainingFID",
     "genvision.sampling is not allowed to import genvision.training", 3),
    # the run's stages and no-cycle
    ("training/plan.py", "genvision.training.loop import run_schedule",
     "genvision.training.plan is not allowed to import genvision.training.loop", 2),
])
def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path, module, upward, message, broken):
    shutil.copytree(ROOT / "genvision", tmp_path / "genvision", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "genvision" / module, "a") as handle:
        handle.write(f"\n\ndef _upward():\n    from {upward}\n\n    return None\n")
    result = lint_imports(tmp_path, tmp_path)
    assert result.returncode == 1, result.stdout[-4000:]
    assert message in result.stdout, result.stdout[-4000:]
    assert f"Contracts: {CONTRACTS - broken} kept, {broken} broken." in result.stdout, result.stdout[-2000:]
