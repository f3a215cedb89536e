"""The CLI's output layer: plain lines on stdout for results (errors go to stderr in `cli.main`)."""

from __future__ import annotations

import sys


def out(text: str = "") -> None:
    """Write one line of command output."""
    sys.stdout.write(text + "\n")
