"""Produce the README's notebook table from `routescope.claims` on the bundled models.

Records the runs the notebooks record (bundled:moe-lm over bundled:domains with probabilities; bundled:
dit-digits and bundled:switch-dit-digits, 4 samples of each digit, 25 steps, CFG 4, seed 0), checks
every claim that applies with the defaults (N = 999 permutations, 1,000 bootstrap resamples, seed 0) and
prints the Markdown table; with `--write` it replaces the table between the `claims-table` markers in
README.md. tests/test_notebooks.py checks that the notebooks print the same verdicts as the table.

    .venv/bin/python scripts/claims_table.py --write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import routescope
from routescope import claims

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- claims-table:start -->", "<!-- claims-table:end -->"
NOTEBOOK = {
    "olmoe-domain": "03_lm_specialization",
    "olmoe-vocabulary": "03_lm_specialization",
    "mixtral-repeat": "03_lm_specialization",
    "gw-moe-uncertain-tokens": "04_gw_moe_uncertainty",
    "switch-balance": "05_load_balance",
    "dit-moe-position-step-not-class": "01_dit_moe_position_step_class",
    "dit-moe-depth-dispersion": "01_dit_moe_position_step_class",
    "dit-moe-early-steps": "01_dit_moe_position_step_class",
    "switch-dit-phases": "02_switch_dit_denoising_phases",
    "switch-dit-shared-paths": "06_switch_dit_shared_paths",
}


def bundled_runs(store: routescope.Store) -> dict[str, routescope.Run]:
    """The notebooks' three recordings."""
    texts, labels = routescope.load_dataset("bundled:domains")
    lm = routescope.load_model("bundled:moe-lm")
    text = routescope.record(
        lm, texts, store=store, name="domains", labels=labels, probs=True, progress=False
    )
    dit = routescope.load_model("bundled:dit-digits")
    digits = routescope.record_diffusion(
        dit, classes=list(range(10)), samples_per_class=4, steps=25, cfg_scale=4.0, seed=0,
        store=store, name="digits", progress=False,
    )  # fmt: skip
    switch = routescope.load_model("bundled:switch-dit-digits")
    gated = routescope.record_diffusion(
        switch, classes=list(range(10)), samples_per_class=4, steps=25, cfg_scale=4.0, seed=0,
        store=store, name="switch-digits", progress=False,
    )  # fmt: skip
    return {"bundled:moe-lm": text, "bundled:dit-digits": digits, "bundled:switch-dit-digits": gated}


def table() -> str:
    rows = ["| notebook | claim | model | verdict on the bundled model |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="routescope-claims-") as folder:
        store = routescope.Store(folder)
        for model, run in bundled_runs(store).items():
            for name in claims.applicable(run):
                if model != "bundled:moe-lm" and name == "switch-balance":
                    continue  # notebook 05 reports the DiT's balance beside the language model's
                if model == "bundled:switch-dit-digits" and name != "switch-dit-shared-paths":
                    continue  # notebook 06 checks the claim only the timestep-gated model can test
                verdict = claims.check(run, name)
                outcome = "**reproduces**" if verdict.reproduces else "**does not reproduce**"
                rows.append(f"| `{NOTEBOOK[name]}` | `{name}` | `{model}` | {outcome}: {verdict.sentence} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args()
    text = table()
    if not args.write:
        sys.stdout.write(text + "\n")
        return 0
    readme = README.read_text(encoding="utf-8")
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{START}\n{text}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
