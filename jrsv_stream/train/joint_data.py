"""Data of the joint trainer (:mod:`jrsv_stream.train.joint`): whole manifest items collated
into :class:`JointBatch` (mixture, stems, activity, per-track token targets)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from jrsv_stream import SAMPLE_RATE


# --- data -----------------------------------------------------------------------------------------
class JointBatch(NamedTuple):
    """One collated batch of whole manifest items (CPU tensors), zero padded to T.

    mixture: (B, T); stems: (B, 3, T) speech/singing/music (zeros when absent);
    activity: (B, 2, T // hop) 0/1 speech/singing; lens: (B,) samples of each item (its
    length rounded up to the hop); tokens: per recognizer track (speech, singing), B
    token lists each (empty when the text is absent); texts: same, the reference strings
    (None when absent); ids: B item ids; audio_s: seconds of mixture audio.
    """

    mixture: torch.Tensor
    stems: torch.Tensor
    activity: torch.Tensor
    lens: torch.Tensor
    tokens: tuple[list[list[int]], list[list[int]]]
    texts: tuple[list[str | None], list[str | None]]
    ids: list[str]
    audio_s: float


def collate_items(exs: list[dict], tokens: list[tuple[list[int], list[int]]],
                  texts: list[tuple[str | None, str | None]], hop_samples: int) -> JointBatch:
    """Pad :class:`ManifestDataset` items (each already a multiple of ``hop_samples``)."""
    T = max(e["mixture"].shape[-1] for e in exs)
    B = len(exs)
    mix, stems = torch.zeros(B, T), torch.zeros(B, 3, T)
    act = torch.zeros(B, 2, T // hop_samples)
    lens = []
    for i, e in enumerate(exs):
        n = e["mixture"].shape[-1]
        mix[i, :n], stems[i, :, :n] = e["mixture"], e["stems"]
        act[i, :, : e["activity"].shape[-1]] = e["activity"]
        lens.append(n)
    return JointBatch(mix, stems, act, torch.tensor(lens, dtype=torch.long),
                      ([list(t[0]) for t in tokens], [list(t[1]) for t in tokens]),
                      ([t[0] for t in texts], [t[1] for t in texts]), [e["meta"]["id"] for e in exs],
                      float(sum(e["length"] for e in exs)) / SAMPLE_RATE)


class JointDataset(torch.utils.data.Dataset):
    """Item ``i`` is the :class:`JointBatch` of ``plan[i]`` (indices into ``items``)."""

    def __init__(self, items, tokens: list[tuple[list[int], list[int]]], texts: list[tuple[str | None, str | None]],
                 plan: list[list[int]]):
        self.items, self.tokens, self.texts, self.plan = items, tokens, texts, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> JointBatch:
        idx = self.plan[i]
        return collate_items([self.items[k] for k in idx], [self.tokens[k] for k in idx], [self.texts[k] for k in idx],
                             self.items.hop_samples)


def item_durations(items) -> list[float]:
    """Seconds per manifest item: the manifest's ``duration_s`` when present, else the
    mixture file's header."""
    import soundfile as sf

    out = []
    for it in items.items:
        d = it.extra.get("duration_s")
        if not isinstance(d, (int, float)):
            d = sf.info(str(it.path("mixture", items.root))).duration
        out.append(float(d))
    return out


def item_texts(items) -> list[tuple[str | None, str | None]]:
    """(speech_text, singing_text) per item; empty strings count as absent (None)."""
    return [(it.speech_text or None, it.singing_text or None) for it in items.items]
