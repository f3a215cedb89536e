"""The README's editable install (`pip install -e .`) is one static tools can follow: the build backend
(scripts/editable_backend.py) makes it a strict install, a link tree on a `.pth` path, so jedi, pyright
and IDEs resolve `routescope.store` to `store/` without running an import hook."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _installed() -> importlib.metadata.Distribution | None:
    """The installed distribution (the one with `direct_url.json`; a source folder's `*.egg-info` on
    the path has none)."""
    for dist in importlib.metadata.distributions(name="routescope"):
        if dist.read_text("direct_url.json"):
            return dist
    return None


def _editable_here() -> bool:
    dist = _installed()
    info = json.loads(dist.read_text("direct_url.json") or "{}") if dist else {}
    return bool(info.get("dir_info", {}).get("editable")) and info.get("url", "").endswith(ROOT.as_posix())


needs_editable = pytest.mark.skipif(
    not _editable_here(), reason="routescope is not an editable install of this tree"
)


def test_the_backend_defaults_to_strict_editable_installs() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    assert config["build-backend"] == "editable_backend"
    sys.path.insert(0, str(ROOT / config["backend-path"][0]))
    try:
        import editable_backend
    finally:
        sys.path.pop(0)
    seen = {}
    real = editable_backend._setuptools.build_editable

    def record(wheel_directory: str, settings: dict, metadata_directory: str | None = None) -> str:
        seen.update(settings)
        return "x.whl"

    editable_backend._setuptools.build_editable = record
    try:
        editable_backend.build_editable("dist")
        assert seen == {"editable_mode": "strict"}
        editable_backend.build_editable("dist", {"editable_mode": "lenient"})
        assert seen == {"editable_mode": "lenient"}
    finally:
        editable_backend._setuptools.build_editable = real
    assert editable_backend.build_wheel is real.__globals__["build_wheel"]


@needs_editable
def test_jedi_resolves_the_store_statically() -> None:
    jedi = pytest.importorskip("jedi")
    environment = jedi.create_environment(sys.executable, safe=False)  # a fresh interpreter's sys.path
    source = "from routescope.store import Store\nStore\n"
    script = jedi.Script(source, path=str(ROOT / "probe.py"), environment=environment)
    found = script.goto(2, 2, follow_imports=True)
    assert found, "jedi cannot follow routescope.store (is the editable install strict?)"
    assert Path(found[0].module_path).resolve() == ROOT / "store" / "reader.py"
    assert found[0].name == "Store"


@needs_editable
def test_the_pth_file_is_a_plain_path() -> None:
    """Static tools read `.pth` lines that are paths and ignore `import` lines (the lenient finder)."""
    dist = _installed()
    assert dist is not None
    site = Path(dist.locate_file(""))
    lines = [
        line.strip()
        for pth in site.glob("__editable__*routescope*.pth")
        for line in pth.read_text().splitlines()
    ]
    folders = [Path(line) for line in lines if line and not line.startswith("import")]
    assert any(
        (folder / "routescope" / "store" / "__init__.py").resolve() == ROOT / "store" / "__init__.py"
        for folder in folders
    )
