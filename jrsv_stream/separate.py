"""``jrsv-stream separate IN --out-dir D``: run the separator's streaming path over a file.

Any input rate and channel count is accepted (downmixed and resampled to 16 kHz mono by
:func:`jrsv_stream.audio.io.load_audio`). The audio goes through ``step`` chunk by chunk
(the streaming path; the chunk size changes speed, not the result), then ``D =
output_delay_samples`` zeros flush the overlap-add, and the first ``D`` output samples are
dropped so the written stems line up with the input sample for sample.

Writes ``speech.wav``, ``singing.wav``, ``music.wav`` (16 kHz mono, 16-bit, same length as
the resampled input) and ``activity.csv`` with columns ``time_s,speech_prob,singing_prob``;
row ``k`` describes input samples ``[k * hop, (k + 1) * hop)`` and ``time_s`` is the start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.nn.separator import ACTIVITY, SOURCES, load_separator

DEFAULT_MODEL_DIR = "models/separator_real"  # the default pipeline's separator (session 19)
DEFAULT_CHUNK_MS = 640.0


@torch.inference_mode()
def separate_stream(model, audio: np.ndarray, chunk_samples: int | None = None,
                    device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Separate a mono 16 kHz signal through the streaming ``step`` path.

    Args:
        model: a separator (``init_state``/``step``, ``hop_samples``, ``output_delay_samples``).
        audio: (T,) float mono at 16 kHz.
        chunk_samples: samples per step, rounded down to a multiple of the hop (default
            about 640 ms); results do not depend on it.
        device: where the model runs.

    Returns:
        sources (3, T) float32 aligned with ``audio``; activity probabilities (2, ceil(T / hop)).
    """
    hop, D = model.hop_samples, model.output_delay_samples
    chunk = max(hop, (chunk_samples or int(DEFAULT_CHUNK_MS * SAMPLE_RATE / 1000)) // hop * hop)
    T = len(audio)
    n_total = -(-(T + D) // hop) * hop  # input + flush, padded to whole hops
    x = np.zeros(n_total, dtype=np.float32)
    x[:T] = audio
    dtype = next(model.parameters()).dtype
    xt = torch.from_numpy(x).to(device=device, dtype=dtype)[None]
    state = model.init_state(1, device, dtype)
    outs, acts = [], []
    for a in range(0, n_total, chunk):
        out, state = model.step(xt[:, a:a + chunk], state)
        outs.append(out.sources[0].float().cpu())
        acts.append(out.activity_probs[0].float().cpu())
    sources = torch.cat(outs, dim=-1)[:, D:D + T].numpy()
    n_frames = -(-T // hop)
    return sources, torch.cat(acts, dim=-1)[:, :n_frames].numpy()


def calibrated_separator(model_dir: str | os.PathLike):
    """The separator in ``model_dir`` as the live pipeline runs it: a function mixture (T,)
    -> (its raw sources (3, T) from the streaming path, the speech and singing tracks at the
    folder's calibrated gain (2, T), what the recognizer hears)."""
    from jrsv_stream.nn.pipeline import separator_track_gain

    sep = load_separator(model_dir)[0].eval()
    gain = separator_track_gain(model_dir)

    def run(mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            srcs = separate_stream(sep, mix)[0]
        return srcs, srcs[:2] * gain

    return run


def write_activity_csv(path: str | os.PathLike, probs: np.ndarray, hop_samples: int) -> None:
    """probs: (2, F) speech/singing probabilities -> CSV ``time_s,speech_prob,singing_prob``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("time_s," + ",".join(f"{v}_prob" for v in ACTIVITY) + "\n")
        for k in range(probs.shape[1]):
            f.write(f"{k * hop_samples / SAMPLE_RATE:.4f}," + ",".join(f"{probs[j, k]:.4f}" for j in range(len(ACTIVITY))) + "\n")
    os.replace(tmp, path)


def separate_file(in_path: str | os.PathLike, out_dir: str | os.PathLike, model_dir: str | os.PathLike = DEFAULT_MODEL_DIR,
                  chunk_ms: float | None = None, device: str = "cpu") -> dict:
    """Separate an audio file into ``speech.wav singing.wav music.wav`` + ``activity.csv``.

    Args:
        in_path: any file soundfile reads (any rate, any channels).
        out_dir: output folder (created).
        model_dir: a folder with ``separator.pt`` (or the file itself).
        chunk_ms: streaming chunk (multiple of the model hop; default about 640 ms).
        device: ``cpu``, ``cuda`` or ``auto``.

    Returns:
        ``{"outputs": {name: path}, "duration_s", "algorithmic_latency_ms", "hop_samples"}``.
    """
    from jrsv_stream.audio.io import load_audio, save_audio

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _cfg, _meta = load_separator(model_dir, device)
    audio = load_audio(in_path)
    chunk = None if chunk_ms is None else int(round(chunk_ms * SAMPLE_RATE / 1000))
    sources, probs = separate_stream(model, audio, chunk, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for j, name in enumerate(SOURCES):
        paths[name] = str(out / f"{name}.wav")
        save_audio(paths[name], np.clip(sources[j], -1.0, 1.0), SAMPLE_RATE)
    paths["activity"] = str(out / "activity.csv")
    write_activity_csv(paths["activity"], probs, model.hop_samples)
    return {"outputs": paths, "duration_s": len(audio) / SAMPLE_RATE,
            "algorithmic_latency_ms": model.algorithmic_latency_ms, "hop_samples": model.hop_samples}


def _cmd(a) -> int:
    res = separate_file(a.input, a.out_dir, a.model, a.chunk_ms, a.device)
    print(" ".join(res["outputs"].values()))
    return 0


def add_cli(subparsers) -> None:
    """Register ``separate`` on the top-level subparsers (cli.py)."""
    s = subparsers.add_parser("separate", help="split a file into speech / singing / music + activity (streaming path)")
    s.add_argument("input", help="audio file (any rate, any channels)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--model", default=DEFAULT_MODEL_DIR, help=f"model folder (default {DEFAULT_MODEL_DIR})")
    s.add_argument("--chunk-ms", type=float, default=None, help="streaming chunk in ms (speed only)")
    s.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    s.set_defaults(fn=_cmd)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m jrsv_stream.separate")
    sub = p.add_subparsers(dest="cmd")
    add_cli(sub)
    args = p.parse_args(["separate", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"separate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
