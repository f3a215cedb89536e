"""Figure export and the command line: every registered kind exports to SVG through one browser, PDF and
PNG have paper sizes, tables write as CSV and LaTeX, the standard set follows the run, and `routescope
figure` writes a file, a standard set with an index, and one-line errors.

Runs: planted runs and the session's small real recordings (tests/figure_runs.py).
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from routescope import analysis as A
from routescope.cli import main
from routescope.figures import (
    FIGURES,
    export_figures,
    make_figure,
    standard_set,
    write_table,
)
from routescope.store import InputError, Store
from tests.planted import planted_run

SKEWED = {0: [[0]] * 6 + [[1]] * 2, 1: [[0], [1], [2], [3]] * 2}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runs(figure_runs: dict[str, Any]) -> dict[str, Any]:
    """The session's figure recordings (tests/figure_runs.py)."""
    return figure_runs


# --- registry, export and tables ----------------------------------------------------------------------------

AXIS_TITLES = {
    "load": "expert",
    "balance": "max / mean load",
    "balance-steps": "step",
    "specialization": "domain",
    "nmi": "NMI(expert; domain)",
    "sensitivity": "layer",
    "uncertainty": "top-1 − top-2 margin",
    "uncertainty-histogram": "share of decisions",
    "coactivation": "co-chosen expert",
    "transitions": "expert at layer 1",
    "repeat": "consecutive tokens",
    "steps": "timestep (noise level)",
    "step-similarity": "step",
    "denoising-paths": "block · expert",
    "spatial": "expert 0",
    "expert-similarity": "expert",
    "top-tokens": "assignments",
    "embedding": "PC 1",
    "agreement": "agreement of the two runs",
    "saturation": "saturation (top-k overlap) with the reference",
    "merge-groups": "expert (by merge group)",
    "paths": "share of tokens",
    "vocabulary": "share of tokens (cumulative)",
    "uncertain-labels": "uncertain share",
    "changes": "share of decisions changed",
    "flips": "share of decisions",
    "batch-dependence": "share of decisions changed",
    "prune-curve": "loss (nats per token)",
    "coverage": "N most-loaded experts",
    "hot-set": "hot-set size (experts)",
    "placement": "balancedness",
    "drift": "load drift",
    "drift-experts": "expert",
    "predictability": "from the previous layer",
    "vocabulary-predicted": "predicted token",
    "saliency": "REAP",
    "loss-by-uncertainty": "router entropy (norm.)",
    "loss-by-expert": "loss (nats) ± 95% CI",
    "loss-by-label": "loss (nats) ± 95% CI",
    "rank-consistency": "agreement of the two runs",
    "boundary-flips": "top-k boundary margin",
    "replay-samples": "share differing between runs",
    "reroute-margin": "share with a better route",
    "reroute-entropy": "share with a better route",
    "modality": "modality",
    "modality-specialization": "TVD of top-1 experts",
}


