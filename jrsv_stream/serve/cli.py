"""``jrsv-stream serve | capture | demo``: registered by :func:`add_cli` (argparse only here).

- ``serve``: the caption server (publishers send audio over the websocket).
- ``capture --device NAME|INDEX``: the server plus local capture from a sound device as
  stream ``--stream`` (default ``live``).
- ``demo``: the whole live path on loopback: server + demo audio published at real time
  by the broadcaster client + the two-pane viewer (``--no-viewer``: finals as plain lines;
  ``--duration S``: stop after S seconds), for people, CI and tmux tests alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from jrsv_stream.nn.pipeline import set_final_whisper
from jrsv_stream.nn.loader import default_pipeline_spec

DEMO_AUDIO_CANDIDATES = ("models/demo/demo.flac", "models/demo/demo.wav")
DEMO_CACHE = Path("out/demo")


def _add_server_args(p: argparse.ArgumentParser, port: int = 8765) -> None:
    p.add_argument("--pipeline", default=default_pipeline_spec(),
                   help="'tiny' (random plumbing model) or a model folder (default: $JRSV_PIPELINE, else models/jrsv, else models, else tiny)")
    p.add_argument("--chunk-ms", type=float, default=None, help="audio per model step (default: the pipeline's)")
    p.add_argument("--final-whisper", default=None, choices=("tiny.en", "base", "small"),
                   help="Whisper model of the finals (default: the recognizer's own, base; small needs pip install .[small])")
    p.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 to accept remote clients)")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--publish-token", default=os.environ.get("JRSV_PUBLISH_TOKEN"), help="required from publishers ($JRSV_PUBLISH_TOKEN)")
    p.add_argument("--subscribe-token", default=os.environ.get("JRSV_SUBSCRIBE_TOKEN"), help="required from subscribers ($JRSV_SUBSCRIBE_TOKEN)")
    p.add_argument("--allowed-origin", action="append", default=None, help="browser Origin allowed (repeat); default: any")
    p.add_argument("--max-streams", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--max-message-bytes", type=int, default=1 << 20)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--certfile", default=None, help="TLS certificate chain (PEM): serve wss:// and https://")
    p.add_argument("--keyfile", default=None, help="TLS private key (PEM; default: in --certfile)")
    g = p.add_argument_group("caption controls of every stream (publishers add their own in 'start')")
    g.add_argument("--caption-config", default=None, help="YAML/JSON file with hotwords, replace, mask, tracks (the 'start' schema)")
    g.add_argument("--hotword", action="append", default=[], metavar="PHRASE[:BOOST]",
                   help="phrase to prefer (repeat); optional boost in nats per token, e.g. 'Kaylee Vonderhaar:4'")
    g.add_argument("--replace", action="append", default=[], metavar="FROM=TO", help="whole-word replacement (repeat)")
    g.add_argument("--mask", action="append", default=[], metavar="WORD", help="word shown masked, e.g. d*** (repeat)")
    g.add_argument("--tracks", default=None, help="tracks to caption: speech, lyrics or speech,lyrics (default both)")
    p.add_argument("--sink", action="append", default=[], metavar="SPEC",
                   help="push finals to obs://[:PASSWORD@]HOST:PORT, youtube:URL or webhook:URL (repeat for several)")
    p.add_argument("--sinks-file", default=None, help="file of sink specs, one per line (# comments)")
    p.add_argument("--sink-stream", default=None, help="stream whose finals the sinks get (default: --stream, else live)")


def caption_options_from_args(a: argparse.Namespace):
    """The server-wide caption controls: ``--caption-config`` overridden by the flags.

    Raises:
        CaptionOptionError: a bad value (the flag or file field is named).
    """
    from jrsv_stream.stream.captions import (CaptionOptions, load_caption_config, merge_options, options_from_flags,
                                             parse_caption_options)

    base = load_caption_config(a.caption_config) if a.caption_config else CaptionOptions()
    d = options_from_flags(a.hotword, a.replace, a.mask, a.tracks)
    return merge_options(base, parse_caption_options(d, "flags"))


def _build(a: argparse.Namespace):
    import logging

    import torch

    from jrsv_stream.serve.server import CaptionServer, ServerConfig
    from jrsv_stream.nn.loader import load_pipeline

    logging.basicConfig(level=getattr(logging, str(a.log_level).upper(), logging.INFO), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    chunk = int(round(a.chunk_ms * 16)) if a.chunk_ms else None
    set_final_whisper(a.final_whisper)
    from jrsv_stream.stream.captions import CaptionOptionError

    try:
        options = caption_options_from_args(a)
    except (CaptionOptionError, OSError) as e:
        raise SystemExit(f"jrsv-stream: bad caption option: {e}") from e
    if a.keyfile and not a.certfile:
        raise SystemExit("jrsv-stream: --keyfile needs --certfile")
    pipeline = load_pipeline(a.pipeline, chunk)
    cfg = ServerConfig(host=a.host, port=a.port, publish_token=a.publish_token, subscribe_token=a.subscribe_token,
                       allowed_origins=tuple(a.allowed_origin) if a.allowed_origin else None, max_streams=a.max_streams,
                       max_batch=a.max_batch, max_wait_ms=a.max_wait_ms, max_message_bytes=a.max_message_bytes,
                       caption_options=options, certfile=a.certfile, keyfile=a.keyfile)
    return CaptionServer(pipeline, cfg), pipeline


def _sinks(a: argparse.Namespace) -> list:
    """The sinks of ``--sink`` / ``--sinks-file`` (a bad spec is a usage error before anything starts)."""
    from jrsv_stream.serve.sinks import parse_sink, read_sinks_file

    specs = list(a.sink) + (read_sinks_file(a.sinks_file) if a.sinks_file else [])
    try:
        return [parse_sink(s) for s in specs]
    except ValueError as e:
        raise SystemExit(f"jrsv-stream: {e}")


async def _serve(server, sources=None, duration_s: float | None = None, stream_hint: str = "demo", sinks=(),
                 sink_stream: str | None = None) -> None:
    from jrsv_stream.serve.server import serve_forever
    from jrsv_stream.serve.sinks import feed_sinks

    stop = asyncio.Event()
    if duration_s is not None:
        asyncio.get_running_loop().call_later(duration_s, stop.set)
    feeder = []

    def ready(s):
        print(f"jrsv-stream: serving on {s.url} (device {s.worker.device}); health: {s.http_url}/healthz", flush=True)
        print(f"  overlay:   {s.http_url}/overlay?stream={stream_hint}  (OBS: add a Browser source with this URL)", flush=True)
        print(f"  viewer:    python -m clients.viewer {s.url} --stream {stream_hint}", flush=True)
        print(f"  publisher: python -m clients.broadcast {s.url} --stream {stream_hint} --file AUDIO", flush=True)
        if sinks:  # the sinks subscribe like any client: a failing sink cannot touch captioning
            host = "127.0.0.1" if s.config.host in ("0.0.0.0", "::", "") else s.config.host
            sid = sink_stream or stream_hint
            feeder.append(asyncio.ensure_future(feed_sinks(f"ws://{host}:{s.port}", sid, list(sinks),
                                                           s.config.subscribe_token, stop)))
            print(f"  sinks ({sid}): " + ", ".join(x.describe() for x in sinks), flush=True)

    await serve_forever(server, sources, stop, on_ready=ready)
    await asyncio.gather(*feeder, return_exceptions=True)


def _cmd_serve(a: argparse.Namespace) -> int:
    sinks = _sinks(a)
    server, _ = _build(a)
    asyncio.run(_serve(server, duration_s=a.duration, stream_hint=a.sink_stream or "live", sinks=sinks))
    return 0


def _cmd_capture(a: argparse.Namespace) -> int:
    from jrsv_stream.audio.sources import SoundDeviceSource

    sinks = _sinks(a)
    server, _ = _build(a)
    src = SoundDeviceSource(a.device, sample_rate=a.sample_rate, channels=a.channels)
    print(f"capturing from {src.device_name!r} at {src.native_rate} Hz x {src.channels} ch as stream {a.stream!r}", flush=True)
    asyncio.run(_serve(server, {a.stream: src}, duration_s=a.duration, stream_hint=a.stream, sinks=sinks,
                       sink_stream=a.sink_stream))
    return 0


def ensure_demo_audio(cache: Path = DEMO_CACHE, seed: int = 0) -> tuple[Path, list[dict]]:
    """The demo recording: a bundled file if the repository ships one, else one made once
    from a small synthetic corpus (speech and singing over music, ~1 min; cached).

    Returns:
        (audio path, reference words [{"track", "words": [[w, s, e], ...]}] when known).
    """
    import json

    for c in DEMO_AUDIO_CANDIDATES:
        if Path(c).is_file():
            ref = Path(c).with_suffix(".json")
            return Path(c), (json.loads(ref.read_text()) if ref.is_file() else [])
    out = cache / "demo.flac"
    ref_path = cache / "demo.json"
    if out.is_file() and ref_path.is_file():
        return out, json.loads(ref_path.read_text())
    import numpy as np

    from jrsv_stream.audio.io import load_audio, save_audio
    from jrsv_stream.data.manifest import read_manifest
    from jrsv_stream.data.synth import SynthConfig, build_corpus

    corpus = cache / "corpus"
    print(f"making the demo audio once (small synthetic corpus in {corpus}) ...", file=sys.stderr, flush=True)
    for attempt in range(3):  # TTS/singing engines occasionally fail on a draw: try another seed
        try:
            build_corpus(corpus / str(seed + attempt), SynthConfig(hours=0.01, seed=seed + attempt), workers=1, progress=False)
            corpus = corpus / str(seed + attempt)
            break
        except RuntimeError as e:
            print(f"demo corpus (seed {seed + attempt}) failed: {e}", file=sys.stderr)
    else:
        raise RuntimeError("could not make the demo audio; pass --audio FILE")
    pieces, refs, t = [], [], 0.0
    gap = np.zeros(8000, dtype=np.float32)
    for split in ("test", "valid", "train"):
        for item in read_manifest(corpus / f"{split}.jsonl"):
            x = load_audio(corpus / item.mixture)
            for track, key in (("speech", "speech_words"), ("lyrics", "singing_words")):
                words = getattr(item, key, None)
                if words:
                    refs.append({"track": track, "words": [[w, round(s + t, 3), round(e + t, 3)] for w, s, e in words]})
            pieces += [x, gap]
            t += (len(x) + len(gap)) / 16000
    save_audio(out, np.concatenate(pieces))
    ref_path.write_text(json.dumps(refs))
    return out, refs


def demo_wer_line(refs: list[dict], finals: dict[str, list[str]]) -> str:
    """``WER speech 12.3 % (CER 4.5 %, n words), lyrics ...``: all finals of a track, in order, against all
    reference words of that track (the demo's ``demo.json``)."""
    import jiwer

    parts = []
    for track in ("speech", "lyrics"):
        ref = " ".join(w for r in refs if r["track"] == track for w, _, _ in r["words"])
        hyp = " ".join(t for t in finals.get(track, []) if t.strip())
        if ref:
            parts.append(f"{track} {100 * jiwer.wer(ref, hyp):.1f} % (CER {100 * jiwer.cer(ref, hyp):.1f} %, "
                         f"{len(ref.split())} words)")
    return "WER " + ", ".join(parts) + " against the demo transcript"


def _cmd_demo(a: argparse.Namespace) -> int:
    import threading

    import torch

    from clients.broadcast import broadcast
    from clients.viewer import run_viewer
    from jrsv_stream.audio.sources import FileSource
    from jrsv_stream.serve.protocol import stream_url
    from jrsv_stream.serve.server import ServerConfig, ServerThread
    from jrsv_stream.nn.loader import load_pipeline

    if a.threads:
        torch.set_num_threads(a.threads)
    audio, refs = (Path(a.audio), []) if a.audio else ensure_demo_audio()
    set_final_whisper(a.final_whisper)
    pipeline = load_pipeline(a.pipeline, int(round(a.chunk_ms * 16)) if a.chunk_ms else None)
    if a.pipeline == "tiny":
        print("demo: TinyPipeline (random weights, plumbing only): captions are random letters", file=sys.stderr, flush=True)
    st = ServerThread(pipeline, ServerConfig(host="127.0.0.1", port=a.port)).start()
    sub = stream_url(st.url, "subscribe", a.stream)
    pub = stream_url(st.url, "publish", a.stream)
    t0 = time.time()

    async def main():
        # The viewer exits when the stream ends: after the audio, or after --duration (the
        # source is closed then, the broadcaster sends "end", the server flushes finals).
        viewer = asyncio.ensure_future(run_viewer(sub, duration_s=None if a.duration is None else a.duration + 30,
                                                  exit_on_end=True, plain=a.no_viewer, reconnect=False))
        await asyncio.sleep(0.3)  # the viewer subscribes before the first audio
        source = FileSource(audio, realtime=not a.fast)
        if a.duration is not None:
            asyncio.get_running_loop().call_later(a.duration, source.close)
        bc = asyncio.ensure_future(broadcast(pub, source))
        board = await viewer
        if not bc.done():
            bc.cancel()
        await asyncio.gather(bc, return_exceptions=True)
        return board

    try:
        board = asyncio.run(main())
    except KeyboardInterrupt:
        board = None
    finally:
        stopper = threading.Thread(target=st.stop)
        stopper.start()
        stopper.join(30)
    if board is not None:
        n = {t: len(v.finals) for t, v in board.views.items()}
        lat = "-" if board.latency_ms is None else f"{board.latency_ms:.0f} ms"
        print(f"demo: {time.time() - t0:.1f} s, {board.audio_time_s:.1f} s of audio captioned; finals "
              + ", ".join(f"{t} {k}" for t, k in n.items()) + f"; last caption latency {lat} (server side)", flush=True)
        if refs and a.duration is None:  # the bundled demo: score the finals against its transcript
            print("demo: " + demo_wer_line(refs, {t: list(v.finals) for t, v in board.views.items()}), flush=True)
    return 0


def add_cli(subparsers) -> None:
    """Register ``serve``, ``capture`` and ``demo`` on the ``jrsv-stream`` subparsers."""
    s = subparsers.add_parser("serve", help="run the websocket caption server")
    _add_server_args(s)
    s.add_argument("--duration", type=float, default=None, help="stop (cleanly) after this many seconds")
    s.set_defaults(fn=_cmd_serve)

    s = subparsers.add_parser("capture", help="caption a local sound device through the server")
    _add_server_args(s)
    s.add_argument("--device", required=True, help="input device name (or part of it) or index; see python -m sounddevice")
    s.add_argument("--stream", default="live", help="stream id subscribers use")
    s.add_argument("--sample-rate", type=int, default=None, help="capture rate (default: the device's native rate)")
    s.add_argument("--channels", type=int, default=None, help="capture channels (downmixed; default min(2, device max))")
    s.add_argument("--duration", type=float, default=None, help="stop (cleanly) after this many seconds")
    s.set_defaults(fn=_cmd_capture)

    s = subparsers.add_parser("demo", help="live captioning demo: server + demo audio at real time + two-pane viewer")
    s.add_argument("--audio", default=None, help="audio file to play (default: the bundled / generated demo recording)")
    s.add_argument("--pipeline", default=default_pipeline_spec(), help="'tiny' or a model folder")
    s.add_argument("--chunk-ms", type=float, default=None)
    s.add_argument("--final-whisper", default=None, choices=("tiny.en", "base", "small"),
                   help="Whisper model of the finals (default: the recognizer's own, base; small needs pip install .[small])")
    s.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    s.add_argument("--no-viewer", action="store_true", help="print finals as lines instead of the live viewer")
    s.add_argument("--fast", action="store_true", help="send the audio as fast as possible instead of real time")
    s.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    s.add_argument("--stream", default="demo")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=_cmd_demo)


def main(argv: list[str] | None = None) -> int:
    """``python -m jrsv_stream.serve.cli serve|capture|demo ...`` (same as ``jrsv-stream ...``)."""
    p = argparse.ArgumentParser(prog="python -m jrsv_stream.serve.cli")
    add_cli(p.add_subparsers(dest="cmd", required=True))
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
