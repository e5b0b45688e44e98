"""``jrsv-stream`` command line (argparse lives here only)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jrsv_stream.runner import run_handler


def _cmd_data_synth(a: argparse.Namespace) -> int:
    from jrsv_stream.data.synth import SynthConfig, build_corpus, clean_partial_files

    if Path(a.out).exists():
        clean_partial_files(a.out)
    stats = build_corpus(a.out, SynthConfig(hours=a.hours, seed=a.seed, ext=a.ext), workers=a.workers, progress=not a.quiet,
                        splits=tuple(a.splits))
    _print_stats(stats, a.out)
    return 0


def _cmd_data_vocals(a: argparse.Namespace) -> int:
    from jrsv_stream.data.synth import build_vocal_sources, clean_partial_files

    if Path(a.out).exists():
        clean_partial_files(a.out)
    res = build_vocal_sources(a.out, {"speech": a.speech_hours, "singing": a.singing_hours}, seed=a.seed, ext=a.ext,
                              workers=a.workers, progress=not a.quiet)
    print(f"vocals {a.out}: speech {res['hours']['speech']:.2f} h, singing {res['hours']['singing']:.2f} h "
          f"(failed sources: {res['failed']}) in {res['seconds']:.0f} s")
    return 0


def _cmd_data_stats(a: argparse.Namespace) -> int:
    from jrsv_stream.data.stats import corpus_stats

    stats = corpus_stats(a.dir)
    if a.json:
        Path(a.json).write_text(json.dumps(stats, indent=1))
    _print_stats(stats, a.dir)
    return 0


def _cmd_data_dtssv(a: argparse.Namespace) -> int:
    from jrsv_stream.data.real_corpora import build_dtssv

    path = build_dtssv(a.aishell, a.opensinger, a.musdb, a.out, split=a.split, n_items=a.items, seed=a.seed)
    print(f"wrote {path}")
    return 0


def _cmd_data_librivox_music(a: argparse.Namespace) -> int:
    from jrsv_stream.data.real_corpora import build_real_speech_over_music

    path = build_real_speech_over_music(a.corpus, a.out, snrs_db=tuple(a.snr), seed=a.seed)
    print(f"wrote {path}")
    return 0


def _cmd_data_real_voices(a: argparse.Namespace) -> int:
    from jrsv_stream.data.real_voices import SOURCES, build_real_voices, format_summary, real_voice_items

    if a.list:
        missing: dict[str, str] = {}
        voices = real_voice_items(a.sources, min_words=a.min_words, missing=missing)
        for name in a.sources or SOURCES:
            n = sum(v.source == name for v in voices)
            print(f"{name:10s} {n:4d} utterances  {SOURCES[name].package} ({SOURCES[name].licence})"
                  + (f"  [skipped: {missing[name]}]" if name in missing else ""))
        return 0
    if a.out is None:
        print("jrsv-stream data real-voices: error: --out is required (unless --list)", file=sys.stderr)
        return 2
    summary = build_real_voices(a.corpus, a.out, snrs_db=tuple(a.snr), seed=a.seed, sources=a.sources,
                                min_words=a.min_words)
    print(format_summary(summary, a.out))
    return 0


def _cmd_data_real_speech(a: argparse.Namespace) -> int:
    from jrsv_stream.data.real_speech import build_real_singing, build_real_speech

    if a.sung:
        doc = build_real_singing(a.sung, a.out)
        print(f"{doc['clips']} clips sung, {doc['seconds'] / 3600:.2f} h -> {a.out}")
        return 0
    doc = build_real_speech(a.out, a.sources)
    for name, s in doc["sources"].items():
        print(f"{name:12s} {s['clips']:5d} clips {s['seconds']:8.1f} s {s['speakers']:3d} speakers  ({s['package']})")
    for pkg in doc["missing_packages"]:
        print(f"skipped (not installed): apt-get install {pkg}")
    print(f"{doc['clips']} clips, {doc['seconds'] / 3600:.2f} h -> {a.out}")
    return 0


def _cmd_data_music_pool(a: argparse.Namespace) -> int:
    from jrsv_stream.data.music_pool import build_music_pool

    doc = build_music_pool(a.out, pieces=a.pieces, seed=a.seed, workers=a.workers)
    for name, n in sorted(doc["renderers"].items()):
        print(f"{name:45s} {n:5d} pieces")
    print(f"{doc['pieces']} pieces, {doc['seconds'] / 60:.1f} min of music, {len(doc['programs'])} GM programs "
          f"-> {a.out} in {doc['build_seconds']:.0f} s")
    return 0


def _cmd_data_ood(a: argparse.Namespace) -> int:
    from jrsv_stream.data.ood import build_ood, format_summary

    summary = build_ood(a.out, seed=a.seed, n_items=a.items, sources=a.sources,
                        stempeg=False if a.no_stempeg else None, progress=not a.quiet)
    print(format_summary(summary, a.out))
    return 0


def _print_stats(stats: dict, root) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"corpus {root}: {stats['total_hours']:.3f} h")
    for col in ("split", "items", "hours", "speech / singing / both (h)", "speech voices", "singers", "SNR buckets -5/0/+5 (speech | singing)"):
        t.add_column(col)
    for split, s in stats["splits"].items():
        h = s["hours_per_scenario"]
        b = s["snr_buckets"]
        t.add_row(split, str(s["items"]), f"{s['hours']:.3f}",
                  " / ".join(f"{h.get(k, 0):.3f}" for k in ("speech", "singing", "both")),
                  str(s["voices"]["speech"]), str(s["voices"]["singing"]),
                  " | ".join("/".join(str(b[v][k]) for k in ("-5", "0", "5")) for v in ("speech", "singing")))
    con.print(t)
    if "build" in stats:
        bld = stats["build"]
        con.print(f"built in {bld['seconds']:.0f} s with {bld['workers']} workers "
                  f"({bld['mixture_hours_per_wall_hour']} h of mixtures per wall-clock hour); "
                  f"disk {stats.get('disk_mb_per_hour', 0):.0f} MB per hour of mixtures (sources + mixtures)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jrsv-stream", description="Streaming speech + lyrics captioning (JRSV).")
    sub = p.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="build and inspect corpora").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("synth", help="build the offline DTSSV-style corpus (resumable)")
    s.add_argument("--out", required=True, help="output folder (resumes if it holds a partial build)")
    s.add_argument("--hours", type=float, required=True, help="hours of mixtures in all splits")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    s.add_argument("--ext", choices=("flac", "wav"), default="flac")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--splits", nargs="+", choices=("train", "valid", "test"), default=["train", "valid", "test"],
                   help="build only these splits (the same files as the whole build's; e.g. test for evaluation)")
    s.set_defaults(fn=_cmd_data_synth)

    s = data.add_parser("vocals", help="extra clean train-split speech and singing for the recognizer (resumable)")
    s.add_argument("--out", required=True, help="output folder; list it under data.extra_corpora of an ASR config")
    s.add_argument("--speech-hours", type=float, required=True)
    s.add_argument("--singing-hours", type=float, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    s.add_argument("--ext", choices=("flac", "wav"), default="flac")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=_cmd_data_vocals)

    s = data.add_parser("stats", help="statistics of a built corpus")
    s.add_argument("dir")
    s.add_argument("--json", help="also write the statistics here")
    s.set_defaults(fn=_cmd_data_stats)

    s = data.add_parser("dtssv", help="mix AISHELL-1 + OpenSinger + MUSDB18 into a DTSSV-style manifest")
    s.add_argument("--aishell", required=True)
    s.add_argument("--opensinger", required=True)
    s.add_argument("--musdb", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--split", choices=("train", "valid", "test"), required=True)
    s.add_argument("--items", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_cmd_data_dtssv)

    s = data.add_parser("librivox-music", help="real read speech (pocketsphinx-testdata LibriVox) over corpus test music")
    s.add_argument("--corpus", default="data/corpus", help="built corpus whose test-split music is used")
    s.add_argument("--out", required=True, help="output folder (test.jsonl + mixtures/)")
    s.add_argument("--snr", type=float, nargs="+", default=[-5.0, 0.0, 5.0], help="speech-to-music region SNRs (dB)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_cmd_data_librivox_music)

    s = data.add_parser("real-voices", help="every real recording with a transcript that the installed packages ship "
                                            "(LibriVox, cards, Asterisk prompts, ...), clean and over corpus test music")
    s.add_argument("--corpus", default="data/corpus", help="built corpus whose test-split music is used")
    s.add_argument("--out", help="output folder (test.jsonl, test_clean.jsonl, test_mixed.jsonl, summary.json, "
                                 "mixtures/); required unless --list")
    s.add_argument("--snr", type=float, nargs="*", default=[-5.0, 0.0, 5.0],
                   help="speech-to-music region SNRs (dB), one mixed item per utterance each (none: clean only)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sources", nargs="+", default=None,
                   help="only these sources (librivox cards goforward tidigits alsa asterisk; default: all installed)")
    s.add_argument("--min-words", type=int, default=2, help="leave out utterances with fewer words (default 2)")
    s.add_argument("--list", action="store_true", help="list the installed sources and their utterances; build nothing")
    s.set_defaults(fn=_cmd_data_real_voices)

    s = data.add_parser("real-speech", help="real human talk without transcripts for separator training (Asterisk "
                                            "fr/it/ru prompts, KLettres, KTuberling, codec2 samples; no test-set voice)")
    s.add_argument("--out", required=True, help="output folder (pool.npy, clips.jsonl, summary.json)")
    s.add_argument("--sources", nargs="+", default=None,
                   help="only these (asterisk-fr asterisk-it asterisk-ru klettres ktuberling codec2; default: all)")
    s.add_argument("--sung", metavar="POOL", default=None,
                   help="instead: sing the talk of the pool at POOL with WORLD onto random melodies (~3 min)")
    s.set_defaults(fn=_cmd_data_real_speech)

    s = data.add_parser("music-pool", help="training music from other renderers than the corpus's FluidR3 (TiMidity + "
                                           "freepats, AVL drum kits; not the OOD set's soundfonts), for p_music_pool")
    s.add_argument("--out", required=True, help="output folder (pieces/*.flac, manifest.jsonl, summary.json)")
    s.add_argument("--pieces", type=int, default=300, help="pieces of 10-20 s (default 300, ~75 min)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    s.set_defaults(fn=_cmd_data_music_pool)

    s = data.add_parser("ood", help="held-out out-of-domain separation test set: real voices spoken and WORLD-sung "
                                    "over music from other soundfonts (TimGM6mb, csound GM bank, OPL-3 FM)")
    s.add_argument("--out", required=True, help="output folder (test.jsonl, test_transcribed.jsonl, summary.json, mixtures/)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--items", type=int, default=180, help="items from the real voices (default 180: 60 per scenario, "
                                                          "20 per scenario and SNR bucket)")
    s.add_argument("--sources", nargs="+", default=None,
                   help="only these real-voice sources (librivox cards goforward tidigits alsa asterisk; default: all installed)")
    s.add_argument("--no-stempeg", action="store_true", help="leave out the stempeg MUSDB18 excerpt even if installed")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(fn=_cmd_data_ood)

    from jrsv_stream.eval.system_eval import add_cli as add_eval_cli
    from jrsv_stream.separate import add_cli as add_separate_cli
    from jrsv_stream.serve.cli import add_cli as add_serve_cli
    from jrsv_stream.train.asr import add_cli as add_train_asr_cli
    from jrsv_stream.train.joint import add_cli as add_train_joint_cli
    from jrsv_stream.train.lm import add_cli as add_train_lm_cli
    from jrsv_stream.train.separator import add_cli as add_train_separator_cli
    from jrsv_stream.transcribe import add_cli as add_transcribe_cli

    train = sub.add_parser("train", help="train the shipped models").add_subparsers(dest="train_cmd", required=True)
    add_train_separator_cli(train)
    add_train_asr_cli(train)
    add_train_joint_cli(train)
    add_train_lm_cli(train)
    add_separate_cli(sub)
    add_transcribe_cli(sub)
    add_serve_cli(sub)  # serve, capture, demo
    add_eval_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_handler(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
