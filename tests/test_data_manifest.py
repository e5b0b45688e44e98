import json

import pytest

from jrsv_stream.data.manifest import ManifestError, ManifestItem, read_manifest, write_manifest


def _item(i=0):
    return ManifestItem(
        id=f"x{i}", mixture=f"m/{i}/mixture.flac", speech=f"m/{i}/speech.flac", singing=None, music=f"m/{i}/music.flac",
        speech_text="hello world", singing_text=None, sample_rate=16000,
        speech_words=[("hello", 0.1, 0.5), ("world", 0.55, 1.0)], singing_words=None,
        extra={"scenario": "speech", "speech_snr_db": -3.2, "speech_voices": ["espeak:en-us+f3"]},
    )


def test_round_trip(tmp_path):
    items = [_item(0), _item(1)]
    write_manifest(tmp_path / "a.jsonl", items)
    back = read_manifest(tmp_path / "a.jsonl")
    assert back == items
    line = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])
    assert line["singing"] is None and line["speech_words"][1] == ["world", 0.55, 1.0]
    assert "singing_words" not in line and line["scenario"] == "speech"
    assert back[0].path("speech", tmp_path) == tmp_path / "m/0/speech.flac"
    assert back[0].path("singing", tmp_path) is None


@pytest.mark.parametrize(
    "line,msg",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"id": "a"}', "missing keys"),
        (json.dumps({**_item().to_json(), "sample_rate": "16k"}), "sample_rate"),
        (json.dumps({**_item().to_json(), "speech_words": [["a", 1.0]]}), "speech_words"),
        (json.dumps({**_item().to_json(), "speech_words": [["a", 1.0, 0.5]]}), "ending before"),
        (json.dumps({**_item().to_json(), "speech": 3}), "'speech'"),
    ],
)
def test_malformed_lines_name_the_line(tmp_path, line, msg):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(_item(7).to_json()) + "\n" + line + "\n")
    with pytest.raises(ManifestError, match=msg) as e:
        read_manifest(p)
    assert "bad.jsonl:2" in str(e.value)


def test_duplicate_ids_and_missing_file(tmp_path):
    p = tmp_path / "dup.jsonl"
    p.write_text((json.dumps(_item().to_json()) + "\n") * 2)
    with pytest.raises(ManifestError, match="duplicate id"):
        read_manifest(p)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")
