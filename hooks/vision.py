"""Image inputs for vision-language MoEs: text and images through the model's own processor, then routed.

A VLM's language model routes image tokens as well as text tokens, and the question a user brings is
whether experts split by modality and where an image's patches go. The text recorder (hooks/recorder.py)
tokenises, chunks and pads token ids itself; an image input cannot take that path, because only the
model's processor knows how many placeholder tokens an image expands into and which tensors the model
needs beside them (`pixel_values`, `image_grid_thw`, `mm_token_type_ids`, ...). `ImageTextSource` runs
the processor once per input, batches the results (per-token tensors padded on the right, per-image
tensors concatenated), captures the routers with the same `Capturer` and table builders as text, and
writes each token's `modality` and, for image tokens, its place on the image's merged patch grid
(`image`, `frame`, `row`, `col`) as read from the processor's own grid (`image_grid_thw`).

Forward recording only: no generation, chunking, shards or remote traces with images.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from routescope.store.errors import InputError
from routescope.store.reader import Store
from routescope.store.schema import MODALITY_FIELDS

from .capture import Capturer, Engine
from .dimensions import samples_table, steps_table
from .loaded import LoadedModel
from .manifest import ManifestFacts, model_facts, tokenizer_name
from .normalise import normalise
from .routers import RouterSpec, candidate_paths, describe_from_outputs
from .source import BaseSource, Plan, Sink
from .tables import TokenTexts, router_call_tables, token_table
from .text_session import _input_device
from .units import Layout

ImageLike = Any
"""A PIL image, an `[H, W]` / `[H, W, C]` uint8 or float array, a path to an image file, or an image
file's bytes (an upload)."""


def vision_token_ids(model: torch.nn.Module, processor: Any) -> dict[str, int]:
    """`{"image": id, "video": id}`: the placeholder token ids image and video patches take in `input_ids`
    (from the processor, else the model config). Empty for a text-only model."""
    config = getattr(model, "config", None)
    found: dict[str, int] = {}
    for modality in ("image", "video"):
        value = getattr(processor, f"{modality}_token_id", None)
        if value is None:
            value = getattr(config, f"{modality}_token_id", None) or getattr(
                config, f"{modality}_token_index", None
            )
        if isinstance(value, int):
            found[modality] = value
    return found


def is_vision_model(model: torch.nn.Module) -> bool:
    """Whether the model reads images: its config has a vision tower or an image placeholder token."""
    config = getattr(model, "config", None)
    return any(getattr(config, name, None) is not None for name in ("vision_config", "image_token_id"))


