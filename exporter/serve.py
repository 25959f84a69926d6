"""The sidecar entry point (being built; see issue 4)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser``."""
    parser.add_argument("--config", metavar="FILE", help="YAML config file")


def main(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM; returns the exit status."""
    raise SystemExit("codebook serve: not available yet")
