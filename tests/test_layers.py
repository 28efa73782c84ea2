"""The layer rules of DESIGN.md are executable: ``lint-imports`` (``make lint``) checks the contracts in
``pyproject.toml``, and a contract broken on purpose fails it, naming the import chain."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "service", "worker", "drawai")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tree), "HOME": str(tree)}
    cmd = [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and the contracts, to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_project_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("service/deps.py", "import torch", "the API (service) never imports torch"),
        ("service/encoders.py", "from models.gan import training", "the API (service) never imports torch"),
        ("worker/main.py", "from models.quality import metrics", "the worker's parent process never imports torch"),
        ("models/data/sources.py", "import torch", "the platform, data and report layers are torch-free"),
        ("models/platform/store.py", "from service import errors", "models never imports the API"),
        ("models/gan/export.py", "from models.quality import evaluation", "models layers"),
    ],
)
def test_a_broken_rule_fails_the_lint(tree: Path, module: str, line: str, contract: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n\ndef _broken() -> None:\n    {line}  # noqa\n")  # lazy imports count too
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    assert any(name.startswith(contract) for name in broken_contracts(result.stdout)), result.stdout


def broken_contracts(output: str) -> list[str]:
    """The names of the contracts ``lint-imports`` reports BROKEN (its lines wrap: whitespace is collapsed)."""
    section = output.split("dependencies.", 1)[1].split("Contracts:", 1)[0]
    lines = [line for line in section.splitlines() if line.strip("- ")]  # not the rules under headings
    statuses = re.findall(r"(.+?) (KEPT|BROKEN)", " ".join(" ".join(lines).split()))
    return [name.strip() for name, status in statuses if status == "BROKEN"]
