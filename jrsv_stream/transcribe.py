"""``jrsv-stream transcribe IN --json OUT [--srt/--vtt/--lrc]``: offline captions through the
streaming path (the live worker and sessions, run as fast as possible: one code path)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jrsv_stream.audio.io import load_audio
from jrsv_stream.export.subtitles import cues_from_finals, write_subtitles
from jrsv_stream.stream.events import Final
from jrsv_stream.nn.loader import default_pipeline_spec, load_pipeline
from jrsv_stream.stream.session import SessionConfig, transcribe
from jrsv_stream.stream.worker import BatchWorker

TRACK_KEYS = {"speech": "speech", "lyrics": "lyrics"}


def transcribe_file(path: str | Path, pipeline: str | None = None, chunk_ms: float | None = None) -> dict[str, list[dict]]:
    """Finals of both tracks: ``{"speech": [{"text", "start", "end", "words"}...], "lyrics": [...]}``."""
    audio = load_audio(path)
    p = load_pipeline(pipeline or default_pipeline_spec(), int(round(chunk_ms * 16)) if chunk_ms else None)
    worker = BatchWorker(p, max_batch=1, max_wait_ms=0).start()
    try:
        # a file needs no early finals: one final per segment (incremental finals keep the
        # final WER on every set measured, at the cost of a Whisper hypothesis every 0.64 s)
        events = transcribe(worker, audio, SessionConfig(commit_every_s=0.0))
    finally:
        worker.stop()
    out: dict[str, list[dict]] = {k: [] for k in TRACK_KEYS.values()}
    for e in events:
        if isinstance(e, Final) and e.text:
            out[TRACK_KEYS[e.track]].append({"text": e.text, "start": round(e.start_s, 3), "end": round(e.end_s, 3),
                                             "words": [list(w) for w in e.words]})
    return out


def _cmd(a: argparse.Namespace) -> int:
    from jrsv_stream.nn.pipeline import set_final_whisper

    set_final_whisper(a.final_whisper)
    result = transcribe_file(a.input, a.pipeline, a.chunk_ms)
    finals = [{"track": t, "text": s["text"], "words": s["words"], "start_s": s["start"], "end_s": s["end"]}
              for t, segs in result.items() for s in segs]
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    for fmt, path in (("srt", a.srt), ("vtt", a.vtt)):
        if path:  # one file per track: NAME.speech.srt, NAME.lyrics.srt
            base = Path(path)
            for track in TRACK_KEYS:
                write_subtitles(base.with_suffix(f".{track}{base.suffix}"), fmt, cues_from_finals(finals, track))
    if a.lrc:
        write_subtitles(a.lrc, "lrc", cues_from_finals(finals, "lyrics"))
    if not any((a.json, a.srt, a.vtt, a.lrc)):
        print(json.dumps(result, indent=1))
    return 0


def add_cli(subparsers) -> None:
    s = subparsers.add_parser("transcribe", help="caption a file (speech + lyrics finals) through the streaming path")
    s.add_argument("input", help="any audio file (any rate, any channel count)")
    s.add_argument("--json", help="write {speech: [...], lyrics: [...]} finals here")
    s.add_argument("--srt", help="SRT per track: NAME.srt -> NAME.speech.srt, NAME.lyrics.srt")
    s.add_argument("--vtt", help="WebVTT per track, named like --srt")
    s.add_argument("--lrc", help="LRC of the lyrics track")
    s.add_argument("--pipeline", default=None, help="model folder (default: shipped models) or 'tiny'")
    s.add_argument("--chunk-ms", type=float, default=None, help="audio per step (default: the pipeline's)")
    s.add_argument("--final-whisper", default=None, choices=("tiny.en", "base", "small"),
                   help="Whisper model of the finals (default: the recognizer's own)")
    s.set_defaults(fn=_cmd)
