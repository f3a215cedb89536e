"""Split tokenised inputs into units that fit the model, and group units into padded batches.

A long sequence is cut into chunks of at most `chunk_size` tokens; every chunk keeps its sample id and
the absolute position of its first token, so the record still reads as one sequence (the model sees each
chunk without the others' context — see docs/format.md). Forward batches are right-padded (real tokens
keep positions 0..n-1 and, with causal attention, never see the padding); generation batches are
left-padded as `generate` expects. The layout functions say, for every row a router call returns, which
(sample, position) it is and whether it is a real token, so padding never enters the record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Unit:
    """A contiguous piece of one sample that is run as one sequence."""

    sample: int
    offset: int
    ids: tuple[int, ...]
    generate: bool = False


def make_units(token_ids: Sequence[Sequence[int]], chunk_size: int, generate: bool) -> list[Unit]:
    """Chunk each sample; with generation only the last chunk of a sample generates."""
    units = []
    for sample, ids in enumerate(token_ids):
        starts = list(range(0, len(ids), chunk_size))
        for i, start in enumerate(starts):
            chunk = tuple(int(t) for t in ids[start : start + chunk_size])
            units.append(Unit(sample, start, chunk, generate=generate and i == len(starts) - 1))
    return units


def batches(units: Sequence[Unit], batch_size: int) -> Iterator[list[Unit]]:
    """Consecutive batches of units that agree on whether they generate."""
    batch: list[Unit] = []
    for unit in units:
        if batch and (len(batch) == batch_size or batch[0].generate != unit.generate):
            yield batch
            batch = []
        batch.append(unit)
    if batch:
        yield batch


@dataclass(frozen=True)
class Padded:
    """A padded batch: ids and mask [B, S], the samples, offsets and real lengths of its rows."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    samples: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor
    left: bool


def pad(batch: Sequence[Unit], pad_id: int, left: bool) -> Padded:
    width = max(len(u.ids) for u in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, unit in enumerate(batch):
        n = len(unit.ids)
        cols = slice(width - n, width) if left else slice(0, n)
        ids[row, cols] = torch.tensor(unit.ids, dtype=torch.long)
        mask[row, cols] = 1
    return Padded(
        input_ids=ids,
        attention_mask=mask,
        samples=torch.tensor([u.sample for u in batch], dtype=torch.long),
        offsets=torch.tensor([u.offset for u in batch], dtype=torch.long),
        lengths=torch.tensor([len(u.ids) for u in batch], dtype=torch.long),
        left=left,
    )


@dataclass(frozen=True)
class Layout:
    """For the T rows of one router call: sample, absolute position, and whether the row is a real token."""

    sample: torch.Tensor
    position: torch.Tensor
    real: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.real.numel())


def prompt_layout(batch: Padded) -> Layout:
    """Rows of a full pass over the padded prompt ([B, S] flattened row-major)."""
    width = batch.input_ids.shape[1]
    col = torch.arange(width).unsqueeze(0)
    pad = (width - batch.lengths).unsqueeze(1) if batch.left else torch.zeros_like(batch.lengths).unsqueeze(1)
    position = batch.offsets.unsqueeze(1) + col - pad
    real = batch.attention_mask.bool()
    sample = batch.samples.unsqueeze(1).expand_as(position)
    return Layout(sample.reshape(-1), position.reshape(-1), real.reshape(-1))


def step_layout(samples: torch.Tensor, positions: torch.Tensor, alive: torch.Tensor) -> Layout:
    """Rows of one decode step: one token per sequence."""
    return Layout(samples.reshape(-1), positions.reshape(-1), alive.reshape(-1).bool())
