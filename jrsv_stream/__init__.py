"""jrsv-stream: streaming live-broadcast transcriber (speech and lyrics caption tracks)."""

__version__ = "0.1.0"
SAMPLE_RATE = 16000
