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


def make_units(token_ids: Sequence[Sequence[int]], chunk_size: int, generate_room: int = 0) -> list[Unit]:
    """Chunk each sample into pieces of at most `chunk_size` tokens.

    With generation (`generate_room` > 0 new tokens), the generating piece is the sample's *last*
    `chunk_size - generate_room` tokens, so the new tokens see as much context as fits; the tokens before
    it are chunked from the start and only run forward.
    """
    units = []
    for sample, ids in enumerate(token_ids):
        ids = [int(t) for t in ids]
        tail = min(len(ids), chunk_size - generate_room) if generate_room else 0
        head = len(ids) - tail
        for start in range(0, head, chunk_size):
            units.append(Unit(sample, start, tuple(ids[start : min(start + chunk_size, head)])))
        if generate_room:
            units.append(Unit(sample, head, tuple(ids[head:]), generate=True))
    return units


def batches(units: Sequence[Unit], batch_size: int, same_length: bool = False) -> Iterator[list[Unit]]:
    """Consecutive batches of units that agree on whether they generate (and on length, when the model
    cannot take an attention mask)."""
    batch: list[Unit] = []
    for unit in units:
        other_length = same_length and bool(batch) and len(batch[0].ids) != len(unit.ids)
        differs = bool(batch) and (batch[0].generate != unit.generate or other_length)
        if batch and (len(batch) == batch_size or differs):
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
