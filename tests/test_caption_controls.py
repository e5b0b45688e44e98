"""Caption controls (hotwords, replace, mask, tracks), word confidence, utterance_end and TLS:
the validation rules, the word filters, and every field end to end over real websockets on
127.0.0.1 (a scripted pipeline makes the captions known in advance; TLS with a certificate
made here with openssl)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.prereq import require_tools
import torch
from websockets.asyncio.client import connect

from jrsv_stream.decode.context import ContextGraph
from jrsv_stream.serve.protocol import ErrorCode, ProtocolError, decode_server_message, encode_pcm, parse_client_message
from jrsv_stream.serve.server import CaptionServer, ServerConfig
from jrsv_stream.stream.captions import (CaptionOptionError, CaptionOptions, Hotword, load_caption_config, merge_options,
                                         parse_caption_options)
from jrsv_stream.stream.events import EventDecodeError, Final, Partial, UtteranceEnd, decode_event, encode_event
from jrsv_stream.stream.session import StreamSession
from jrsv_stream.stream.worker import BatchWorker
from tests.test_stream_session import LYRICS, N, ON, SPEECH, ScriptedPipeline

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
AUDIO = np.zeros(N * 640, dtype=np.float32)  # the scripted pipeline ignores the samples: "hi yo", "ok"; lyrics "la la"


def _pipeline():
    return ScriptedPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": ON})


def run(coro, timeout_s: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


# ---------------------------------------------------------------------- validation and filters
@pytest.mark.parametrize("start, field", [
    ({"hotwords": "Kaylee"}, "hotwords"),
    ({"hotwords": [""]}, "hotwords[0]"),
    ({"hotwords": ["ok", {"phrase": "x" * 65}]}, "hotwords[1].phrase"),
    ({"hotwords": [{"phrase": "Kaylee", "boost": 0}]}, "hotwords[0].boost"),
    ({"hotwords": [{"phrase": "Kaylee", "boost": "high"}]}, "hotwords[0].boost"),
    ({"hotwords": [{"phrase": "Kaylee", "weight": 2}]}, "hotwords[0]"),
    ({"hotwords": ["a b c d e f g"]}, "hotwords[0]"),
    ({"hotwords": ["w"] * 101}, "hotwords"),
    ({"replace": [{"from": "gonna"}]}, "replace[0]"),
    ({"replace": [["gonna", "going to"]]}, "replace[0]"),
    ({"replace": [{"from": "", "to": "x"}]}, "replace[0].from"),
    ({"replace": [{"from": "a", "to": 3}]}, "replace[0].to"),
    ({"mask": ["two words"]}, "mask[0]"),
    ({"mask": ["!!!"]}, "mask[0]"),
    ({"tracks": ["music"]}, "tracks[0]"),
    ({"tracks": []}, "tracks"),
    ({"tracks": ["speech", "speech"]}, "tracks"),
    ({"tracks": "speech"}, "tracks"),
])
def test_bad_start_options_are_refused_naming_the_field(start, field):
    with pytest.raises(ProtocolError) as e:
        parse_client_message(json.dumps({"v": 1, "type": "start", **start}))
    assert e.value.code == ErrorCode.BAD_OPTION
    assert f" {field}:" in str(e.value), str(e.value)


def test_v1_start_without_options_is_still_valid():
    m = parse_client_message('{"v": 1, "type": "start", "sample_rate": 16000, "dtype": "s16le", "channels": 1}')
    assert m.options == CaptionOptions() and m.options.empty


def test_replace_and_mask_are_whole_word_case_insensitive_and_keep_punctuation():
    o = parse_caption_options({"replace": [{"from": "gonna", "to": "going to"}, {"from": "new york", "to": "NYC"},
                                           {"from": "um", "to": ""}],
                               "mask": ["damn"]})
    assert o.filter_text("Gonna see, um, New York. Damn! gonnagain damned") == "going to see, NYC. D***! gonnagain damned"
    words = (("Gonna", 1.0, 1.4, 0.9), ("New", 1.5, 1.7, 0.8), ("York.", 1.7, 2.1, 0.4), ("damn", 2.2, 2.5, 1.0))
    assert o.filter_words(words) == (("going", 1.0, 1.2, 0.9), ("to", 1.2, 1.4, 0.9), ("NYC.", 1.5, 2.1, 0.4),
                                     ("d***", 2.2, 2.5, 1.0))


def test_merge_and_config_file(tmp_path):
    server = parse_caption_options({"hotwords": ["Kaylee"], "mask": ["damn"], "replace": [{"from": "a", "to": "b"}]})
    stream = parse_caption_options({"hotwords": [{"phrase": "kaylee", "boost": 5}], "replace": [{"from": "A", "to": "c"}],
                                    "tracks": ["lyrics"]})
    m = merge_options(server, stream)
    assert m.hotwords == (Hotword("kaylee", 5.0),) and m.mask == ("damn",) and m.replace == (("A", "c"),)
    assert m.tracks == ("lyrics",) and merge_options(server, CaptionOptions()).tracks is None
    f = tmp_path / "captions.yaml"
    f.write_text("hotwords: [Quixotica]\nmask: [damn]\ntracks: [speech]\n")
    assert load_caption_config(f) == CaptionOptions((Hotword("Quixotica"),), (), ("damn",), ("speech",))
    f.write_text("hotword: [Quixotica]\n")
    with pytest.raises(CaptionOptionError, match="unknown key"):
        load_caption_config(f)
    f.write_text("mask: [two words]\n")
    with pytest.raises(CaptionOptionError) as e:
        load_caption_config(f)
    assert e.value.field == "captions.yaml.mask[0]"


def test_context_graph_gives_each_hotword_its_own_boost():
    g = ContextGraph([(1, 2, 3), (1, 2, 4), (7,)], 3.0, scores=[1.0, 2.0, 5.0])
    assert g.score_sequence([7]) == 5.0
    assert g.score_sequence([1, 2, 4]) == pytest.approx(6.0)  # 3 tokens x 2.0 (the shared prefix takes the larger)
    assert g.score_sequence([1, 2, 3]) == pytest.approx(2.0 + 2.0 + 1.0)
    assert g.score_sequence([1, 2]) == 0.0  # unfinished: bonus given back


def test_server_flags_and_config_file_make_the_server_wide_options(tmp_path):
    from jrsv_stream.serve.cli import _add_server_args, caption_options_from_args

    f = tmp_path / "c.json"
    f.write_text(json.dumps({"mask": ["damn"], "hotwords": ["Quixotica"]}))
    ap = argparse.ArgumentParser()
    _add_server_args(ap)
    a = ap.parse_args(["--pipeline", "tiny", "--caption-config", str(f), "--hotword", "Kaylee Vonderhaar:4", "--hotword", "a:b",
                       "--replace", "gonna=going to", "--mask", "heck", "--tracks", "speech"])
    o = caption_options_from_args(a)
    assert o.hotwords == (Hotword("Quixotica"), Hotword("Kaylee Vonderhaar", 4.0), Hotword("a:b"))
    assert o.replace == (("gonna", "going to"),) and o.mask == ("damn", "heck") and o.tracks == ("speech",)
    for bad, field in ((["--tracks", "music"], "flags.tracks[0]"), (["--hotword", "x:50"], "flags.hotwords[0].boost"),
                       (["--replace", "nothing"], "--replace")):
        with pytest.raises(CaptionOptionError) as e:
            caption_options_from_args(ap.parse_args(["--pipeline", "tiny", *bad]))
        assert e.value.field == field


def test_words_carry_confidence_and_utterance_end_in_the_codec():
    f = Final("s", "speech", "speech-0", 3, "hi yo", (("hi", 0.08, 0.16, 0.997), ("yo", 0.2, 0.32, 0.6)), 0.08, 0.32, 1.0, 5.0)
    d = json.loads(encode_event(f))
    assert d["words"] == [["hi", 0.08, 0.16, 0.997], ["yo", 0.2, 0.32, 0.6]]
    assert decode_event(encode_event(f), strict=True) == f
    u = UtteranceEnd("s", "speech", "speech-0", 4, "silence", 0.32, 1.2, 5.0)
    assert decode_event(encode_event(u), strict=True) == u
    old = dict(d, words=[["hi", 0.08, 0.16]])  # a server without confidence: still readable
    assert decode_event(json.dumps(old)).words == (("hi", 0.08, 0.16),)
    with pytest.raises(EventDecodeError, match="confidence"):
        decode_event(json.dumps(dict(d, words=[["hi", 0.08, 0.16, 1.5]])))


def test_viewer_dims_words_under_the_confidence_threshold():
    from clients.viewer import LOW_CONF_STYLE, caption_text

    t = caption_text("hi yo ok", (("hi", 0, 0, 0.9), ("yo", 0, 0, 0.3), ("ok", 0, 0, 0.7)), 0.5)
    assert t.plain == "hi yo ok"
    dim = [t.plain[s.start:s.end] for s in t.spans if LOW_CONF_STYLE in str(s.style)]
    assert dim == ["yo"]
    assert not [s for s in caption_text("hi yo", (("hi", 0, 0), ("yo", 0, 0)), 0.5).spans]  # no confidences: plain


# ---------------------------------------------------------------------- the session
def test_hotword_flips_the_partials_and_final_towards_it_and_tracks_select_the_decoding():
    def finals(options):
        with BatchWorker(_pipeline(), max_wait_ms=1) as w:
            s = StreamSession(w, "t", options=options)
            ev = s.process(AUDIO) + s.finish()
            s.close()
        return ev

    plain = finals(CaptionOptions())
    assert [e.text for e in plain if isinstance(e, Final) and e.track == "speech"] == ["hi yo", "ok"]
    biased = finals(CaptionOptions(hotwords=(Hotword("uo", 2.0),), tracks=("speech",)))
    assert [e.text for e in biased if isinstance(e, Final)] == ["hi uo", "ok"]  # "u" had p = 0.4 at that frame
    assert "hi uo" in [e.text for e in biased if isinstance(e, Partial)]
    assert {e.track for e in biased if isinstance(e, (Partial, Final, UtteranceEnd))} == {"speech"}


# ---------------------------------------------------------------------- over real websockets
async def _stream(srv, sid: str, start: dict, ssl_ctx=None, bad_starts=()):
    """Subscribe, publish AUDIO with ``start`` (after ``bad_starts``, each answered with an
    error), return (errors, ready, events up to the stream's end)."""
    tls = {"ssl": ssl_ctx} if ssl_ctx else {}
    async with connect(f"{srv.url}/v1/subscribe/{sid}", **tls) as sub, connect(f"{srv.url}/v1/publish/{sid}", **tls) as pub:
        assert decode_server_message(await sub.recv())["type"] == "hello"
        errors = []
        for b in bad_starts:
            await pub.send(json.dumps({"v": 1, "type": "start", **b}))
            errors.append(decode_server_message(await asyncio.wait_for(pub.recv(), 10)))
        await pub.send(json.dumps({"v": 1, "type": "start", **start}))
        ready = json.loads(await asyncio.wait_for(pub.recv(), 10))
        for a in range(0, len(AUDIO), 640):
            await pub.send(encode_pcm(AUDIO[a:a + 640]))
        await pub.send(json.dumps({"v": 1, "type": "end"}))
        events = []
        while True:
            m = decode_server_message(await asyncio.wait_for(sub.recv(), 20))
            events.append(m)
            if isinstance(m, dict) and m.get("type") == "stream" and m.get("state") == "ended":
                return errors, ready, events


def test_start_options_over_a_websocket_filter_select_and_report_confidence_and_utterance_ends():
    async def main():
        srv = await CaptionServer(_pipeline(), ServerConfig(port=0, caption_options=CaptionOptions(mask=("ok",)))).start()
        try:
            bad = [{"hotwords": [{"phrase": "uo", "boost": -1}]}, {"tracks": ["music"]}, {"replace": [{"from": "hi"}]}]
            out = await _stream(srv, "a", {"replace": [{"from": "HI", "to": "hello"}], "mask": ["yo"], "tracks": ["speech"],
                                           "hotwords": [{"phrase": "zz", "boost": 1.5}]}, bad_starts=bad)
            plain = await _stream(srv, "b", {})  # another stream: only the server-wide mask
        finally:
            await srv.stop()
        return out, plain

    (errors, ready, ev), (_, ready_b, ev_b) = run(main())
    assert [(e.code, e.message.split(":")[0]) for e in errors] == [
        ("bad_option", "bad start option hotwords[0].boost"), ("bad_option", "bad start option tracks[0]"),
        ("bad_option", "bad start option replace[0]")]
    assert ready["type"] == "ready" and ready["tracks"] == ["speech"]  # the refused starts lost nothing
    assert ready["options"] == {"hotwords": [{"phrase": "zz", "boost": 1.5}], "replace": [{"from": "HI", "to": "hello"}],
                                "mask": ["ok", "yo"], "tracks": ["speech"]}
    live = [m for m in ev if isinstance(m, dict) and m.get("type") == "stream"][0]
    assert live["tracks"] == ["speech"]
    caps = [m for m in ev if isinstance(m, (Partial, Final, UtteranceEnd))]
    assert {m.track for m in caps} == {"speech"}  # lyrics not decoded for this stream
    finals = [m for m in caps if isinstance(m, Final)]
    assert [f.text for f in finals] == ["hello y*", "o*"]
    assert all(m.text.split()[0] == "hello" for m in caps if isinstance(m, Partial) and len(m.text) > 2)
    w = finals[0].words
    assert [x[0] for x in w] == ["hello", "y*"] and all(len(x) == 4 and 0.0 <= x[3] <= 1.0 for x in w)
    assert w[0][3] > 0.95 and abs(w[1][3] - 0.6) < 0.02  # "y" had p = 0.6 at its frame
    ends = [m for m in caps if isinstance(m, UtteranceEnd)]
    assert [(u.segment_id, u.reason) for u in ends] == [("speech-0", "silence"), ("speech-1", "silence")]
    for u in ends:  # each right after its final
        f = [x for x in finals if x.segment_id == u.segment_id][0]
        assert u.seq > f.seq and u.end_s == f.end_s
    assert ready_b["tracks"] == ["speech", "lyrics"]
    fb = [m.text for m in ev_b if isinstance(m, Final)]
    assert sorted(fb) == sorted(["hi yo", "o*", "la la"])
    assert {u.track for u in ev_b if isinstance(u, UtteranceEnd)} == {"speech", "lyrics"}


def _make_cert(tmp_path: Path) -> tuple[Path, Path]:
    require_tools("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_serves_wss_and_https_health_with_a_self_made_certificate(tmp_path):
    cert, key = _make_cert(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))

    async def main():
        srv = await CaptionServer(_pipeline(), ServerConfig(port=0, certfile=str(cert), keyfile=str(key))).start()
        try:
            assert srv.url.startswith("wss://127.0.0.1:") and srv.http_url.startswith("https://")
            health = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(f"{srv.http_url}/healthz", context=ctx,
                                                                                       timeout=10).read()))
            out = await _stream(srv, "tls", {"tracks": ["lyrics"]}, ctx)
            plain_refused = False
            try:
                async with connect(f"ws://127.0.0.1:{srv.port}/v1/subscribe/x", open_timeout=5) as ws:
                    await ws.recv()
            except Exception:
                plain_refused = True
            untrusted = False
            try:
                async with connect(f"{srv.url}/v1/subscribe/x", open_timeout=5):
                    pass
            except ssl.SSLCertVerificationError:
                untrusted = True
        finally:
            await srv.stop()
        return health, out, plain_refused, untrusted

    health, (_, ready, ev), plain_refused, untrusted = run(main())
    assert health["status"] == "ok"
    assert ready["tracks"] == ["lyrics"] and [m.text for m in ev if isinstance(m, Final)] == ["la la"]
    assert plain_refused and untrusted  # no cleartext on the TLS port; the certificate is checked


