"""Which rows of a router call are the tokens a probe selected (for forcing some tokens, not all).

A router sees a flat batch of rows; the recorder knows which (sample, position) each row is, but the
model does not. A forward pre-hook on the whole model gives each selector the batch it is about to run:
text rows are identified by content — every batch row's real tokens (attention mask) are one chunk of
one input, tokenised and chunked exactly as `record()` does — and diffusion rows by the sampler's fixed
layout (conditional rows, then the unconditional rows of the same samples; patches row-major).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from routescope.hooks.interventions import InterventionError, TokenSelection
from routescope.hooks.units import make_units
from routescope.store.errors import InputError


def selection_mask(
    selection: TokenSelection, samples: np.ndarray, positions: np.ndarray, token_ids: np.ndarray | None
) -> np.ndarray:
    """Which of the given tokens a selection takes (every given filter must hold)."""
    keep = np.ones(len(samples), dtype=bool)
    if selection.samples is not None:
        keep &= np.isin(samples, sorted(selection.samples))
    if selection.positions is not None:
        keep &= np.isin(positions, sorted(selection.positions))
    if selection.token_ids is not None and token_ids is not None:
        keep &= np.isin(token_ids, sorted(selection.token_ids))
    return keep


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], name: str, index: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


class _Rows:
    current: torch.Tensor | None = None

    def rows(self, n_rows: int) -> torch.Tensor:
        if self.current is None or self.current.numel() != n_rows:
            seen = "no input" if self.current is None else f"{self.current.numel()} input tokens"
            raise InterventionError(
                f"a router call has {n_rows} rows but the model's input had {seen}; a token selection "
                "applies to routers that see the input tokens (decoder-only models, encoder routers)"
            )
        return self.current


class TextRows(_Rows):
    """Selected tokens of text batches, found by each row's content."""

    def __init__(self, selection: TokenSelection, token_ids: Sequence[Sequence[int]], chunk: int) -> None:
        if selection.classes is not None:
            raise InputError("a class selection is for diffusion models; select samples or positions")
        self.selection = selection
        self.by_place = selection.samples is not None or selection.positions is not None
        self.by_content: dict[tuple[int, ...], np.ndarray] = {}
        for unit in make_units(token_ids, chunk):
            ids = np.asarray(unit.ids, dtype=np.int64)
            mask = selection_mask(
                selection,
                np.full(len(ids), unit.sample),
                np.arange(unit.offset, unit.offset + len(ids)),
                ids,
            )
            known = self.by_content.setdefault(unit.ids, mask)
            if not np.array_equal(known, mask):
                raise InputError(
                    f"input {unit.sample} repeats an earlier input but the selection treats them "
                    "differently; a probe cannot tell identical inputs apart, so make them differ"
                )

    def on_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = _argument(args, kwargs, "input_ids", 0)
        if not isinstance(ids, torch.Tensor):
            self.current = None
            return
        ids = ids.detach().cpu().long()
        mask = _argument(args, kwargs, "attention_mask", 1)
        real = (
            mask.detach().cpu().bool()
            if isinstance(mask, torch.Tensor) and mask.shape == ids.shape
            else torch.ones_like(ids, dtype=torch.bool)
        )
        if not self.by_place:
            chosen = sorted(self.selection.token_ids or ())
            self.current = (torch.isin(ids, torch.tensor(chosen, dtype=torch.long)) & real).reshape(-1)
            return
        selected = torch.zeros_like(ids, dtype=torch.bool)
        for row in range(ids.shape[0]):
            key = tuple(ids[row][real[row]].tolist())
            found = self.by_content.get(key)
            if found is None:
                raise InterventionError(
                    "a batch row matches none of the probe's inputs; selecting tokens by sample or "
                    "position works when the probe records exactly its inputs, without generation"
                )
            selected[row, real[row]] = torch.from_numpy(found)
        self.current = selected.reshape(-1)


class PatchRows(_Rows):
    """Selected patch tokens of a diffusion sampler's CFG batch (`forward(x, t, y)`, cond rows first)."""

    def __init__(self, selection: TokenSelection, patches: int) -> None:
        if selection.samples is not None or selection.token_ids is not None:
            raise InputError("diffusion probes select tokens by class and patch position only")
        self.selection = selection
        self.patches = patches

    def on_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        y = _argument(args, kwargs, "y", 2)
        if not isinstance(y, torch.Tensor):
            self.current = None
            return
        y = y.detach().cpu().long().reshape(-1)
        half = y.shape[0] // 2
        classes = torch.cat([y[:half], y[:half]]) if y.shape[0] % 2 == 0 else y  # uncond rows: their pair
        rows = torch.ones(y.shape[0], dtype=torch.bool)
        if self.selection.classes is not None:
            rows = torch.isin(classes, torch.tensor(sorted(self.selection.classes), dtype=torch.long))
        cols = torch.ones(self.patches, dtype=torch.bool)
        if self.selection.positions is not None:
            cols = torch.isin(
                torch.arange(self.patches), torch.tensor(sorted(self.selection.positions), dtype=torch.long)
            )
        self.current = (rows[:, None] & cols[None, :]).reshape(-1)
