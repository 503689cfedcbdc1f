"""The layers of docs/architecture.md hold because ``make lint`` runs import-linter with the contracts
in pyproject.toml: the tree as it is passes, and a copy of it with one wrong import fails, naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("governor", "manifests", "insights", "approvals", "monitoring", "jobs", "notifications", "governance")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_the_tree(destination: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_a_back_import_or_a_cycle_fails_the_lint_and_is_named(tmp_path):
    tree = copy_of_the_tree(tmp_path)
    # governance is the lowest layer: a function-local import of change control counts too.
    with open(tree / "governance" / "access.py", "a") as module:
        module.write("\n\ndef _wrong():\n    from approvals.models import ChangeRequest\n\n    return ChangeRequest\n")
    # jobs.execution_spec imports jobs.placeholders: importing it back closes a cycle inside jobs.
    with open(tree / "jobs" / "placeholders.py", "a") as module:
        module.write("\n\ndef _cycle():\n    from .execution_spec import ParameterError\n\n    return ParameterError\n")

    result = lint_imports(tree)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 0 kept, 2 broken." in result.stdout
    assert "governance is not allowed to import approvals" in result.stdout
    assert "governance.access -> approvals.models" in result.stdout
    assert "No cycles are allowed in jobs." in result.stdout
    assert ".placeholders -> .execution_spec" in result.stdout
