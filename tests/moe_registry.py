"""Every MoE family in the installed transformers, found by reading its source (no model is built).

docs/routers.md promises a status for every transformers MoE family; a transformers upgrade adds families
without telling us. This walks transformers' own registry (`CONFIG_MAPPING_NAMES`: every `model_type` and
its config class), groups the model types by the `transformers/models/<module>/` folder that implements
them (one *family*, e.g. `qwen3_vl_moe` with its text and vision configs) and calls a family MoE when its
source shows any of:
- transformers' router declaration: `"router_logits"` in a `_can_record_outputs` mapping (what RouteScope
  itself uses to find routers);
- a class named like an MoE part: `*SparseMoeBlock`, `*MoE`/`*Moe`, `*Experts`, `*Router`, `*Gating`;
- an expert count on a config class: `num_experts`, `num_local_experts`, `n_routed_experts`,
  `moe_num_experts`.
Only text is read (`configuration_*.py`, `modeling_*.py`), so the walk is deterministic and takes about
a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES, model_type_to_module_name

_DECLARATION = re.compile(r"_can_record_outputs\s*=\s*\{[^}]*[\"'](?:\w+_)?router_logits[\"']", re.S)
_CLASS = re.compile(r"^class (\w+?(?:SparseMoeBlock|MoE|Moe|Experts|Router|Gating))\b", re.M)
_EXPERT_COUNT = re.compile(r"\b(num_experts|num_local_experts|n_routed_experts|moe_num_experts)\b")


@dataclass(frozen=True)
class MoeFamily:
    """One `transformers/models/<module>/` folder whose source shows an MoE."""

    module: str
    model_types: tuple[str, ...]
    declares_router: bool
    """`router_logits` is declared in `_can_record_outputs` (RouteScope finds the routers itself)."""
    classes: tuple[str, ...]
    expert_count_attrs: tuple[str, ...]


def _read(folder: Path, pattern: str) -> str:
    return "".join(path.read_text(encoding="utf-8") for path in sorted(folder.glob(pattern)))


def moe_families() -> dict[str, MoeFamily]:
    """Every MoE family of the installed transformers, keyed by module folder name (sorted)."""
    root = Path(transformers.__file__).parent / "models"
    by_module: dict[str, list[str]] = {}
    for model_type in CONFIG_MAPPING_NAMES:
        by_module.setdefault(model_type_to_module_name(model_type), []).append(model_type)
    found: dict[str, MoeFamily] = {}
    for module in sorted(by_module):
        folder = root / module
        modeling, configuration = _read(folder, "modeling_*.py"), _read(folder, "configuration_*.py")
        family = MoeFamily(
            module=module,
            model_types=tuple(sorted(by_module[module])),
            declares_router=bool(_DECLARATION.search(modeling)),
            classes=tuple(dict.fromkeys(_CLASS.findall(modeling))),
            expert_count_attrs=tuple(sorted(set(_EXPERT_COUNT.findall(configuration)))),
        )
        if family.declares_router or family.classes or family.expert_count_attrs:
            found[module] = family
    return found


if __name__ == "__main__":
    for name, fam in moe_families().items():
        print(name, fam.model_types, fam.declares_router, fam.classes[:3], fam.expert_count_attrs)
