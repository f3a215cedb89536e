"""The CLI and the dashboard build the same request for the same inputs (issue 15, item 3)."""

from __future__ import annotations

import argparse

from routescope.cli_probe import add_probe_arguments, probe_request
from routescope.cli_record import add_record_arguments, record_request
from routescope.dashboard.probing import Force, Noise
from routescope.dashboard.probing import probe_request as page_probe_request
from routescope.dashboard.recording import TextOptions, image_request, text_request
from routescope.inputs import Inputs
from routescope.requests import DEFAULT_STEPS, DiffusionRequest, companion_names


def _parse(add: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)  # type: ignore[operator]
    return parser.parse_args(argv)


def test_record_requests_match() -> None:
    args = _parse(add_record_arguments, ["bundled:moe-lm", "--store", "s", "--name", "r", "--text", "a"])
    inputs = Inputs(texts=["a"])
    assert record_request(args, inputs) == text_request(inputs, TextOptions(), name="r")
    args = _parse(add_record_arguments, ["bundled:dit-digits", "--store", "s", "--name", "d"])
    cli = record_request(args, None)
    page = image_request(DiffusionRequest(), probs=False, name="d")
    assert cli == page
    assert cli.diffusion == DiffusionRequest()
    assert cli.diffusion is not None
    assert cli.diffusion.steps == DEFAULT_STEPS == 25


def test_probe_requests_match_with_the_same_companion_names() -> None:
    common = ["bundled:moe-lm", "--store", "s", "--name", "p", "--text", "a", "--layer", "1"]
    inputs = Inputs(texts=["a"])
    args = _parse(add_probe_arguments, ["force", *common, "--expert", "0", "--expert", "1"])
    cli = probe_request(args, inputs)
    page = page_probe_request(inputs, Force(experts=(0, 1), layers=(1,)), name="p", overwrite=False)
    assert cli == page
    assert cli.companion_names() == page.companion_names() == ["p.base", "p"]
    args = _parse(add_probe_arguments, ["noise", *common, "--sigma", "0.05"])
    page = page_probe_request(inputs, Noise(sigma=0.05, layers=(1,)), name="p", overwrite=False)
    assert probe_request(args, inputs) == page
    assert companion_names("p", Noise(base="b")) == ["p"]
    args = _parse(add_probe_arguments, ["ablate", *common[:5], "--classes", "0-9", "--top", "2"])
    from routescope.cli_options import diffusion_request

    assert diffusion_request(args) == DiffusionRequest()


def test_record_requests_with_token_loss_and_expert_stats_match() -> None:
    argv = ["bundled:moe-lm", "--store", "s", "--name", "r", "--text", "a", "--token-loss", "--expert-stats"]
    inputs = Inputs(texts=["a"])
    page = text_request(inputs, TextOptions(token_loss=True, expert_stats=True), name="r")
    assert record_request(_parse(add_record_arguments, argv), inputs) == page
    assert (page.token_loss, page.expert_stats) == (True, True)
    argv = ["bundled:dit-digits", "--store", "s", "--name", "d", "--expert-stats"]
    page = image_request(DiffusionRequest(), probs=False, name="d", expert_stats=True)
    assert record_request(_parse(add_record_arguments, argv), None) == page
