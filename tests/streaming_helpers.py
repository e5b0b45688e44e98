"""Shared checks for streaming modules: streaming == offline, and causality; and the
``jrsv-stream serve`` process the server tests start."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serve_process(*args: str, timeout_s: float = 60.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """``jrsv-stream serve ARGS`` as a subprocess: (process, its ws:// URL) once it prints
    "serving on"; killed on exit if still running."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jrsv_stream.serve.cli", "serve", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        deadline = time.monotonic() + timeout_s
        while "serving on" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "server exited early"
        yield proc, line.split("serving on ")[1].split()[0]
    finally:
        if proc.poll() is None:
            proc.kill()


def run_in_chunks(step: Callable, state: Any, x: torch.Tensor, chunk: int, dim: int = -1) -> torch.Tensor:
    """Feed ``x`` to ``step`` in chunks of ``chunk`` along ``dim`` (last chunk may be
    shorter) and concatenate the outputs along the same dim."""
    outs = []
    T = x.shape[dim]
    for a in range(0, T, chunk):
        y, state = step(x.narrow(dim, a, min(chunk, T - a)), state)
        outs.append(y)
    return torch.cat(outs, dim=dim)


def assert_streaming_matches_offline(forward: Callable, step: Callable, init_state: Callable, x: torch.Tensor,
                                     chunk_sizes: list[int], dim: int = -1, atol: float = 1e-5) -> None:
    """``forward(x)`` equals the chunked ``step`` outputs for each chunk size (max abs diff <= atol)."""
    with torch.no_grad():
        ref = forward(x)
        for c in chunk_sizes:
            got = run_in_chunks(step, init_state(), x, c, dim)
            assert got.shape == ref.shape, (c, got.shape, ref.shape)
            err = (got - ref).abs().max().item()
            assert err <= atol, f"chunk {c}: max abs diff {err} > {atol}"


def assert_causal(forward: Callable, x: torch.Tensor, t: int, lookahead: int = 0, dim: int = -1, out_scale: int = 1) -> None:
    """Changing input at positions >= t + lookahead leaves outputs before t unchanged.

    ``out_scale``: input positions per output position (e.g. hop size), so outputs before
    ``t // out_scale`` are compared.
    """
    with torch.no_grad():
        y1 = forward(x)
        x2 = x.clone()
        T = x.shape[dim]
        a = t + lookahead
        x2.narrow(dim, a, T - a).copy_(torch.randn_like(x2.narrow(dim, a, T - a)) * 3.0)
        y2 = forward(x2)
        n = t // out_scale
        d1, d2 = y1.narrow(dim, 0, n), y2.narrow(dim, 0, n)
        assert torch.equal(d1, d2) or (d1 - d2).abs().max().item() < 1e-9, "output before t changed with future input"
        assert not torch.allclose(y1, y2), "output did not change at all: the check is vacuous"
