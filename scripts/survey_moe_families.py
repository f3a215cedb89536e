"""Try to record every transformers MoE family on a tiny random config; print one status line per family.

The registry walk (`tests/moe_registry.py`) lists the families; this tells which of them RouteScope records
with its generic mechanism, and the one-line error it gives for the others, to keep docs/routers.md honest.
It builds each family from generic small config values (`tests/tiny_families.CONFIG`: hidden 32, 2 layers,
8 experts, top-2), so a
family whose config needs more than that is reported as `not built` with transformers' error: that is a
limit of this survey, not a RouteScope refusal. Only a `RouteScopeError` is a refusal, and a
`NoRoutersError` here usually means the family's default config has no MoE layer in 2 layers (pass the
family's own switches, as tests/tiny_families.py `TUNED` does).

    python scripts/survey_moe_families.py [module ...] > survey.tsv   # a few seconds per family
"""

from __future__ import annotations

import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

import routescope
from routescope.store.errors import RouteScopeError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.moe_registry
from tests.moe_registry import MoeFamily, moe_families
from tests.tiny_families import CONFIG as SMALL

INPUTS = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def _build(model_type: str) -> torch.nn.Module:
    config = AutoConfig.for_model(model_type, **SMALL)
    for sub in ("text_config",):
        inner = getattr(config, sub, None)
        if inner is not None:
            for key, value in SMALL.items():
                setattr(inner, key, value)
    torch.manual_seed(0)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    try:
        return auto.from_config(config).eval()
    except ValueError as exc:  # no LM head class for this config: the base model has the routers too
        if "Unrecognized configuration class" not in str(exc):
            raise
        return AutoModel.from_config(config).eval()


def _line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def survey(family: MoeFamily, store: str) -> tuple[str, str]:
    """(status, detail) for one family: `records`, `refused`, `crashed` (the model's forward) or `not built`.
    Tries the family's text model types first and never its vision/audio towers (the experts are in the
    language model)."""
    towers = ("vision", "audio", "sam_", "asr", "timestamp")
    types = sorted(
        (t for t in family.model_types if not any(part in t for part in towers)),
        key=lambda t: (not t.endswith("_text"), t != family.module, t),
    )
    errors = []
    for model_type in types:
        signal.alarm(60)
        try:
            model = _build(model_type)
        except (_Timeout, Exception) as exc:  # any build failure is reported, not raised
            errors.append(f"{model_type}: {_line(exc)}")
            continue
        finally:
            signal.alarm(0)
        signal.alarm(60)
        try:
            run = routescope.record(model, INPUTS, store=store, name="s", overwrite=True, progress=False)
        except RouteScopeError as exc:
            return "refused", f"{model_type}: {type(exc).__name__}: {exc}"
        except (_Timeout, Exception) as exc:  # the model's own forward failed on the generic config
            return "crashed", f"{model_type}: {_line(exc)}"
        finally:
            signal.alarm(0)
        conventions = "/".join(sorted({r["convention"] for r in run.routers}))
        kinds = "/".join(sorted({r["kind"] for r in run.routers}))
        return "records", f"{model_type}: {len(run.routers)} routers, {conventions}, {kinds}"
    return "not built", "; ".join(errors)[:300] or "no text model type"


def main(names: list[str]) -> None:
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _alarm)
    families = moe_families()
    with tempfile.TemporaryDirectory() as store:
        for name in names or list(families):
            status, detail = survey(families[name], store)
            sys.stdout.write(f"{name}\t{status}\t{detail}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
