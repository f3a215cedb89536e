"""docs/routers.md lists every MoE family of the installed transformers, each with a status that is true.

A transformers upgrade that adds an MoE family makes `test_every_moe_family_is_listed` fail until the
family table in docs/routers.md has a row for it (run `scripts/survey_moe_families.py NAME` to see what
RouteScope does with it). A tested family whose modeling code applies a sigmoid to its router logits
must have a sigmoid row in hooks/families.py. Everything here reads source only (`tests/moe_registry.py`),
so this file is fast.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import transformers
from transformers.models.auto.configuration_auto import model_type_to_module_name

from routescope.hooks.families import family_info
from tests.moe_registry import moe_families
from tests.tiny_families import FAMILIES
from tests.tiny_vlms import VLM_FAMILIES

DOC = Path(__file__).resolve().parents[1] / "docs" / "routers.md"
HEADING = "## Every transformers MoE family"
STATUSES = ("recorded and tested", "records, untested", "refused", "not surveyed")
_ROW = re.compile(r"^\| `(\w+)` \| (.*?) \| (.*?) \| (.*) \|$")


def _table() -> dict[str, tuple[str, str]]:
    """module → (status, detail) from the family table of docs/routers.md."""
    text = DOC.read_text(encoding="utf-8")
    assert HEADING in text, f"docs/routers.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        match = _ROW.match(line.strip())
        if match:
            module, _types, status, detail = match.groups()
            assert module not in rows, f"{module} is listed twice"
            rows[module] = (status.strip(), detail.strip())
    return rows


@pytest.fixture(scope="module")
def table() -> dict[str, tuple[str, str]]:
    return _table()


def test_walk_finds_known_families() -> None:
    found = moe_families()
    assert {"mixtral", "jetmoe", "nllb_moe", "switch_transformers", "qwen3_vl_moe"} <= set(found)
    assert found["jetmoe"].declares_router
    assert found["nllb_moe"].declares_router
    assert not {"llama", "bert", "t5", "gpt2"} & set(found)  # dense families are not MoE
    assert len(found) >= 50


def test_every_moe_family_is_listed(table: dict[str, tuple[str, str]]) -> None:
    missing = sorted(set(moe_families()) - set(table))
    assert not missing, f"MoE families missing from the table in docs/routers.md: {', '.join(missing)}"
    stale = sorted(set(table) - set(moe_families()))
    assert not stale, f"docs/routers.md lists families this transformers does not have: {', '.join(stale)}"


def test_statuses_are_true(table: dict[str, tuple[str, str]]) -> None:
    tested = {model_type_to_module_name(name): name for name in FAMILIES}
    for module, (status, detail) in table.items():
        assert status in STATUSES, f"{module}: unknown status {status!r}"
        assert detail, f"{module}: the status needs its detail (a test, or the reason)"
        if status == "recorded and tested" and module in VLM_FAMILIES and module not in tested:
            assert f"tests/test_vision.py::*[{module}]" in detail, module  # recorded with images
        elif status == "recorded and tested":
            assert module in tested, f"{module} is not in tests/tiny_families.py"
            assert "tests/test_families.py" in detail, module
            assert f"[{tested[module]}]" in detail, module
    not_listed_as_tested = sorted(m for m in tested if table.get(m, ("",))[0] != "recorded and tested")
    assert not not_listed_as_tested, f"tested but not listed as tested: {not_listed_as_tested}"


_SIGMOID = re.compile(
    r"sigmoid\(\s*router_logits|router_logits(?:\.float\(\))?\.sigmoid\(|router_logits\.gather\([^)]*\)\.sigmoid\("
    r"|scoring_function = ACT2FN\[\"sigmoid\"\]"
)


def test_sigmoid_routers_have_a_sigmoid_row() -> None:
    """A tested family whose modeling code scores router logits with a sigmoid has `scoring="sigmoid"` in
    hooks/families.py (else its recorded `probs`, entropy and margin would be a softmax it never computed)."""
    root = Path(transformers.__file__).parent / "models"
    missing = []
    for name in FAMILIES:
        folder = root / model_type_to_module_name(name)
        source = "".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("modeling_*.py")))
        if _SIGMOID.search(source) and family_info(name).scoring != "sigmoid":
            missing.append(name)
    assert not missing, f"sigmoid routers without a sigmoid row in hooks/families.py: {missing}"


_PROBS = re.compile(r"return router_probabilities, top_k_weights, top_k_index")


def test_probability_routers_have_a_probs_row() -> None:
    """A tested family whose router returns softmax probabilities where others return logits (Gemma 4) has
    `scoring="probs"` (else RouteScope would softmax them a second time: flatter `probs`, higher entropy)."""
    root = Path(transformers.__file__).parent / "models"
    missing = []
    for name in FAMILIES:
        folder = root / model_type_to_module_name(name)
        source = "".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("modeling_*.py")))
        if _PROBS.search(source) and family_info(name).scoring != "probs":
            missing.append(name)
    assert "gemma4_text" in FAMILIES
    assert family_info("gemma4_text").scoring == "probs"
    assert not missing, f"routers returning probabilities without a probs row in hooks/families.py: {missing}"
