"""What the tests need from the system, and the in-repo tools they use.

A test whose prerequisite is missing fails with the reason and the fix (``bash
.ci/setup.sh`` installs every system package the suite uses); it is never skipped
silently, so a machine that lacks a tool cannot pass while testing less. The tools the
tests run live in ``tests/tools/`` (no file outside the repository is needed).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent / "tools"
ALSA_TOOL = TOOLS / "alsa-file-device.sh"  # an ALSA capture device that plays a file (needs sox, libportaudio2)


def require(ok: bool, what: str) -> None:
    """Fail the calling test (no traceback) when ``ok`` is False."""
    if not ok:
        pytest.fail(f"missing test prerequisite: {what} (install the system packages: bash .ci/setup.sh)", pytrace=False)


def require_tools(*names: str) -> None:
    """Fail the calling test unless every program in ``names`` is on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    require(not missing, "program(s) not on PATH: " + ", ".join(missing))


def require_files(*paths: Path) -> None:
    missing = [str(p) for p in paths if not Path(p).exists()]
    require(not missing, "file(s) missing: " + ", ".join(missing))


def needs(*names: str, files: tuple[Path, ...] = ()):
    """Decorator form of :func:`require_tools` / :func:`require_files`."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            require_tools(*names)
            require_files(*files)
            return fn(*args, **kwargs)

        return wrapper

    return deco