def test_every_kind_exports_to_svg_in_one_browser(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kaleido

    opened = []
    real_open = kaleido.Kaleido.open

    async def counting_open(self: kaleido.Kaleido) -> None:
        opened.append(self)
        await real_open(self)

    monkeypatch.setattr(kaleido.Kaleido, "open", counting_open)
    assert set(AXIS_TITLES) == set(FIGURES)
    jobs = []
    for name, kind in FIGURES.items():
        run = runs["dit"] if "diffusion" in kind.requires or "steps" in kind.requires else runs["lm"]
        run = runs["prune"] if name == "prune-curve" else run
        run = runs["reroute"] if kind.analysis == "reroute-share" else run
        run = runs["vlm"] if kind.analysis.startswith("modality") else run
        options = {
            "layer": 1 if kind.layer != "no" else None,
            "by": "domain" if kind.label == "required" else None,
            "expert": 3 if kind.expert != "no" else None,
            "other": runs["lm"] if "other" in kind.requires else None,
            "series": (runs["lm"],) if "series" in kind.requires else (),
        }
        if name == "spatial":
            options["layer"] = 0
        fig, table = make_figure(name, run, **options)
        assert not table.empty
        jobs.append((fig, tmp_path / f"{name}.svg"))
    written = export_figures(jobs)
    assert len(opened) == 1  # one browser for the whole batch
    for path in written:
        text = path.read_text()
        root = ET.fromstring(text)
        assert root.tag.endswith("svg")
        assert root.get("width") == "317"
        assert AXIS_TITLES[path.stem] in text.replace("&amp;", "&"), path.stem


def test_pdf_and_png_have_paper_sizes(runs: dict[str, Any], tmp_path: Path) -> None:
    fig, _ = make_figure("load", runs["lm"])
    wide, _ = make_figure("load", runs["lm"], width="double")
    pdf, png, png_wide = export_figures(
        [(fig, tmp_path / "load.pdf"), (fig, tmp_path / "load.png"), (wide, tmp_path / "wide.png")]
    )
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    box = re.search(rb"MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", data)
    assert box is not None
    assert float(box.group(1)) / 72 == pytest.approx(3.3, abs=0.02)  # inches wide, as laid out
    for path, layout_width in ((png, 317), (png_wide, 662)):
        head = path.read_bytes()[:24]
        assert head[:8] == PNG_SIGNATURE
        width = struct.unpack(">I", head[16:20])[0]
        assert width == int(layout_width * 300 / 96)  # 300 dpi: 990 and 2,068 px
    assert struct.unpack(">II", png.read_bytes()[16:24])[1] == int(fig.layout.height * 300 / 96)


def test_tables_as_csv_and_booktabs_latex(store: Store, tmp_path: Path) -> None:
    table = pd.DataFrame({"label_&%": ["a_b", "x$y{z}^~\\", "#1"], "nmi": [0.5, 0.25, 0.125]})
    tex = write_table(table, tmp_path / "t.tex").read_text()
    lines = tex.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{lr}"
    assert lines[-1] == r"\end{tabular}"
    assert [lines[1], lines[3], lines[-2]] == [r"\toprule", r"\midrule", r"\bottomrule"]
    assert lines[2] == r"label\_\&\% & nmi \\"
    assert lines[5] == r"x\$y\{z\}\textasciicircum{}\textasciitilde{}\textbackslash{} & 0.25 \\"
    for row in lines[2:3] + lines[4:-2]:
        assert row.endswith(r"\\")
        assert len(re.findall(r"(?<!\\)&", row)) == 1  # two cells per row
    balance = A.balance(planted_run(store, "tab", experts=SKEWED))
    back = pd.read_csv(write_table(balance, tmp_path / "b.csv"))
    pd.testing.assert_frame_equal(back, balance, check_dtype=False)
    with pytest.raises(InputError, match="tables are written as"):
        write_table(table, tmp_path / "t.xlsx")


def test_standard_set_follows_the_run(runs: dict[str, Any]) -> None:
    lm = {f.stem for f in standard_set(runs["lm"])}
    dit = {f.stem for f in standard_set(runs["dit"])}
    assert {"load", "repeat", "specialization-domain-layer0", "specialization-domain-layer3"} <= lm
    assert {"paths", "vocabulary"} <= lm
    assert not {s for s in lm if s.startswith(("steps", "spatial", "step-similarity", "denoising-paths"))}
    assert {"steps-layer0", "spatial-layer3", "step-similarity-layer0", "specialization-class-layer0"} <= dit
    assert "denoising-paths" in dit
    assert not {"repeat", "paths", "vocabulary"} & dit
    on_request = {"merge-groups", "uncertain-labels", "changes", "flips", "batch-dependence", "prune-curve"}
    assert not {s for s in lm | dit if s.startswith(tuple(on_request))}


# --- the command line ------------------------------------------------------------------------------------


def test_cli_writes_one_figure(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "spec.png"
    args = ["--run", "lm", "--kind", "specialization", "--layer", "0", "--by", "domain", "--out", str(out)]
    assert main(["figure", "--store", str(runs["store"].path), *args, "--width", "double"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    head = out.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    assert struct.unpack(">I", head[16:20])[0] == 2068  # double column, 300 dpi


@pytest.mark.slow
def test_cli_all_writes_the_standard_set_and_index(runs: dict[str, Any], tmp_path: Path) -> None:
    """As a user runs it: a subprocess, the dit run's whole set in one browser."""
    folder = tmp_path / "set"
    cli = [sys.executable, "-m", "routescope", "figure", "--store", str(runs["store"].path), "--run", "dit"]
    done = subprocess.run(
        [*cli, "--all", "--out", str(folder)], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    expected = {f.stem for f in standard_set(runs["dit"])}
    assert {p.stem for p in folder.glob("*.svg")} == expected
    assert done.stdout.startswith(f"wrote {len(expected)} figures and 8 tables to {folder}")
    index = (folder / "index.md").read_text()
    for stem in expected:
        assert f"[{stem}.svg]({stem}.svg)" in index
    assert "[balance.tex](balance.tex)" in index
    assert (folder / "balance.tex").read_text().startswith(r"\begin{tabular}")
    assert pd.read_csv(folder / "nmi-class.csv")["nmi"].tolist() == pytest.approx(
        A.label_nmi(runs["dit"], "class")["nmi"].tolist()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "lm", "--kind", "nope", "--out", "x.svg"], "unknown figure kind 'nope'"),
        (["--run", "lm", "--kind", "load", "--out", "x.jpg"], "figures are written as .svg, .pdf, .png"),
        (["--run", "missing", "--kind", "load", "--out", "x.svg"], "no run 'missing'"),
        (
            ["--run", "lm", "--kind", "coactivation", "--out", "x.svg"],
            "figure coactivation needs a layer (pass --layer)",
        ),
        (["--run", "lm", "--kind", "steps", "--layer", "0", "--out", "x.svg"], "figure steps needs a run"),
        (["--run", "lm", "--kind", "load", "--layer", "0", "--out", "x.svg"], "figure load takes no layer"),
        (["--run", "lm", "--out", "x.svg"], "give --kind KIND"),
        (["--run", "lm", "--all", "--out", "RUN_FOLDER"], "is a run's folder"),
        (
            ["--run", "lm", "--kind", "agreement", "--out", "x.svg"],
            "a second run to compare with (pass --compare)",
        ),
        (
            ["--run", "lm", "--kind", "agreement", "--compare", "missing", "--out", "x.svg"],
            "no run 'missing'",
        ),
        (["--run", "lm", "--all", "--compare", "lm", "--out", "x"], "--compare goes with --kind"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    store = str(runs["store"].path)
    run_folder = str(runs["store"].path / "lm")
    out = [str(tmp_path / a) if a.startswith("x.") else run_folder if a == "RUN_FOLDER" else a for a in args]
    assert main(["figure", "--store", store, *out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("routescope: error: ")
    assert message in err
    assert not list(tmp_path.iterdir())


def test_the_second_run_is_compare_in_report_and_figure(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One flag name for a second run: `figure --other` is gone, with no alias."""
    args = ["figure", "--store", str(runs["store"].path), "--run", "lm", "--kind", "agreement"]
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--other", "lm", "--out", str(tmp_path / "a.svg")])
    assert stopped.value.code == 2
    assert "--other" in capsys.readouterr().err


def test_figure_kinds_name_registered_analyses(runs: dict[str, Any]) -> None:
    """Each figure's table is its analysis kind's `compute` table, with the figure's options."""
    for kind in FIGURES.values():
        assert kind.analysis in A.KINDS
    _fig, table = make_figure("balance-steps", runs["dit"])
    pd.testing.assert_frame_equal(table, A.compute("balance", runs["dit"], by=("layer", "step")))
    _, table = make_figure("uncertainty-histogram", runs["lm"], layer=1, by="domain")
    assert set(table["layer"]) == {1}
    assert "domain" in table.columns
    assert table["norm_entropy"].between(0, 1).all()


def test_export_without_a_browser_is_one_line(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    args = ["figure", "--store", str(runs["store"].path), "--run", "lm", "--kind", "load"]
    assert main([*args, "--out", str(tmp_path / "load.svg")]) == 2
    assert capsys.readouterr().err == (
        f"routescope: error: BROWSER_PATH={str(tmp_path / 'no-chromium')!r} is not an executable browser\n"
    )
