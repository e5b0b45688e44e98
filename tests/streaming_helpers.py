"""Shared checks for streaming modules: streaming == offline, and causality."""

from __future__ import annotations

from typing import Any, Callable

import torch


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
