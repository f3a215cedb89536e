"""The build backend: setuptools, with `pip install -e .` made a *strict* editable install by default.

setuptools' default (lenient) editable install maps `routescope.*` onto the top-level folders (`app/`,
`store/`, `hooks/`, ...) with an import hook that only runs inside Python, so static tools (pyright,
jedi, IDEs) cannot follow `routescope.store` to `store/`. A strict install builds a tree of links
(`build/__editable__.*`) that a `.pth` file adds to the path, which every static tool reads. setuptools
has no pyproject key for that, so this in-tree backend (`[build-system] backend-path`) passes
`editable_mode=strict` unless the caller chose a mode (`--config-settings editable_mode=lenient`).

Strict means: edits to existing files show at once, but a new or removed module needs the install
command again (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every other PEP 517 hook, unchanged)
from setuptools.build_meta import __all__  # noqa: F401


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    settings = dict(config_settings or {})
    settings.setdefault("editable_mode", "strict")
    return _setuptools.build_editable(wheel_directory, settings, metadata_directory)
