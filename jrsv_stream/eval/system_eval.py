"""``jrsv-stream eval MANIFEST.jsonl --json OUT.json``: the whole system through the live path.

Any configuration runs through the **streaming** path: the separator + recognizer pipeline
(or a recognizer with no separator, ``--separator none``: a
:class:`~jrsv_stream.nn.pipeline.PassThroughSeparator` hands the mixture to both tracks
with activity 1, so the "mixture ASR" baseline is the same code path) is owned by one
:class:`~jrsv_stream.stream.worker.BatchWorker`, and ``--streams K`` items at a time go
through :func:`jrsv_stream.stream.session.transcribe` from K threads, so concurrent streams
share batches as live streams do. The hypothesis of a track is the item's finals of that
track joined in time order.

Reported:

- per caption track (``speech`` <- ``speech_text``, ``lyrics`` <- ``singing_text``), WER and
  CER in percent, corpus level (sum of edits / sum of reference words or characters; text
  lowercased, punctuation removed, on both sides), overall, per SNR bucket (-5/0/+5 dB, the
  manifest's ``speech_snr_bucket`` / ``singing_snr_bucket``) and per scenario. Words output
  on a track whose source is absent from the item (lyrics over an instrumental or over
  pure speech) count as insertions in that track's WER/CER and are also reported as
  ``hallucinated_words``. Such items have no SNR bucket on that track: they count in the
  overall and per-scenario figures only. A group with no reference words has ``wer`` null.
- with a real separator, SI-SDRi per source (present sources) overall, per SNR bucket
  (music: the mean SNR of the item's vocals) and per scenario, and activity AUROC/F1: the
  separator's chunked ``step`` at the eval chunk size
  (:func:`jrsv_stream.separate.separate_stream`, aligned by ``output_delay_samples``),
  scored by :func:`jrsv_stream.eval.separation.score_separation_item` as in training
  validation. ``separation`` is null with ``--separator none``.

An item that fails (unreadable audio, a model error event) is listed in ``failed_items``
and left out of the figures; the other items still run. The text normalization and the
error counts live in :mod:`jrsv_stream.eval.scoring` (re-exported here).

    jrsv-stream eval data/corpus/test.jsonl --json runs/eval/test.json --label full
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.eval.scoring import (SNR_BUCKETS, TRACK_SOURCE, ErrorCounts, count_errors,  # noqa: F401  (re-exported)
                                     normalize_text, score_tracks, summarize_separation_by_scenario, track_bucket)


# --- configuration and models -------------------------------------------------------------------
@dataclass(frozen=True)
class SystemEvalConfig:
    """What to evaluate.

    pipeline: folder with ``pipeline.yaml`` or ``separator/`` and ``asr/`` (used for
        whichever of the two is not given). separator: a separator folder, or ``"none"`` for the pass-through.
    asr: a recognizer folder. chunk_ms: audio per streaming step. max_items: first N items.
    streams: items run concurrently (the worker's max batch). label: stored in the JSON.
    device: ``cpu`` / ``cuda`` (default: CUDA when present). threads: torch CPU threads
    (0: torch's default). max_wait_ms: the worker's batching wait. lm: decode with the
    recognizer's LM (``asr/lm.npz``) when it has one.
    """

    pipeline: str = "models"
    separator: str | None = None
    asr: str | None = None
    chunk_ms: float | None = None  # None: the pipeline.yaml's chunk_ms, else 320
    max_items: int | None = None
    streams: int = 8
    label: str | None = None
    device: str | None = None
    threads: int = 0
    max_wait_ms: float = 10.0
    lm: bool = True
    lm_weight: float | None = None
    lm_bonus: float | None = None
    score_separation: bool = True
    track_margin: float | None = None  # the sessions' cross-track rule (SessionConfig.track_margin)
    endpoint: tuple[tuple[str, float], ...] = ()  # EndpointConfig fields to replace, e.g. (("rule2_trailing_silence_s", 0.5),)
    session: tuple[tuple[str, float], ...] = ()  # SessionConfig fields to replace, e.g. (("gate_on", 0.3),)
    voice_rescue_override: str | None = None  # "off" or a float: replaces the pipeline.yaml's voice_rescue
    speech_final_mix: float | None = None  # replaces the pipeline.yaml's speech_final_mix
    speech_final_consensus: bool | None = None  # replaces the pipeline.yaml's speech_final_consensus
    final_beam: int | None = None  # replaces the Whisper finals' beam (final.beam of the recognizer)
    final: tuple[tuple[str, float], ...] = ()  # the recognizer's FinalConfig fields to replace, e.g. (("min_confidence", 0.2),)

    def __post_init__(self):
        if self.streams < 1:
            raise ValueError(f"--streams must be >= 1, got {self.streams}")
        if self.chunk_ms is not None and self.chunk_ms <= 0:
            raise ValueError(f"--chunk-ms must be > 0, got {self.chunk_ms}")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"--max-items must be >= 1, got {self.max_items}")

    def _spec(self) -> dict | None:
        from jrsv_stream.nn.pipeline import read_pipeline_file

        return read_pipeline_file(self.pipeline)

    def _pipeline_part(self, name: str) -> str:
        """``name`` (separator / asr) of the pipeline folder: from its ``pipeline.yaml``
        when it has one (``null`` separator: "none"), else the subfolder."""
        spec = self._spec()
        if spec is not None:
            return "none" if spec[name] is None else str(spec[name])
        return str(Path(self.pipeline) / name)

    @property
    def lm_dir(self) -> str | None:
        """The LM folder named by the pipeline's ``pipeline.yaml`` (``lm:``), when the
        recognizer is the pipeline's own; None: the recognizer folder's ``lm.npz``."""
        spec = self._spec()
        if self.asr is not None or spec is None or spec["lm"] is None:
            return None
        return str(spec["lm"])

    @property
    def speech_final_audio(self) -> str:
        """``speech_final_audio`` of the pipeline's ``pipeline.yaml`` ("separated" when none)."""
        spec = self._spec()
        return "separated" if spec is None else spec["speech_final_audio"]

    @property
    def voice_gate(self) -> bool:
        """``voice_gate`` of the pipeline's ``pipeline.yaml`` (False when none)."""
        spec = self._spec()
        return False if spec is None else spec["voice_gate"]

    @property
    def voice_bias(self) -> float:
        from jrsv_stream.nn.pipeline import VOICE_BIAS

        spec = self._spec()
        return VOICE_BIAS if spec is None else spec["voice_bias"]

    @property
    def voice_rescue(self) -> float | None:
        """``voice_rescue`` of the pipeline's ``pipeline.yaml`` (None: off), or the override."""
        if self.voice_rescue_override is not None:
            return None if self.voice_rescue_override == "off" else float(self.voice_rescue_override)
        spec = self._spec()
        return None if spec is None else spec["voice_rescue"]

    @property
    def separator_path(self) -> str:
        return self.separator or self._pipeline_part("separator")

    @property
    def asr_path(self) -> str:
        return self.asr or self._pipeline_part("asr")

    @property
    def real_separator(self) -> bool:
        """False when the recognizer hears the mixture (``separator: none``)."""
        return self.separator_path != "none"

    @property
    def effective_chunk_ms(self) -> float:
        """``chunk_ms``, else the pipeline folder's own (``pipeline.yaml``), else 320 ms."""
        if self.chunk_ms is not None:
            return float(self.chunk_ms)
        spec = self._spec() if self.asr is None else None
        return float(spec["chunk_ms"]) if spec is not None and spec.get("chunk_ms") else 320.0

    @property
    def chunk_samples(self) -> int:
        ms = self.effective_chunk_ms
        n = ms * SAMPLE_RATE / 1000.0
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"--chunk-ms {ms} is not a whole number of samples at {SAMPLE_RATE} Hz")
        return int(round(n))


def build_pipeline(cfg: SystemEvalConfig):
    """The :class:`~jrsv_stream.nn.pipeline.JRSVPipeline` of a configuration (on CPU; the
    worker moves it to its device).

    Returns:
        (pipeline, True if a real separator is configured).

    Raises:
        FileNotFoundError: a model folder is missing; ValueError: bad chunk size or model.
    """
    from jrsv_stream.nn.pipeline import pipeline_from_folders

    real = cfg.real_separator
    try:
        p = pipeline_from_folders(cfg.separator_path if real else None, cfg.asr_path, cfg.chunk_samples, "cpu", lm=cfg.lm,
                                  lm_dir=cfg.lm_dir, speech_final_audio=cfg.speech_final_audio if real else "separated",
                                  voice_gate=cfg.voice_gate and real, voice_bias=cfg.voice_bias,
                                  voice_rescue=cfg.voice_rescue if cfg.voice_gate and real else None)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (give --asr DIR and --separator DIR|none, or a --pipeline folder holding "
                                f"asr/ and separator/)") from e
    spec = cfg._spec()
    if spec is not None and cfg.asr is None:  # the pipeline's own session rules (pipeline.yaml)
        p.commit_every_s = spec["commit_every_s"]
        p.speech_final_mix = spec["speech_final_mix"]
        p.lyrics_final_mix = spec["lyrics_final_mix"]
        p.speech_final_consensus = spec["speech_final_consensus"]
        p.endpoint = spec["endpoint"]
        p.lyrics_endpoint = spec["lyrics_endpoint"]
    if cfg.speech_final_mix is not None:
        p.speech_final_mix = float(cfg.speech_final_mix)
    if cfg.speech_final_consensus is not None:
        if cfg.speech_final_consensus and p.speech_final_audio != "mixture":
            raise ValueError("speech_final_consensus needs a pipeline whose speech finals keep the mixture "
                             "(speech_final_audio: mixture)")
        p.speech_final_consensus = bool(cfg.speech_final_consensus)
    if cfg.final_beam is not None:
        if not hasattr(p.asr.cfg, "final"):
            raise ValueError("--final-beam needs a Whisper-CTC recognizer")
        p.asr.cfg = dataclasses.replace(p.asr.cfg, final=dataclasses.replace(p.asr.cfg.final, beam=int(cfg.final_beam)))
    if cfg.final:
        if not hasattr(p.asr.cfg, "final"):
            raise ValueError("--final needs a Whisper-CTC recognizer")
        p.asr.cfg = dataclasses.replace(p.asr.cfg, final=dataclasses.replace(p.asr.cfg.final, **dict(cfg.final)))
    if (cfg.lm_weight is not None or cfg.lm_bonus is not None) and p.lm is None:
        raise ValueError(f"--lm-weight/--lm-bonus given but {cfg.asr_path} has no lm.npz (or --no-lm was given)")
    if p.lm is not None:
        if cfg.lm_weight is not None:
            p.lm.weight = float(cfg.lm_weight)
        if cfg.lm_bonus is not None:
            p.lm.token_bonus = float(cfg.lm_bonus)
    return p, real


# --- running ------------------------------------------------------------------------------------
def _hypotheses(events, tracks) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """Finals of each track joined in time order; the messages of any error events; and
    per track the last partial shown before each of those finals, joined the same way
    (what a viewer read just before the final replaced it)."""
    from jrsv_stream.stream.events import Error, Final, Partial

    finals = sorted((e for e in events if isinstance(e, Final) and e.text), key=lambda e: (e.start_s, e.seq))
    last_partial: dict[tuple[str, str], Partial] = {}
    for e in events:
        if isinstance(e, Partial):
            last_partial[(e.track, e.segment_id)] = e
    errors = [f"{e.code}: {e.message}" for e in events if isinstance(e, Error)]

    def shown(f: Final) -> str:
        # the partial's words over the final's stretch of audio: with incremental finals a
        # final commits the first words of what its partial showed, the rest goes on in the
        # next segment's partial (scored there)
        p = last_partial.get((f.track, f.segment_id))
        if p is None:
            return ""
        if not p.words:
            return p.text
        return " ".join(w[0] for w in p.words if w[1] <= f.end_s + 1e-6)

    partials = {t: " ".join(shown(e) for e in finals if e.track == t).strip() for t in tracks}
    return {t: " ".join(e.text for e in finals if e.track == t) for t in tracks}, errors, partials


def _run_item(worker, dataset, i: int, chunk_samples: int, score_separation: bool, session_config=None) -> dict:
    """Transcribe item ``i`` through the live path (and score its separation when asked)."""
    import torch

    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.stream.session import transcribe

    item = dataset.items[i]
    if score_separation:
        ex = dataset[i]
        audio = ex["mixture"][: ex["length"]].numpy()
    else:  # no stems needed
        ex, audio = None, load_audio(item.path("mixture", dataset.root))
    t0 = time.perf_counter()
    from jrsv_stream.stream.session import SessionConfig

    events = transcribe(worker, audio, session_config or SessionConfig(), stream_id=item.id)
    hyps, errors, partials = _hypotheses(events, TRACK_SOURCE)
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    rec = {"id": item.id, "scenario": item.extra.get("scenario"), "duration_s": round(len(audio) / SAMPLE_RATE, 3)}
    for track, src in TRACK_SOURCE.items():
        rec[track] = {"ref": getattr(item, f"{src}_text"), "hyp": hyps[track], "last_partial": partials[track],
                      "snr_bucket": track_bucket(item.extra, src) if getattr(item, src) is not None else None}
    rec["asr_s"] = round(time.perf_counter() - t0, 3)
    rec["word_latency_s"] = word_audio_latency(events, {t: getattr(item, f"{src}_words") for t, src in TRACK_SOURCE.items()
                                                         if getattr(item, f"{src}_text")})
    if score_separation:
        from jrsv_stream.separate import separate_stream
        from jrsv_stream.eval.separation import score_separation_item

        sep = worker.pipeline.separator
        with torch.inference_mode():
            sources, probs = separate_stream(sep, audio, chunk_samples, worker.device)
        rec["separation"] = score_separation_item(sources, probs, ex, ex["length"])
    return rec


def word_audio_latency(events, ref_words: dict[str, list | None]) -> dict[str, dict[str, list[float]]]:
    """Per track and reference word ``(word, start_s, end_s)``, how much *audio* had been
    fed when a caption covering the word was emitted, minus the word's end: ``first``
    (the first partial or final of the track that decoded past the word's end with a word
    overlapping its span) and ``final`` (the first such final). The wall-clock latency of
    the live path adds the compute of that chunk (and, for finals, the decoder's time) and
    transport; ``bench/latency.py`` measures that in real time. Words never covered are
    left out (``missed`` counts them)."""
    from jrsv_stream.stream.events import Final, Partial

    caps = [e for e in events if isinstance(e, (Partial, Final)) and e.text]
    out: dict[str, dict[str, list[float]]] = {}
    for track, words in ref_words.items():
        if not words:
            continue
        first, final, missed = [], [], 0
        evs = [e for e in caps if e.track == track]
        for w in words:
            s, e = float(w[1]), float(w[2])
            hits = [ev for ev in evs if ev.audio_time_s >= e - 1e-6 and any(x[1] < e + 1e-6 and x[2] > s - 1e-6 for x in ev.words)]
            fin = [ev for ev in hits if isinstance(ev, Final)]
            if hits:
                first.append(round(hits[0].audio_time_s - e, 3))
            if fin:
                final.append(round(fin[0].audio_time_s - e, 3))
            else:
                missed += 1
        out[track] = {"first": first, "final": final, "missed": [missed]}
    return out


def summarize_word_latency(records: list[dict]) -> dict:
    """p50/p95 (s) of :func:`word_audio_latency` per track over all records."""
    out = {}
    for track in TRACK_SOURCE:
        agg: dict[str, list[float]] = {"first": [], "final": [], "missed": []}
        for r in records:
            for k, v in (r.get("word_latency_s") or {}).get(track, {}).items():
                agg[k] += v
        if not agg["first"] and not agg["missed"]:
            continue
        out[track] = {k: ({"p50": round(float(np.percentile(v, 50)), 3), "p95": round(float(np.percentile(v, 95)), 3),
                           "n": len(v)} if v else None) for k, v in agg.items() if k != "missed"}
        out[track]["missed"] = int(sum(agg["missed"]))
    return out


def evaluate_system(manifest: str | Path, cfg: SystemEvalConfig = SystemEvalConfig(), progress: bool = False,
                    pipeline=None) -> dict:
    """Run a configuration over a manifest through the streaming path; the result dict
    (the JSON of ``jrsv-stream eval``, see the module docstring).

    ``pipeline``: an already built pipeline (with a ``separator``) to run instead of
    building ``cfg``'s; ``cfg`` still gives the chunking, streams and labels.

    Raises:
        ManifestError (ValueError): missing or malformed manifest.
        FileNotFoundError / ValueError / RuntimeError: missing or unreadable models.
    """
    import torch

    from jrsv_stream.data.dynamic import ManifestDataset
    from jrsv_stream.data.manifest import read_manifest
    from jrsv_stream.stream.worker import BatchWorker
    from jrsv_stream.train.common import pick_device

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    manifest = Path(manifest)
    read_manifest(manifest)  # a missing or malformed manifest is reported before models load
    if pipeline is None:
        pipeline, _ = build_pipeline(cfg)
    real = cfg.real_separator
    dataset = ManifestDataset(manifest, pipeline.separator.hop_samples, max_items=cfg.max_items)
    if not len(dataset):
        raise ValueError(f"{manifest} has no items")
    # max_pending_finals: room for every stream's finals and incremental-finals hypotheses
    # (sessions wait for them here, SessionConfig.commit_wait), so none is refused and the
    # captions do not depend on how the streams interleave
    worker = BatchWorker(pipeline, max_batch=cfg.streams, max_wait_ms=cfg.max_wait_ms, max_streams=cfg.streams,
                         device=pick_device(cfg.device or "auto"), max_pending_finals=64 * cfg.streams)
    from jrsv_stream.stream.session import SessionConfig, session_commit_every_s

    session_config = SessionConfig(track_margin=cfg.track_margin, **dict(cfg.session))
    if cfg.endpoint:  # the pipeline's rules with these fields replaced
        from jrsv_stream.stream.session import session_endpoint

        session_config = dataclasses.replace(session_config, endpoint=dataclasses.replace(
            session_endpoint(session_config, pipeline), **dict(cfg.endpoint)))
    records: list[dict | None] = [None] * len(dataset)
    failed: list[dict] = []
    lock = threading.Lock()
    next_i = iter(range(len(dataset)))
    bar = _progress(len(dataset), progress)

    def run() -> None:
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            try:
                records[i] = _run_item(worker, dataset, i, cfg.chunk_samples, real and cfg.score_separation, session_config)
            except Exception as e:  # one bad item never stops the others
                with lock:
                    failed.append({"id": dataset.items[i].id, "error": f"{type(e).__name__}: {e}"})
            bar(1)

    t0 = time.perf_counter()
    worker.start()
    try:
        n_threads = min(cfg.streams, len(dataset))
        threads = [threading.Thread(target=run, name=f"eval-stream-{k}", daemon=True) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        worker.stop()
        bar(None)
    seconds = time.perf_counter() - t0
    done = [r for r in records if r is not None]
    audio_s = sum(r["duration_s"] for r in done)
    separation = (summarize_separation_by_scenario([r["separation"] for r in done])
                  if real and cfg.score_separation and done else None)
    stats = worker.stats()
    return _json_safe({
        "label": cfg.label,
        "config": {"pipeline": None if cfg.separator and cfg.asr else cfg.pipeline, "separator": cfg.separator_path, "asr": cfg.asr_path,
                   "chunk_ms": cfg.effective_chunk_ms, "track_margin": cfg.track_margin, "endpoint": dict(cfg.endpoint), "session": dict(cfg.session), "commit_every_s": session_commit_every_s(session_config, pipeline), "speech_final_mix": getattr(pipeline, "speech_final_mix", None), "speech_final_consensus": getattr(pipeline, "speech_final_consensus", None), "algorithmic_latency_ms": round(pipeline.algorithmic_latency_ms, 3),
                   "streams": cfg.streams, "device": str(worker.device), "max_items": cfg.max_items,
                   "lm": None if pipeline.lm is None else {"order": pipeline.lm.order, "weight": pipeline.lm.weight,
                                                           "token_bonus": pipeline.lm.token_bonus}},
        "manifest": str(manifest),
        "n_items": len(done),
        "failed_items": sorted(failed, key=lambda f: f["id"]),
        "tracks": score_tracks(done),
        "word_audio_latency_s": summarize_word_latency(done),
        "separation": separation,
        "seconds": round(seconds, 2),
        "audio_s": round(audio_s, 2),
        "rtf": round(seconds / audio_s, 4) if audio_s else None,
        "worker": {"batches": stats["batches"], "chunks": stats["chunks"], "mean_batch": round(stats["mean_batch"], 2)},
        "items": [{"id": r["id"], "scenario": r["scenario"],
                   **{t: {"ref": r[t]["ref"], "hyp": r[t]["hyp"], "last_partial": r[t]["last_partial"]} for t in TRACK_SOURCE},
                   **({"si_sdri": r["separation"]["si_sdri"]} if "separation" in r else {})} for r in done],
    })


def _progress(total: int, show: bool):
    """A callable advancing a rich progress bar by n (None closes it); a no-op if hidden."""
    if not show:
        return lambda n: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    p = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                 transient=True)
    p.start()
    task = p.add_task("eval", total=total)
    lock = threading.Lock()

    def advance(n):
        with lock:
            if n is None:
                p.stop()
            else:
                p.advance(task, n)
    return advance


def _json_safe(x):
    """NaN / Inf -> None (strict JSON), numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# --- command line -------------------------------------------------------------------------------
def print_table(res: dict) -> None:
    """A compact rich table of a result dict."""
    from rich.console import Console
    from rich.table import Table

    def f(v, nd=1):
        return "-" if v is None else f"{v:.{nd}f}"

    con = Console()
    c = res["config"]
    t = Table(title=f"{res['label'] or 'eval'}: {res['n_items']} items, {c['chunk_ms']:.0f} ms chunks, "
                    f"latency {c['algorithmic_latency_ms']:.0f} ms, RTF {f(res['rtf'], 3)}")
    for col in ("track", "WER %", "CER %", "WER @-5/0/+5 dB", "WER sp/sing/both", "halluc."):
        t.add_column(col)
    for track, m in res["tracks"].items():
        t.add_row(track, f(m["wer"]), f(m["cer"]),
                  "/".join(f(m["by_snr"].get(b, {}).get("wer")) for b in SNR_BUCKETS),
                  "/".join(f(m["by_scenario"].get(s, {}).get("wer")) for s in ("speech", "singing", "both")),
                  str(m["hallucinated_words"]))
    con.print(t)
    sep = res["separation"]
    if sep:
        t = Table(title="separation: SI-SDRi dB (streaming step)")
        for col in ("source", "SI-SDRi", "@-5/0/+5 dB", "sp/sing/both"):
            t.add_column(col)
        for s, v in sep["si_sdri"].items():
            t.add_row(s, f(v, 2), "/".join(f(sep["si_sdri_by_snr"][s].get(b)) for b in SNR_BUCKETS),
                      "/".join(f(sep["by_scenario"].get(k, {}).get("si_sdri", {}).get(s)) for k in ("speech", "singing", "both")))
        con.print(t)
    if res["failed_items"]:
        con.print(f"[red]{len(res['failed_items'])} failed item(s)[/red], first: {res['failed_items'][0]}")


def _cmd(a: argparse.Namespace) -> int:
    from jrsv_stream.nn.pipeline import set_final_whisper
    from jrsv_stream.nn.loader import default_pipeline_spec

    set_final_whisper(a.final_whisper)
    cfg = SystemEvalConfig(pipeline=a.pipeline or default_pipeline_spec(), separator=a.separator, asr=a.asr, chunk_ms=a.chunk_ms, max_items=a.max_items,
                           streams=a.streams, label=a.label, device=a.device, threads=a.threads, lm=not a.no_lm,
                           lm_weight=a.lm_weight, lm_bonus=a.lm_bonus)
    res = evaluate_system(a.manifest, cfg, progress=not a.quiet)
    if a.real_voices:
        # beside the main manifest, through the same configuration: every real recording
        # with a transcript (jrsv-stream data real-voices), clean and over test music
        res["real_voices"] = {}
        for name in ("test_clean", "test_mixed"):
            m = Path(a.real_voices) / f"{name}.jsonl"
            if not m.is_file():
                raise FileNotFoundError(f"{m} not found: build it with jrsv-stream data real-voices --out {a.real_voices}")
            r = evaluate_system(m, dataclasses.replace(cfg, score_separation=False), progress=not a.quiet)
            res["real_voices"][name] = r
    if a.json:
        out = Path(a.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
    print_table(res)
    for name, r in (res.get("real_voices") or {}).items():
        print(f"real voices, {name} ({r['n_items']} items):")
        print_table(r)
    return 0


def add_cli(subparsers) -> None:
    """Register ``eval`` on the top-level subparsers (cli.py)."""
    s = subparsers.add_parser("eval", help="WER/CER per track and SI-SDRi per source through the streaming path")
    s.add_argument("manifest", help="manifest JSON Lines (e.g. data/corpus/test.jsonl)")
    s.add_argument("--json", help="write the results here")
    s.add_argument("--pipeline", default=None,
                   help="pipeline folder: pipeline.yaml, or separator/ + asr/ (default: the shipped default pipeline)")
    s.add_argument("--separator", default=None, help="separator folder, or 'none' (mixture to both tracks); "
                                                     "default: PIPELINE/separator")
    s.add_argument("--asr", default=None, help="recognizer folder (default: PIPELINE/asr)")
    s.add_argument("--chunk-ms", type=float, default=None,
                   help="audio per streaming step (default: the pipeline.yaml's chunk_ms, else 320)")
    s.add_argument("--max-items", type=int, default=None, help="first N items only")
    s.add_argument("--real-voices", default=None, metavar="DIR",
                   help="also evaluate DIR/test_clean.jsonl and DIR/test_mixed.jsonl (jrsv-stream data real-voices) "
                        "with the same configuration; results under 'real_voices' in the JSON")
    s.add_argument("--streams", type=int, default=8, help="items run concurrently through one batching worker (default 8)")
    s.add_argument("--label", default=None, help="name stored in the JSON")
    s.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: CUDA when present")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--no-lm", action="store_true", help="decode without the recognizer's LM (asr/lm.npz)")
    s.add_argument("--lm-weight", type=float, default=None, help="LM fusion weight (default: the one in asr/lm.npz)")
    s.add_argument("--lm-bonus", type=float, default=None, help="per-token bonus with the LM (default: the one in asr/lm.npz)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--final-whisper", default=None, choices=("tiny.en", "base", "small"),
                   help="Whisper model of a Whisper-CTC pipeline's finals (default: the recognizer's own)")
    s.set_defaults(fn=_cmd)
