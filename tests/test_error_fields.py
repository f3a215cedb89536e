"""Errors carry the option they concern as a field; each front end renders it its own way (issue 15, 6).

The library's message names no CLI flag and no widget; the CLI renders the field as its flag, the
dashboard as its widget; one DuckDB-damage translation (`first_damage`) serves both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from routescope.cli import FLAGS, main
from routescope.cli import render_error as cli_render
from routescope.dashboard.widgets import render_error as dashboard_render
from routescope.store import (
    CorruptRunError,
    ExportError,
    InputError,
    InterventionError,
    RemoteUnavailableError,
    RouteScopeError,
    RunExistsError,
    Store,
    errors,
    first_damage,
)
from routescope.store.shards import merge

FLAG = re.compile(r"--[a-z]")


def test_a_library_run_exists_error_names_no_flag_and_each_front_end_renders_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(tmp_path / "store")
    (store.path / "taken").mkdir(parents=True)
    with pytest.raises(RunExistsError) as caught:
        merge(store, "taken")
    exc = caught.value
    assert exc.field == "overwrite"
    assert exc.name == "taken"
    assert str(exc) == f"run 'taken' already exists in {store.path}; choose another name or overwrite it"
    assert not FLAG.search(str(exc))
    assert cli_render(exc) == f"{exc} (pass --overwrite)"
    assert dashboard_render(exc) == f"{exc} (tick “Replace a run of that name”)"
    assert "--" not in dashboard_render(exc)
    # and the CLI's error handler prints exactly that line
    assert main(["merge", "--store", str(store.path), "--name", "taken"]) == 2
    assert capsys.readouterr().err == f"routescope: error: {exc} (pass --overwrite)\n"


def test_fields_render_by_the_front_ends_mappings_and_a_page_may_name_its_own_widget() -> None:
    exc = InputError("share needs a layer", field="layer")
    assert str(exc) == "share needs a layer"
    assert cli_render(exc) == "share needs a layer (pass --layer)"
    assert dashboard_render(exc) == "share needs a layer (choose a “Layer”)"
    assert dashboard_render(
        RunExistsError(name="x", store="s"), {"overwrite": "tick “Replace runs”"}
    ).endswith("(tick “Replace runs”)")
    plain = InputError("input 0 is empty; give non-empty text")
    assert plain.field is None
    assert cli_render(plain) == dashboard_render(plain) == str(plain)
    assert set(FLAGS) >= {"overwrite", "layer"}


def test_the_errors_live_in_the_errors_module_and_stay_importable_where_they_were() -> None:
    from routescope.figures import ExportError as old_export
    from routescope.hooks.interventions import InterventionError as old_intervention
    from routescope.hooks.remote import RemoteUnavailableError as old_remote

    assert (old_export, old_intervention, old_remote) == (
        ExportError,
        InterventionError,
        RemoteUnavailableError,
    )
    for cls in (ExportError, InterventionError, RemoteUnavailableError):
        assert cls.__module__ == errors.__name__
        assert issubclass(cls, RouteScopeError)


def test_first_damage_names_the_first_damaged_run_or_none() -> None:
    class Clean:
        def verify(self) -> None:
            pass

    class Damaged:
        def verify(self) -> None:
            raise CorruptRunError("facts.parquet: damaged data; re-record the run")

    assert first_damage([Clean(), Clean()]) is None
    found = first_damage([Clean(), Damaged()])
    assert isinstance(found, CorruptRunError)
    assert "damaged data" in str(found)
