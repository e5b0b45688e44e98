"""Run a parsed command (shared by ``jrsv-stream`` and the ``python -m`` entry points of the
trainers): a low module, so that the trainers need not import the CLI that imports them."""

from __future__ import annotations

import argparse
import sys


def run_handler(args: argparse.Namespace, prog: str = "jrsv-stream") -> int:
    """Run a parsed command's ``args.fn``: its exit code, 130 on Ctrl-C, 2 with a one-line
    error for bad input (shared by ``jrsv-stream`` and the ``python -m`` entry points)."""
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