def test_bad_tls_files_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="keyfile needs certfile"):
        ServerConfig(keyfile="k.pem")

    async def main():
        await CaptionServer(_pipeline(), ServerConfig(port=0, certfile=str(tmp_path / "missing.pem"))).start()

    with pytest.raises(ValueError, match="cannot load TLS certificate"):
        run(main())


def test_serve_cli_with_certfile_and_caption_flags(tmp_path):
    cert, key = _make_cert(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "jrsv_stream.cli", "serve", "--pipeline", "tiny", "--port", "0",
                          "--certfile", str(cert), "--keyfile", str(key), "--hotword", "Kaylee Vonderhaar:4",
                          "--mask", "damn", "--tracks", "speech", "--duration", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        line = p.stdout.readline()
        assert "serving on wss://127.0.0.1:" in line and "health: https://" in line, line + p.stderr.read(2000)
        health_url = line.split("health: ")[1].strip()
        ctx = ssl.create_default_context(cafile=str(cert))
        assert json.loads(urllib.request.urlopen(health_url, context=ctx, timeout=10).read())["status"] == "ok"
    finally:
        p.terminate()
        p.wait(20)
    bad = subprocess.run([sys.executable, "-m", "jrsv_stream.cli", "serve", "--pipeline", "tiny", "--tracks", "music"],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert bad.returncode != 0 and "flags.tracks[0]" in bad.stderr