def decode_image(image: ImageLike, where: str) -> Any:
    """An RGB PIL image from a PIL image, an array, a file path or a file's bytes; anything else is a
    one-line error."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
        if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
            raise InputError(
                f"{where} is an array of shape {array.shape}; give [H, W] or [H, W, C]", field="images"
            )
        return Image.fromarray(array).convert("RGB")
    if isinstance(image, bytes):
        try:
            with Image.open(io.BytesIO(image)) as opened:
                opened.load()
                return opened.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError):
            raise InputError(
                f"{where} cannot be decoded as an image; give a PNG or JPEG file", field="images"
            ) from None
    if isinstance(image, str | Path):
        try:
            with Image.open(image) as opened:
                opened.load()
                return opened.convert("RGB")
        except FileNotFoundError:
            raise InputError(f"{where}: image file {image} does not exist", field="images") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise InputError(
                f"{where}: {image} cannot be decoded as an image; give a PNG or JPEG file",
                field="images",
            ) from None
    raise InputError(
        f"{where} is a {type(image).__name__}; give a PIL image, an array, a file path or its bytes",
        field="images",
    )


def image_lists(images: Sequence[Any], n_inputs: int) -> list[list[Any]]:
    """One list of decoded images per input (`None` or `[]`: a text-only input)."""
    if isinstance(images, str | Path) or not isinstance(images, Sequence):
        raise InputError(
            "images must be a list with one entry (an image, a list of images or None) per input",
            field="images",
        )
    if len(images) != n_inputs:
        raise InputError(
            f"{len(images)} image entries for {n_inputs} inputs; give one per input (None: no image)",
            field="images",
        )
    out = []
    for index, entry in enumerate(images):
        items = [] if entry is None else list(entry) if isinstance(entry, list | tuple) else [entry]
        out.append([decode_image(item, f"image {j} of input {index}") for j, item in enumerate(items)])
    return out


@dataclass(frozen=True)
class Processed:
    """One input after the processor: its token ids, per-token and per-image tensors, and token places."""

    sample: int
    ids: np.ndarray
    per_token: dict[str, torch.Tensor]
    """Tensors with one entry per token (`mm_token_type_ids`, ...), without the batch axis."""
    per_image: dict[str, torch.Tensor]
    """Tensors concatenated along their first axis across a batch (`pixel_values`, `image_grid_thw`)."""
    modality: list[str]
    image: np.ndarray
    frame: np.ndarray
    row: np.ndarray
    col: np.ndarray
    """Per token; −1 where not an image patch (written as null)."""


def with_placeholders(processor: Any, text: str, n_images: int) -> str:
    """`text` led by `n_images` image placeholders, for a text that names none: each wrapped in the
    processor's vision start/end markers where it has them (Qwen-VL), else followed by a newline, so two
    images never form one run of image tokens (the model would read them as one image). Write the
    placeholders yourself to follow a model's own prompt format."""
    token = str(processor.image_token)
    start, end = (getattr(processor, f"vision_{side}_token", None) for side in ("start", "end"))
    one = f"{start}{token}{end}" if isinstance(start, str) and isinstance(end, str) else f"{token}\n"
    return one * n_images + text


def _merge_size(processor: Any, model: torch.nn.Module) -> int:
    image_processor = getattr(processor, "image_processor", None)
    value = getattr(image_processor, "merge_size", None)
    if value is None:
        vision = getattr(getattr(model, "config", None), "vision_config", None)
        value = getattr(vision, "spatial_merge_size", None)
    return int(value or 1)


