"""Data for the "clean ASR": clean speech and clean sung utterances from a corpus's source
indexes (``DIR/sources/{speech,singing}.jsonl``, each line with ``split``, ``audio``,
``duration_s``, ``text``), length-bucketed batches, waveform augmentation (speed
perturbation by resampling, random gain) and SpecAugment parameters.

Every random choice comes from a generator seeded by ``(seed, epoch, batch index)``, so an
epoch's batches and their augmentation are the same whichever worker loads them, and a
resumed run continues the interrupted epoch exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import load_audio
from jrsv_stream.nn.asr import TRACKS

HOP_SAMPLES = 160  # feature hop (10 ms): SpecAugment time masks are in feature frames


@dataclass(frozen=True)
class SpecAugConfig:
    """SpecAugment on normalized log-mel (masked values set to 0 = the global mean)."""

    freq_masks: int = 2
    max_freq_bins: int = 10
    time_masks: int = 2
    max_time_frames: int = 40  # 10 ms feature frames
    max_time_fraction: float = 0.2  # a mask never covers more than this part of an utterance


@dataclass(frozen=True)
class WordCropConfig:
    """Short-target curriculum: in epochs ``< until_epoch`` each training batch is, with
    probability ``prob``, made of utterances cut to random runs of ``min_words..max_words`` consecutive words
    (the corpus's word times, ``margin_s`` of context each side). Short targets make the CTC
    alignment easy, which gets a recognizer trained from scratch off the all-blank plateau."""

    prob: float = 0.0
    min_words: int = 1
    max_words: int = 4
    margin_s: float = 0.03
    until_epoch: int = 0


@dataclass(frozen=True)
class VoiceAugConfig:
    """Voice-diversity augmentation, applied to the spectrum of each training utterance
    with probability ``prob`` (0 = off). The corpus has few synthetic voices and the
    recognizer does worse on unseen ones (valid 39.5 vs test 51 % WER), so each utterance
    gets a random vocal-tract length and a random channel:

    ``vtlp``: range of the frequency-warp factor (VTLP, Jaitly & Hinton 2013): the linear
    spectrum is read at ``f / alpha`` below a break frequency, linearly to Nyquist above
    it, so alpha > 1 moves formants up (a shorter vocal tract), < 1 down.
    ``eq_db``: bound of a smooth random EQ over the mel axis (``eq_terms`` cosines), dB.
    """

    prob: float = 0.0
    vtlp: tuple[float, float] = (0.88, 1.12)
    eq_db: float = 6.0
    eq_terms: int = 4

    def __post_init__(self):
        lo, hi = self.vtlp
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"data.voice_aug.prob must be in [0, 1], got {self.prob}")
        if not 0.5 <= lo <= hi <= 2.0:
            raise ValueError(f"data.voice_aug.vtlp must be [low, high] with 0.5 <= low <= high <= 2, got {list(self.vtlp)}")
        if self.eq_db < 0 or self.eq_terms < 0:
            raise ValueError(f"data.voice_aug.eq_db and eq_terms must be >= 0, got {self.eq_db}, {self.eq_terms}")


@dataclass(frozen=True)
class ASRDataConfig:
    """Where the utterances come from and how batches are made.

    ``extra_corpora``: folders in the corpus source layout whose train-split utterances are
    added to the corpus's (validation always comes from ``corpus``).
    ``tracks``: ``shared`` trains one model on both tracks (track embedding), ``separate``
    trains on ``track`` only (run twice, one config per track, to get two models).
    """

    corpus: str = "data/corpus"
    extra_corpora: tuple[str, ...] = ()  # more train utterances (e.g. `jrsv-stream data vocals`); valid/test stay the corpus's
    tracks: str = "shared"
    track: str = "speech"  # used when tracks == "separate"
    vocab_size: int = 384
    tokenizer_type: str = "unigram"
    speed_perturb: tuple[float, ...] = (0.9, 1.0, 1.1)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    spec_aug: SpecAugConfig = SpecAugConfig()
    word_crop: WordCropConfig = WordCropConfig()
    voice_aug: VoiceAugConfig = VoiceAugConfig()
    batch_seconds: float = 120.0  # padded audio seconds per batch (before speed perturbation)
    max_batch: int = 64
    max_utt_s: float = 20.0
    num_workers: int = 1
    cmvn_utts: int = 400  # training utterances used for the global feature statistics
    valid_utts: int = 300  # validation utterances (split evenly over the tracks)

    def track_names(self) -> tuple[str, ...]:
        if self.tracks == "shared":
            return tuple(TRACKS)
        if self.tracks == "separate":
            if self.track not in TRACKS:
                raise ValueError(f"data.track must be one of {list(TRACKS)}, got {self.track!r}")
            return (self.track,)
        raise ValueError(f"data.tracks must be 'shared' or 'separate', got {self.tracks!r}")


class Utterance(NamedTuple):
    id: str
    path: str  # absolute audio path
    text: str
    track: int  # TRACKS id
    duration_s: float
    words: tuple[tuple[str, float, float], ...] = ()  # (word, start_s, end_s), when the corpus has them


class Batch(NamedTuple):
    """One collated batch (CPU tensors).

    wav: (B, N) float32, zero padded; wav_lens: (B,) samples; tracks: (B,) long;
    tokens: B token lists; texts: B reference texts; ids: B utterance ids;
    spec_aug: (B, K, 3) long rows ``(axis, start, width)`` (axis 0 = time frames,
    1 = mel bins; width 0 = no mask); audio_s: seconds of source audio (before perturbation);
    voice: (B, 1 + eq_terms) float rows ``(alpha, eq_1..eq_J)`` of :func:`voice_features`
    (alpha 1 and zeros = unchanged), or None when voice augmentation is off.
    """

    wav: torch.Tensor
    wav_lens: torch.Tensor
    tracks: torch.Tensor
    tokens: list[list[int]]
    texts: list[str]
    ids: list[str]
    spec_aug: torch.Tensor
    audio_s: float
    voice: torch.Tensor | None = None


def read_utterances(corpus: str | Path, split: str, track_names: Sequence[str], max_utt_s: float = 1e9) -> list[Utterance]:
    """Utterances of ``split`` for the given tracks, from ``corpus/sources/<track>.jsonl``.

    Raises:
        FileNotFoundError: an index is missing.
        ValueError: an entry has no text.
    """
    root = Path(corpus)
    out = []
    for name in track_names:
        index = root / "sources" / f"{name}.jsonl"
        if not index.is_file():
            raise FileNotFoundError(f"source index not found: {index} (build the corpus with `jrsv-stream data synth`)")
        with open(index, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                if d["split"] != split or float(d["duration_s"]) > max_utt_s:
                    continue
                if not d.get("text"):
                    raise ValueError(f"{index}: entry {d.get('id')} has no text")
                words = tuple((str(w), float(a), float(b)) for w, a, b in d.get("words") or ())
                out.append(Utterance(d["id"], str(root / "sources" / name / d["split"] / d["audio"]), d["text"],
                                     TRACKS[name], float(d["duration_s"]), words))
    return out


def make_batches(durations: Sequence[float], batch_seconds: float, max_batch: int,
                 rng: np.random.Generator | None = None) -> list[list[int]]:
    """Length-bucketed batches: indices sorted by (jittered) duration, packed while
    ``len(batch) * longest <= batch_seconds``; the batch order is shuffled when ``rng`` is given.
    """
    d = np.asarray(durations, dtype=np.float64)
    key = d * (1.0 + rng.uniform(-0.1, 0.1, size=len(d))) if rng is not None else d
    order = np.argsort(key, kind="stable")
    batches, cur, longest = [], [], 0.0
    for i in order:
        m = max(longest, d[i])
        if cur and (m * (len(cur) + 1) > batch_seconds or len(cur) >= max_batch):
            batches.append(cur)
            cur, m = [], d[i]
        cur.append(int(i))
        longest = m
    if cur:
        batches.append(cur)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def spec_aug_params(n_frames: Sequence[int], cfg: SpecAugConfig, n_mels: int, rng: np.random.Generator) -> torch.Tensor:
    """(B, K, 3) mask rows (axis, start, width) for utterances of ``n_frames`` feature frames."""
    k = cfg.time_masks + cfg.freq_masks
    out = np.zeros((len(n_frames), k, 3), dtype=np.int64)
    for b, n in enumerate(n_frames):
        max_t = min(cfg.max_time_frames, int(cfg.max_time_fraction * n))
        for j in range(cfg.time_masks):
            w = int(rng.integers(0, max_t + 1)) if max_t > 0 else 0
            out[b, j] = (0, int(rng.integers(0, max(1, n - w + 1))), w)
        for j in range(cfg.freq_masks):
            w = int(rng.integers(0, cfg.max_freq_bins + 1))
            out[b, cfg.time_masks + j] = (1, int(rng.integers(0, n_mels - w + 1)), w)
    return torch.from_numpy(out)


def apply_spec_aug(feats: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Zero the masked (time, mel) regions of normalized features (B, T, F); returns a new tensor."""
    B, T, F = feats.shape
    p = params.to(feats.device)
    t = torch.arange(T, device=feats.device)[None, None, :]
    f = torch.arange(F, device=feats.device)[None, None, :]
    start, end = p[..., 1:2], p[..., 1:2] + p[..., 2:3]
    tmask = ((p[..., 0:1] == 0) & (t >= start) & (t < end)).any(1)  # (B, T)
    fmask = ((p[..., 0:1] == 1) & (f >= start) & (f < end)).any(1)  # (B, F)
    return feats.masked_fill(tmask[:, :, None] | fmask[:, None, :], 0.0)


def voice_aug_params(batch: int, cfg: VoiceAugConfig, rng: np.random.Generator) -> torch.Tensor:
    """(B, 1 + eq_terms) rows ``(alpha, eq coefficients in dB)``; rows left alone (chance
    ``1 - prob``) are ``(1, 0, ...)``. The coefficients' absolute sum is <= ``eq_db``."""
    out = np.zeros((batch, 1 + cfg.eq_terms), dtype=np.float32)
    out[:, 0] = 1.0
    for b in range(batch):
        if rng.random() < cfg.prob:
            out[b, 0] = rng.uniform(*cfg.vtlp)
            out[b, 1:] = rng.uniform(-1.0, 1.0, cfg.eq_terms) * cfg.eq_db / max(1, cfg.eq_terms)
    return torch.from_numpy(out)


def warp_spectrum(spec: torch.Tensor, alpha: torch.Tensor, break_frac: float = 0.85) -> torch.Tensor:
    """VTLP of a linear spectrogram (B, K, T) (K bins from 0 to Nyquist) by per-row factors
    ``alpha`` (B,): output bin ``k`` reads the input at ``g(k)``, piecewise linear with
    ``g(k) = k / alpha`` up to ``k_b = break_frac * (K - 1) * min(1, alpha)`` and a straight
    line from there to ``g(K - 1) = K - 1``; linear interpolation between bins."""
    B, K, T = spec.shape
    k = torch.arange(K, device=spec.device, dtype=spec.dtype)[None, :]  # (1, K)
    a = alpha.to(spec)[:, None]  # (B, 1)
    top = float(K - 1)
    kb = break_frac * top * torch.clamp(a, max=1.0)
    upper = kb / a + (k - kb) * (top - kb / a) / (top - kb)
    src = torch.where(k <= kb, k / a, upper).clamp(0.0, top)  # (B, K)
    i0 = src.floor().long().clamp(max=K - 2)
    w = (src - i0.to(src))[:, :, None]
    lo = spec.gather(1, i0[:, :, None].expand(B, K, T))
    hi = spec.gather(1, (i0 + 1)[:, :, None].expand(B, K, T))
    return lo * (1.0 - w) + hi * w


def voice_features(features, wav: torch.Tensor, wav_lens: torch.Tensor, voice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized log-mel of ``wav`` (B, N) as :class:`jrsv_stream.nn.features.LogMel`
    computes it, with each row's spectrum warped by ``voice[:, 0]`` and a smooth EQ
    ``sum_j voice[:, j] * cos(pi * j * m / (n_mels - 1))`` dB added over the mel bins ``m``.
    A row ``(1, 0, ...)`` gives exactly the unaugmented features."""
    x = torch.nn.functional.pad(wav, (features.pad_samples, 0))
    spec = features.mel.spectrogram(x)  # (B, K, T) power
    alpha = voice[:, 0].to(spec)
    if bool((alpha != 1.0).any()):
        spec = warp_spectrum(spec, alpha)
    logmel = features.log_mel(spec)  # (B, T, F)
    n_mels, terms = logmel.shape[-1], voice.shape[1] - 1
    if terms:
        m = torch.arange(n_mels, device=logmel.device, dtype=logmel.dtype)
        j = torch.arange(1, terms + 1, device=logmel.device, dtype=logmel.dtype)
        basis = torch.cos(torch.pi * j[:, None] * m[None, :] / max(1, n_mels - 1))  # (J, F)
        eq_nat = (voice[:, 1:].to(logmel) @ basis) * (np.log(10.0) / 10.0)  # dB of power -> ln
        logmel = logmel + eq_nat[:, None, :]
    return features.normalize(logmel), torch.div(wav_lens, features.hop, rounding_mode="floor")


def perturb(wav: np.ndarray, speed: float, gain_db: float) -> np.ndarray:
    """Speed perturbation by resampling (tempo and pitch change together, as in Kaldi/WeNet)
    and a gain in dB."""
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    if speed != 1.0:
        x = AF.resample(x, int(round(speed * 100)), 100)
    y = x.numpy() * np.float32(10.0 ** (gain_db / 20.0))
    return np.clip(y, -1.0, 1.0)


class ASRDataset(torch.utils.data.Dataset):
    """Loads whole batches: item ``i`` is batch ``plan[i]`` (a list of utterance indices).

    Args:
        utts: the utterances.
        tokens: token ids per utterance (tokenized once in the main process).
        plan: batches of indices into ``utts``.
        cfg: data config (augmentation settings).
        augment: apply speed/gain/SpecAugment parameters (training) or not (validation).
        seed, epoch, first_batch: seed the per-batch generators ``(seed, epoch, first_batch + i)``.
        n_mels: feature bins (for frequency masks).
        word_tokens: per utterance, the token ids of each of its words (sentencepiece splits
            on whitespace first, so they concatenate to ``tokens``); needed for word crops.
    """

    def __init__(self, utts: Sequence[Utterance], tokens: Sequence[list[int]], plan: list[list[int]], cfg: ASRDataConfig,
                 augment: bool, seed: int = 0, epoch: int = 0, first_batch: int = 0, n_mels: int = 80,
                 word_tokens: Sequence[list[list[int]]] | None = None):
        self.utts, self.tokens, self.plan, self.cfg = utts, tokens, plan, cfg
        self.augment, self.seed, self.epoch, self.first_batch, self.n_mels = augment, seed, epoch, first_batch, n_mels
        wc = cfg.word_crop
        self.crop_prob = wc.prob if augment and word_tokens is not None and epoch < wc.until_epoch else 0.0
        self.word_tokens = word_tokens

    def _crop(self, k: int, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int], str]:
        """A random run of consecutive words of utterance ``k``: (audio, tokens, text)."""
        u, wc = self.utts[k], self.cfg.word_crop
        n = int(rng.integers(wc.min_words, wc.max_words + 1))
        if len(u.words) <= n:
            return x, list(self.tokens[k]), u.text
        i = int(rng.integers(0, len(u.words) - n + 1))
        a = max(0, int((u.words[i][1] - wc.margin_s) * SAMPLE_RATE))
        b = min(len(x), int(np.ceil((u.words[i + n - 1][2] + wc.margin_s) * SAMPLE_RATE)))
        toks = [t for w in self.word_tokens[k][i:i + n] for t in w]
        return x[a:b], toks, " ".join(w for w, _, _ in u.words[i:i + n])

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Batch:
        rng = np.random.default_rng([self.seed, self.epoch, self.first_batch + i])
        idx = self.plan[i]
        wavs, tokens, texts, audio_s = [], [], [], 0.0
        # crop whole batches (not single utterances): a batch of crops is short, with no padding
        crop = bool(self.crop_prob) and rng.random() < self.crop_prob
        for k in idx:
            x = load_audio(self.utts[k].path, SAMPLE_RATE)
            toks, text = list(self.tokens[k]), self.utts[k].text
            if crop and self.utts[k].words:
                x, toks, text = self._crop(k, x, rng)
            tokens.append(toks)
            texts.append(text)
            audio_s += len(x) / SAMPLE_RATE
            if self.augment:
                speed = float(rng.choice(self.cfg.speed_perturb)) if self.cfg.speed_perturb else 1.0
                x = perturb(x, speed, float(rng.uniform(*self.cfg.gain_db)))
            wavs.append(x)
        lens = [len(x) for x in wavs]
        wav = torch.zeros(len(idx), max(lens))
        for j, x in enumerate(wavs):
            wav[j, : len(x)] = torch.from_numpy(x)
        if self.augment:
            sa = spec_aug_params([n // HOP_SAMPLES for n in lens], self.cfg.spec_aug, self.n_mels, rng)
        else:
            sa = torch.zeros(len(idx), 0, 3, dtype=torch.long)
        # drawn last, so turning it on leaves every other random choice of the batch as it was
        voice = voice_aug_params(len(idx), self.cfg.voice_aug, rng) if self.augment and self.cfg.voice_aug.prob > 0 else None
        return Batch(wav, torch.tensor(lens), torch.tensor([self.utts[k].track for k in idx]), tokens, texts,
                     [self.utts[k].id for k in idx], sa, audio_s, voice)


def _identity(b):
    return b


def make_loader(ds: ASRDataset, num_workers: int) -> torch.utils.data.DataLoader:
    """A loader that yields the dataset's batches in order (no re-batching)."""
    # own generator: creating an iterator must not draw from the global torch RNG (dropout),
    # or a resumed run would not continue the interrupted one exactly
    return torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=num_workers,
                                       collate_fn=_identity, prefetch_factor=2 if num_workers > 0 else None,
                                       generator=torch.Generator().manual_seed(0))
