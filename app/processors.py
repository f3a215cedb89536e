"""Load a vision-language model's own processor from a local folder, images only if video cannot load.

`record(images=...)` sends every image through the model's processor (hooks/vision.py), so
`load_model(folder)` loads it beside the tokenizer. The processors of today's VLM MoEs (Qwen3-VL-MoE,
GLM-4.5V, ERNIE-4.5-VL) also hold a video processor, and transformers builds video processors only with
torchvision installed; without it `AutoProcessor` fails although images need no video processor at all.
`image_only(cls)` is the family's own processor class without its video part: same placeholder
expansion, same image processor, same tokenizer.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
"""Files whose presence says a folder holds a processor."""


@cache
def image_only(cls: type) -> type:
    """The processor class `cls` without its `video_processor` (transformers reads a processor's parts
    from its `__init__` signature, so a subclass whose signature omits it neither builds nor loads one)."""

    def __init__(
        self: Any,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: Any = None,
        **kwargs: Any,
    ) -> None:
        cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})


def _processor_class(folder: Path) -> type | None:
    """The processor class a saved processor names (`processor_class`), or None."""
    import transformers

    for name in PROCESSOR_FILES:
        path = folder / name
        if path.is_file():
            try:
                named = json.loads(path.read_text(encoding="utf-8")).get("processor_class")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(named, str) and hasattr(transformers, named):
                return getattr(transformers, named)
    return None


def load_processor(where: str, **kwargs: Any) -> Any:
    """The processor saved in folder `where`, or None when it holds none (a text-only model)."""
    folder = Path(where)
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        return None
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(where, **kwargs)
    except (OSError, ValueError, ImportError, AttributeError, TypeError):
        cls = _processor_class(folder)
        if cls is None or "video_processor" not in cls.get_attributes():
            return None
        try:
            return image_only(cls).from_pretrained(where, **kwargs)
        except (OSError, ValueError, ImportError, AttributeError, TypeError):
            return None
