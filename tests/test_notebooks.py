"""The notebooks in notebooks/ run end to end on the bundled models and are stored without outputs.

Each notebook states a published claim, checks it on a bundled model with `routescope.claims` and prints
one `VERDICT <claim> reproduces|does-not-reproduce` line per claim; executing them here (nbclient, the
venv's own kernel) keeps them working as the API changes, and the verdicts they print must be the ones the
README's table (written by scripts/claims_table.py from the same checks) states.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ROW = re.compile(
    r"^\| `(?P<notebook>[\w]+)` \| `(?P<claim>[\w-]+)` \| `[^`]+` \| \*\*(?P<verdict>[a-z ]+)\*\*"
)


def readme_verdicts() -> dict[str, dict[str, bool]]:
    """notebook → claim → reproduces, from the README's claims table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- claims-table:start -->")[1].split("<!-- claims-table:end -->")[0]
    out: dict[str, dict[str, bool]] = {}
    for line in table.splitlines():
        match = ROW.match(line)
        if match:
            out.setdefault(match["notebook"], {})[match["claim"]] = match["verdict"] == "reproduces"
    return out


def test_readme_table_covers_every_registered_claim() -> None:
    from routescope.claims import CLAIMS

    claimed = {claim for verdicts in readme_verdicts().values() for claim in verdicts}
    assert claimed == set(CLAIMS)
    assert {f"{stem}" for stem in readme_verdicts()} == {p.stem for p in NOTEBOOKS}


def test_there_is_a_notebook_per_claim() -> None:
    assert len(NOTEBOOKS) == 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name}: clear the outputs before committing"
            assert cell["execution_count"] is None


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_gives_a_verdict(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )
    printed_verdicts = {
        claim: outcome == "reproduces"
        for claim, outcome in re.findall(r"^VERDICT (\S+) (\S+)$", printed, re.M)
    }
    assert printed_verdicts == readme_verdicts()[path.stem]  # the README states what the notebook computes
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert errors == []
