"""bench/soak.py end to end (tiny pipeline, loopback, a real server process): its 3-minute
form in the default run (mostly waiting: the publishers run at real time); the 30-minute
soak on the shipped default is a command in the README."""

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.soak import main  # noqa: E402


def _soak(tmp_path, minutes: float, run_s: float) -> dict:
    out = tmp_path / "soak.json"
    assert main(["--pipeline", "tiny", "--chunk-ms", "160", "--streams", "2", "--fault-streams", "1", "--subscribers", "5",
                 "--minutes", str(minutes), "--run-s", str(run_s), "--flaky-mean-s", "4", "--fault-retry-s", "3",
                 "--sample-s", "2", "--threads", "1", "--json", str(out)]) == 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    return json.loads(out.read_text())


def _check(d: dict) -> None:
    for k in ("minutes", "streams", "subscribers", "finals_emitted", "finals_lost", "rss_mb_start", "rss_mb_end", "rss_growth_mb",
              "chunk_latency_p95_ms", "faults_injected", "streams_failed_by_faults"):
        assert d[k] is not None, k
    assert d["subscribers"] == 15 and d["streams"] == 2
    assert d["finals_emitted"] > 0 and d["finals_lost"] == 0
    assert d["subscriber_runs_checked"] >= 2 * d["runs"]  # at least the steady and slow ones saw every run whole
    assert d["reconnects"] > 0  # the flaky subscribers came and went
    assert d["faults_injected"] >= 1 and d["streams_failed_by_faults"] == ["fault0"] and d["healthy_runs_failed"] == 0
    assert d["runs_ended_normally"] == d["runs"] >= 2
    assert d["rss_growth_mb"] <= 50 and d["chunk_latency_p95_ms"] < d["chunk_ms"]
    assert d["server_exit_code"] == 0 and not d["server_log_errors"]


def test_three_minute_soak(tmp_path):
    d = _soak(tmp_path, 3.0, 40)
    _check(d)
    assert all(m["chunk_latency_p95_ms"] < d["chunk_ms"] for m in d["per_minute"])
