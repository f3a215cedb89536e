"""`routescope runs` and `routescope show`: what is in a store, and one run at a glance."""

from __future__ import annotations

import argparse

from routescope.store import CorruptRunError, RouteScopeError, Run, Store
from routescope.store.reader import owner_alive
from routescope.store.shards import pending_shards

from .console import out


def shown(text: str) -> str:
    """Text as it can be printed: non-printable characters escaped (a junk folder in a store may have
    any bytes in its name, and messages about it quote the name)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _damage(store: Store, name: str) -> str:
    """Why a folder in the store is not a complete run: the reader's own one-line reason (a damaged or
    foreign manifest, a status other than complete), else its name."""
    try:
        Run(store.path / name)
    except CorruptRunError as exc:
        return str(exc)
    return "its name is not a run name"


def _line(*parts: object) -> None:
    """One listing line: tab-separated parts, each printable."""
    out("\t".join(shown(str(part)) for part in parts))


def cmd_runs(args: argparse.Namespace) -> int:
    store = Store(args.store)
    if args.clean:
        recovered = store.recover()
        if recovered:
            _line(f"finished publishing {len(recovered)} run(s): {', '.join(recovered)}")
        removed = store.clean()
        _line(
            f"removed {len(removed)} interrupted recording(s){': ' + ', '.join(removed) if removed else ''}"
        )
    listed = 0
    for name in store.runs():
        listed += 1
        try:
            run = store.open(name)
        except CorruptRunError as exc:
            _line(name, "damaged", f"({exc})")
            continue
        if getattr(args, "verify", False):
            try:
                run.verify()
            except CorruptRunError as exc:
                _line(name, "damaged", f"({exc})")
                continue
        rows, model = run.manifest.get("rows", {}), run.manifest["model"]
        spec = model.get("spec") or model.get("class")
        _line(
            name,
            "complete",
            spec,
            f"{rows.get('tokens', 0)} tokens",
            f"{rows.get('assignments', 0)} assignments",
        )
    unpublished = set(store.unpublished())
    clean = f"`routescope runs --store {store.path} --clean`"
    for name in store.incomplete():
        listed += 1
        if owner_alive(store.incomplete_path(name)):
            _line(name, "incomplete", "(being recorded right now by another process)")
        elif name in unpublished:
            _line(name, "incomplete", f"(finished but not moved into place; {clean} publishes it)")
        else:
            _line(
                name,
                "incomplete",
                f"(interrupted; delete it with {clean}, or record it again with "
                f"`routescope record ... --store {store.path} --name {name} --overwrite`)",
            )
    for shards in pending_shards(store):
        listed += 1
        of = f" of {shards.total}" if shards.total else ""
        _line(
            shards.name,
            "shards",
            f"({shards.finished}{of} shard(s) finished, {shards.unfinished} unfinished; publish them with "
            f"`routescope merge --store {store.path} --name {shards.name}`)",
        )
    for name in store.damaged():
        listed += 1
        _line(name, "damaged", f"({_damage(store, name)}; delete the folder {store.path / name})")
    if not listed:
        _line(f"no runs in {store.path}")
    return 0


def _sampling(manifest: dict) -> str:
    """One line on how a diffusion run was sampled: class-conditional models or text-prompted pipelines."""
    options, grid = manifest.get("options", {}), manifest.get("patch_grid")
    parts = [f"{options.get('steps', '?')} steps"]
    if "cfg_scale" in options:
        parts.append(f"cfg {options['cfg_scale']}")
    if "guidance_scale" in options:
        parts.append(f"guidance {options['guidance_scale']}")
    if "classes" in options:
        parts.append(f"classes {options['classes']} × {options.get('samples_per_class', 1)}")
    if "prompts" in options:
        parts.append(f"{len(options['prompts'])} prompt(s)")
    if grid:
        parts.append(f"patch grid {grid[0]}×{grid[1]}")
    return ", ".join(parts)


def damaged_run_message(args: argparse.Namespace) -> str | None:
    """After DuckDB failed to read a run: the first damaged file among the runs the command named
    (`--run`, `--compare`), found by `Store.first_damage`; None when they all read cleanly."""
    store = getattr(args, "store", None)
    if not isinstance(store, str) or not store.strip():
        return None
    names = [getattr(args, option, None) for option in ("run", "compare")]
    try:
        damage = Store(store).first_damage(n for n in names if isinstance(n, str) and n)
    except RouteScopeError as exc:  # the store folder itself cannot be used
        return str(exc)
    return None if damage is None else str(damage)


def show_run(store: Store, name: str) -> None:
    """Print a run's header (model, sizes, labels) and its per-router summary."""
    from routescope.analysis import router_summary

    run = store.open(name)
    m = run.manifest
    rows, model = m.get("rows", {}), m["model"]
    out(f"run       {run.name}  ({m['status']}, schema v{m['schema_version']}, created {m['created']})")
    out(f"model     {model.get('spec') or '-'}  [{model.get('class')}, family {model.get('family')}]")
    out(
        f"samples   {rows.get('samples', 0)}   tokens {rows.get('tokens', 0)}   "
        f"assignments {rows.get('assignments', 0)}   decisions {rows.get('decisions', 0)}"
    )
    if m.get("kind") == "diffusion":
        out("sampling  " + _sampling(m))
    if run.label_columns:
        out(f"labels    {', '.join(run.label_columns)}")
    out(f"source    {run.info.source_engine}   knows {', '.join(sorted(run.info.caps))}")
    dense = run.manifest.get("dense_layers")
    if dense:
        out(f"dense     layers {', '.join(map(str, dense))} (all-zero rows in the trace; not routed)")
    table = router_summary(run)
    for column in ("mean_entropy", "mean_margin", "dropped_share"):
        table[column] = table[column].round(3)
    out(table.to_string(index=False))


def cmd_show(args: argparse.Namespace) -> int:
    show_run(Store(args.store), args.run)
    return 0
