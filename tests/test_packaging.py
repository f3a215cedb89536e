"""The distribution: one `routescope` namespace, and every sub-package and data file actually shipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    found = set()
    for root_name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((root_name, *relative)))
    assert sorted(found) == sorted(config["packages"])


def test_one_namespace_only(tmp_path: Path) -> None:
    """The install exposes `routescope` and nothing else at top level (checked outside the repo's folder)."""
    probe = (
        "import importlib.util, routescope, routescope.store, routescope.hooks, routescope.analysis,"
        " routescope.models,"
        " routescope.dashboard, routescope.dashboard.app_pages, routescope.figures,"
        " routescope.models.dit_moe, routescope.probes;"
        "print([m for m in ('store', 'hooks', 'analysis', 'app', 'models') if importlib.util.find_spec(m)])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_bundled_weights_are_small_safetensors() -> None:
    weights = sorted((ROOT / "models").rglob("*.safetensors"))
    assert {w.parent.parent.name for w in weights} == {"moe_lm", "dit_digits", "switch_dit"}
    assert all(w.stat().st_size <= 15 * 2**20 for w in weights)  # issue 18: a bundled model ≤ 15 MB
    assert sum(w.stat().st_size for w in weights) <= 40 * 2**20
    assert not list((ROOT / "models").rglob("*.bin"))
    assert not list((ROOT / "models").rglob("*.pt"))