def token_places(
    ids: np.ndarray, placeholders: Mapping[str, int], grids: np.ndarray | None, merge: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Modality of every token and, for image tokens, (image, frame, row, col) on the merged patch grid.

    Image tokens appear in `ids` image after image, each image's tokens in (frame, row, col) order of its
    `[t, h, w]` grid divided by the spatial merge (the order the family's vision tower emits them). Without
    a grid, or when the counts disagree, image tokens keep their modality and get no place.
    """
    n = len(ids)
    modality = np.full(n, "text", dtype=object)
    for name, token in placeholders.items():
        modality[ids == token] = name
    image, frame, row, col = (np.full(n, -1, np.int64) for _ in range(4))
    where = np.flatnonzero(modality == "image")
    if grids is not None and len(grids):
        t, h, w = (grids[:, i].astype(np.int64) for i in range(3))
        h, w = h // merge, w // merge
        sizes = t * h * w
        if int(sizes.sum()) == len(where):
            image[where] = np.repeat(np.arange(len(grids)), sizes)
            local = np.concatenate([np.arange(s) for s in sizes])
            per_frame = np.repeat(h * w, sizes)
            width = np.repeat(w, sizes)
            frame[where] = local // per_frame
            row[where] = (local % per_frame) // width
            col[where] = local % width
    return list(modality), image, frame, row, col


def _nullable(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int32), pa.int32(), mask=values < 0)


class ImageTextSource(BaseSource):
    """Texts with images, each input through the model's processor, recorded forward in batches."""

    verb = "recording"
    modality = True

    def __init__(
        self,
        subject: LoadedModel,
        inputs: Sequence[str],
        images: Sequence[Any],
        *,
        labels: Mapping[str, Sequence[Any]] | None,
        probs: bool,
        batch_size: int,
        routers: Sequence[str] | Mapping[str, Any] | None,
        engine: Engine,
        seed: int,
    ) -> None:
        self.subject, self.inputs, self.images, self.label_input = subject, inputs, images, labels
        self.probs, self.batch_size, self.declared, self.engine, self.seed = (
            probs,
            batch_size,
            routers,
            engine,
            seed,
        )
        self.labels: list[str] = []

    def prepare(self) -> Plan:
        """Check the model, the processor and every image, run the processor, describe the routers."""
        from .recorder import _labels, context_length  # one definition of labels and the context limit

        subject, model = self.subject, self.subject.model.eval()
        if self.batch_size < 1:
            raise InputError("batch_size must be ≥ 1")
        inputs = self.inputs
        if isinstance(inputs, str) or not isinstance(inputs, Sequence) or not inputs:
            raise InputError("inputs must be a non-empty list of texts (one per image input)")
        if not all(isinstance(text, str) for text in inputs):
            raise InputError("inputs with images must be texts; give the prompt of each image as a string")
        if not is_vision_model(model):
            kind = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
            raise InputError(
                f"{kind} is a text-only model; images need a vision-language model", field="images"
            )
        processor = subject.processor
        if processor is None:
            raise InputError(
                "images need the model's processor; load the model from its folder or pass processor=",
                field="images",
            )
        per_input = image_lists(self.images, len(inputs))
        self.n_images = sum(len(images) for images in per_input)
        self.label_values = _labels(self.label_input, len(inputs))
        self.labels = list(self.label_values)
        self.placeholders = vision_token_ids(model, processor)
        if "image" not in self.placeholders:
            raise InputError(
                "the processor names no image placeholder token; cannot place image tokens", field="images"
            )
        limit = context_length(model)
        merge = _merge_size(processor, model)
        self.texts = list(inputs)
        self.processed = [
            self._process(sample, text, imgs, processor, merge, limit)
            for sample, (text, imgs) in enumerate(zip(inputs, per_input, strict=True))
        ]
        tokenizer = subject.tokenizer or getattr(processor, "tokenizer", None)
        self.text_of = TokenTexts(tokenizer)
        self.pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.capturer = Capturer(
            model, candidate_paths(model, self.declared or subject.routers), self.engine, tokenizer
        )
        self.groups = [
            self.processed[i : i + self.batch_size] for i in range(0, len(self.processed), self.batch_size)
        ]
        torch.manual_seed(self.seed)
        self.first = self.capturer.forward(self._batch_inputs(self.groups[0]))
        self.specs = describe_from_outputs(model, self.capturer.paths, self.first.outputs, self.declared)
        return Plan(batches=len(self.groups), units=len(self.groups))

    def _process(
        self, sample: int, text: str, images: list[Any], processor: Any, merge: int, limit: int
    ) -> Processed:
        """Run the processor on one input and place its tokens; processor refusals become one line."""
        token = getattr(processor, "image_token", None)
        if isinstance(token, str):
            found = text.count(token)
            if found == 0 and images:
                text = with_placeholders(processor, text, len(images))
            elif found != len(images):
                raise InputError(
                    f"input {sample} has {found} image placeholders ({token}) for {len(images)} images; "
                    "give one image per placeholder",
                    field="images",
                )
        try:
            out = processor(text=[text], images=images or None, return_tensors="pt")
        except (ValueError, TypeError, RuntimeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"the processor refused input {sample}: {first}", field="images") from None
        ids = out["input_ids"][0]
        width = ids.shape[0]
        if width > limit:
            raise InputError(
                f"input {sample} is {width} tokens with its images, above {limit}; use smaller images",
                field="images",
            )
        per_token, per_image = {}, {}
        for key, value in out.items():
            if key in ("input_ids", "attention_mask") or not isinstance(value, torch.Tensor):
                continue
            if value.dim() >= 2 and value.shape[0] == 1 and value.shape[1] == width:
                per_token[key] = value[0]
            else:
                per_image[key] = value
        grid = out.get("image_grid_thw")
        places = token_places(
            ids.numpy(), self.placeholders, None if grid is None else np.asarray(grid), merge
        )
        return Processed(sample, ids.numpy(), per_token, per_image, *places)

    def _batch_inputs(self, group: list[Processed]) -> dict[str, Any]:
        """Model keywords of one batch: per-token tensors right-padded, per-image tensors concatenated."""
        width = max(len(p.ids) for p in group)
        ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, item in enumerate(group):
            ids[row, : len(item.ids)] = torch.as_tensor(item.ids)
            mask[row, : len(item.ids)] = 1
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        for key in {k for p in group for k in p.per_token}:
            first = next(p.per_token[key] for p in group if key in p.per_token)
            padded = torch.zeros((len(group), width, *first.shape[1:]), dtype=first.dtype)
            for row, item in enumerate(group):
                if key in item.per_token:
                    padded[row, : len(item.ids)] = item.per_token[key]
            inputs[key] = padded
        for key in {k for p in group for k in p.per_image}:
            inputs[key] = torch.cat([p.per_image[key] for p in group if key in p.per_image])
        device = _input_device(self.subject.model)
        return inputs if device is None else {k: v.to(device) for k, v in inputs.items()}

    def destination(self, store: Store, name: str) -> tuple[Store, str]:
        return store, name

    def routers(self) -> list[RouterSpec]:
        return self.specs

    def manifest_facts(self) -> ManifestFacts:
        options = {
            "probs": self.probs,
            "logits": self.probs,
            "max_new_tokens": 0,
            "batch_size": self.batch_size,
            "engine": self.engine,
            "images": True,
            "n_images": self.n_images,
        }
        return ManifestFacts(
            kind="text",
            model=model_facts(self.subject),
            tokenizer=tokenizer_name(self.subject),
            labels=self.labels,
            seed=self.seed,
            options=options,
        )

    def batches(self, sink: Sink) -> Iterator[None]:
        for index, group in enumerate(self.groups):
            captured = self.first if index == 0 else self.capturer.forward(self._batch_inputs(group))
            self._write(sink, group, captured.outputs)
            sink.advance()
            yield

    def _write(self, sink: Sink, group: list[Processed], outputs: Mapping[str, list[Any]]) -> None:
        width = max(len(p.ids) for p in group)
        for item in group:
            n = len(item.ids)
            table = token_table(
                item.sample,
                np.arange(n),
                item.ids,
                self.text_of,
                generated=False,
                stack="decoder",
                rows=None,
                cols=None,
            )
            table = table.set_column(table.schema.get_field_index("row"), "row", _nullable(item.row))
            table = table.set_column(table.schema.get_field_index("col"), "col", _nullable(item.col))
            extra = [pa.array(item.modality, pa.string()), _nullable(item.image), _nullable(item.frame)]
            for field, column in zip(MODALITY_FIELDS, extra, strict=True):
                table = table.append_column(field, column)
            sink.write("tokens", table)
        samples = torch.tensor([p.sample for p in group]).repeat_interleave(width)
        positions = torch.arange(width).repeat(len(group))
        real = torch.cat([torch.arange(width) < len(p.ids) for p in group])
        layout = Layout(samples, positions, real)
        for spec in self.specs:
            for index, output in enumerate(outputs.get(spec.path, [])):
                step, call = divmod(index, spec.call_count)
                assignments, decisions = router_call_tables(
                    normalise(output, spec.rule), layout, spec, step=step, call=call, with_probs=self.probs
                )
                sink.write("assignments", assignments)
                sink.write("decisions", decisions)

    def dimensions(self) -> Iterator[tuple[str, pa.Table]]:
        yield "steps", steps_table(np.arange(1))
        yield (
            "samples",
            samples_table(
                [p.sample for p in self.processed],
                text=self.texts,
                n_tokens=[len(p.ids) for p in self.processed],
                labels=self.label_values,
            ),
        )
