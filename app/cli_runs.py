"""`routescope runs` and `routescope show`: what is in a store, and one run at a glance."""

from __future__ import annotations

import argparse

from .console import out
from .hooks import Store


def cmd_runs(args: argparse.Namespace) -> int:
    store = Store(args.store)
    if args.clean:
        removed = store.clean()
        out(f"removed {len(removed)} interrupted recording(s){': ' + ', '.join(removed) if removed else ''}")
    for name in store.runs():
        run = store.open(name)
        rows, model = run.manifest.get("rows", {}), run.manifest["model"]
        out(
            f"{name}\tcomplete\t{model.get('spec') or model.get('class')}\t"
            f"{rows.get('tokens', 0)} tokens\t{rows.get('assignments', 0)} assignments"
        )
    for name in store.incomplete():
        out(
            f"{name}\tincomplete\t(interrupted or still recording; re-record it or run "
            f"`routescope runs --store {store.path} --clean`)"
        )
    for name in store.damaged():
        out(f"{name}\tdamaged\t(unreadable manifest; delete the folder {store.path / name})")
    if not (store.runs() or store.incomplete() or store.damaged()):
        out(f"no runs in {store.path}")
    return 0


def show_run(store: Store, name: str) -> None:
    """Print a run's header (model, sizes, labels) and its per-router summary."""
    from .analysis import router_summary

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
        options = m["options"]
        out(
            f"sampling  {options['steps']} steps, cfg {options['cfg_scale']}, classes {options['classes']} "
            f"× {options['samples_per_class']}, patch grid {m['patch_grid'][0]}×{m['patch_grid'][1]}"
        )
    if run.label_columns:
        out(f"labels    {', '.join(run.label_columns)}")
    table = router_summary(run)
    for column in ("mean_entropy", "mean_margin", "dropped_share"):
        table[column] = table[column].round(3)
    out(table.to_string(index=False))


def cmd_show(args: argparse.Namespace) -> int:
    show_run(Store(args.store), args.run)
    return 0
