"""What every benchmark records: the commit it ran at and the device it ran on."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """HEAD's sha, with ``-dirty`` when the working tree has uncommitted changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(dev: torch.device | str = "cpu") -> str:
    """GPU name, or the CPU model from /proc/cpuinfo."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def parse_overrides(pairs: list[str], option: str) -> dict[str, float | int]:
    """``["a=0.5", "b=2"]`` -> ``{"a": 0.5, "b": 2}`` for the ``--endpoint`` / ``--session``
    options of the benches (a whole number stays an int: fields such as
    ``activity_window_frames`` count frames); a malformed pair exits with a message naming
    the option."""
    out: dict[str, float | int] = {}
    for x in pairs:
        k, sep, v = x.partition("=")
        try:
            if not sep or not k:
                raise ValueError
            out[k] = int(v) if v.strip().lstrip("+-").isdigit() else float(v)
        except ValueError:
            raise SystemExit(f"{option}: expected FIELD=NUMBER, got {x!r}") from None
    return out
