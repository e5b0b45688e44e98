"""Caption controls on the shipped default pipeline (separator -> Whisper-CTC) over a real
websocket: names the recognizer misspells without biasing are captioned right once the
publisher names them as hotwords in ``start``; a replace list and a mask rewrite the same
real captions; the words carry confidence and each final its utterance_end."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.prereq import require_tools
import torch
from websockets.asyncio.client import connect

from jrsv_stream.audio.io import load_audio
from jrsv_stream.serve.protocol import decode_server_message, encode_pcm
from jrsv_stream.serve.server import CaptionServer, ServerConfig
from jrsv_stream.stream.events import Final, UtteranceEnd

REPO = Path(__file__).resolve().parents[1]
SENTENCE = "Hello chat. Thanks for the follow, Kaylee Vonderhaar. Next we play Quixotica."


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    require_tools("flite")
    wav = tmp_path_factory.mktemp("tts") / "s.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", SENTENCE, "-o", str(wav)], check=True)
    return load_audio(wav)


async def _caption(srv, sid: str, audio, start: dict) -> list:
    async with connect(f"{srv.url}/v1/subscribe/{sid}") as sub, connect(f"{srv.url}/v1/publish/{sid}") as pub:
        await sub.recv()  # hello
        await pub.send(json.dumps({"v": 1, "type": "start", **start}))
        assert json.loads(await asyncio.wait_for(pub.recv(), 30))["type"] == "ready"
        for a in range(0, len(audio), 3200):
            await pub.send(encode_pcm(audio[a:a + 3200]))
        await pub.send(json.dumps({"v": 1, "type": "end"}))
        out = []
        while True:
            m = decode_server_message(await asyncio.wait_for(sub.recv(), 120))
            if isinstance(m, dict) and m.get("type") == "stream" and m.get("state") == "ended":
                return out
            out.append(m)


def test_hotwords_and_replace_change_the_real_captions(speech):
    from jrsv_stream.nn.pipeline import load_streaming_pipeline

    torch.set_num_threads(2)
    p = load_streaming_pipeline(REPO / "models" / "default")

    async def main():
        srv = await CaptionServer(p, ServerConfig(port=0)).start()
        try:
            plain = await _caption(srv, "plain", speech, {"tracks": ["speech"]})
            biased = await _caption(srv, "biased", speech, {
                "tracks": ["speech"], "hotwords": ["Kaylee Vonderhaar", {"phrase": "Quixotica", "boost": 4}],
                "replace": [{"from": "follow", "to": "sub"}], "mask": ["play"]})
        finally:
            await srv.stop()
        return plain, biased

    plain, biased = asyncio.run(asyncio.wait_for(main(), 300))
    text = lambda ev: " ".join(e.text for e in ev if isinstance(e, Final))
    t0, t1 = text(plain), text(biased)
    assert "Vonderhaar" not in t0, t0  # missed without biasing (the beam finals read "Quixotica" unaided)
    assert "Kaylee Vonderhaar" in t1 and "Quixotica" in t1, t1  # captioned with it
    assert "follow" in t0 and "follow" not in t1 and any(w.strip(".,!?") == "sub" for w in t1.split()), t1
    assert "play" in t0.lower() and "play" not in t1.lower() and "p***" in t1.lower(), t1
    finals = [e for e in biased if isinstance(e, Final) and e.text]
    assert all(len(w) == 4 and 0.0 <= w[3] <= 1.0 for f in finals for w in f.words)
    assert all(f.rescored for f in finals)  # Whisper's text: the confidences are its decoder's
    ends = {e.segment_id: e for e in biased if isinstance(e, UtteranceEnd)}
    assert set(ends) >= {f.segment_id for f in finals}
    assert all(ends[f.segment_id].seq > f.seq and ends[f.segment_id].reason in ("silence", "activity", "max_length",
                                                                                  "end_of_stream") for f in finals)
