"""Subtitle exports: SRT and WebVTT per caption track, LRC for lyrics."""

from jrsv_stream.export.subtitles import (FORMATS, Cue, LiveSubtitleWriter, cues_from_finals, format_subtitles, to_lrc,
                                          to_srt, to_vtt, write_subtitles)

__all__ = ["FORMATS", "Cue", "LiveSubtitleWriter", "cues_from_finals", "format_subtitles", "to_lrc", "to_srt", "to_vtt",
           "write_subtitles"]
