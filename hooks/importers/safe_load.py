"""Loading pickled traces safely: raw pickles are refused, `torch.save` dumps load with `weights_only=True`.

SGLang's expert-distribution recorder writes `torch.save` files and OLMoE's `run_routing_analysis.py`
pickles Counters; unpickling can run any code a file carries, so RouteScope never unpickles a raw file
and loads torch dumps only through `weights_only=True` (tensors, dicts, lists, numbers), then refuses
anything that is not plain data (a Counter, which weights_only allows) in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import bad

PICKLE_MAGIC = (b"\x80",)
"""How a raw pickle starts (protocol 2 and later); `torch.save` files are zip archives instead."""


def refuse_pickle(path: Path) -> None:
    """Refuse a raw pickle (e.g. OLMoE's pickled Counters) in one line: unpickling can run any code."""
    with path.open("rb") as handle:
        head = handle.read(1)
    if head.startswith(PICKLE_MAGIC):
        raise bad(
            path,
            None,
            "a Python pickle (e.g. pickled Counters): refused, since unpickling can run arbitrary code; "
            "export the routing as JSONL or torch.save tensors",
        )


def torch_load(path: Path) -> Any:
    """A `torch.save` file loaded with `weights_only=True` (tensors, dicts, lists, numbers only); anything
    else — a pickled Counter, a class — is refused in one line, never unpickled."""
    import pickle

    import torch  # only torch.save dumps need it

    refuse_pickle(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise bad(
            path,
            None,
            "holds Python objects other than tensors, dicts, lists and numbers (e.g. a Counter): refused, "
            "since loading them could run arbitrary code",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        problem = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise bad(path, None, f"not a readable torch.save file ({problem})") from None
    odd = _odd_object(data, torch.Tensor)
    if odd is not None:
        raise bad(
            path,
            None,
            f"holds a {odd} where tensors, dicts, lists and numbers belong (e.g. pickled Counters): refused; "
            "save the counts as a tensor",
        )
    return data


def _odd_object(value: Any, tensor: type) -> str | None:
    """The type name of the first object in a loaded dump that is not plain data (None if all are)."""
    if isinstance(value, tensor) or value is None or type(value) in (int, float, bool, str):
        return None
    if type(value) is dict:
        return next((o for o in map(lambda v: _odd_object(v, tensor), value.values()) if o), None)
    if type(value) in (list, tuple):
        return next((o for o in (_odd_object(v, tensor) for v in value) if o), None)
    return type(value).__name__
