"""Token n-gram language model for shallow fusion in the CTC prefix beam search.

An interpolated Kneser-Ney n-gram over the recognizer's own sentencepiece token ids,
trained on the training text (corpus train split only: the test text never leaks). With
pieces of 2-3 characters an order of 6 spans about a word and a half, which is what a
recognizer trained on a few hours of audio lacks most: spelling and word boundaries
("heclses" -> "he closes").

Smoothing (Chen & Goodman's interpolated Kneser-Ney, one discount per order,
``D = n1 / (n1 + 2 n2)``): for a context ``h`` of length ``k`` and token ``w``

    P_k(w | h) = max(c(h, w) - D_k, 0) / c(h)  +  D_k * N1+(h .) / c(h) * P_{k-1}(w | h[1:])

with raw counts at the highest order and continuation counts (distinct left neighbours)
below it; ``P_0`` interpolates with the uniform distribution; an unseen context falls back
to its longest seen suffix. Sentences start with the ``<sos/eos>`` id in the context and
end with it as a predicted token.

:meth:`TokenNgramLM.logprobs` returns the dense log-probabilities of every token after a
context (a bounded cache, cleared when full, keeps the contexts the beams are using), so one
beam frame costs one array lookup per surviving prefix. The LM is shared by all sessions.
"""

from __future__ import annotations

import collections
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FORMAT_VERSION = 1


class LMError(ValueError):
    """A missing, corrupt or mismatched language-model file."""


class TokenNgramLM:
    """Interpolated Kneser-Ney token n-gram (see module doc).

    Tables are flat arrays (fast to load, no per-n-gram Python objects): for each context
    length ``k`` (0 .. order-1), ``keys[k]`` holds the sorted context keys (a context
    ``(c_1..c_k)`` is the base-``vocab_size`` number ``c_1 c_2 .. c_k``), ``lens[k]`` how
    many tokens follow each context, and ``ids[k]`` / ``counts[k]`` those tokens and their
    (continuation) counts, grouped by context in key order.

    Args:
        order: n (>= 1).
        vocab_size: tokens are ``0 .. vocab_size - 1``.
        bos_eos_id: the sentence start/end id.
        tables: per context length, ``(keys, lens, ids, counts)`` as above.
        discounts: ``D_k`` per context length.
        weight: recommended fusion weight (tuned on validation data, stored with the model).
        token_bonus: recommended per-token bonus that balances the LM's length penalty.
        cache_size: contexts kept in the dense-vector cache.
    """

    def __init__(self, order: int, vocab_size: int, bos_eos_id: int,
                 tables: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], discounts: Sequence[float],
                 weight: float = 0.3, token_bonus: float = 0.5, cache_size: int = 4096):
        if order < 1 or len(tables) != order or len(discounts) != order:
            raise LMError(f"order {order} needs {order} tables and discounts, got {len(tables)} / {len(discounts)}")
        if not 0 <= bos_eos_id < vocab_size:
            raise LMError(f"bos_eos_id {bos_eos_id} outside the vocabulary of {vocab_size}")
        if float(vocab_size) ** max(order - 1, 1) >= 2.0 ** 62:
            raise LMError(f"order {order} with {vocab_size} tokens overflows the 64-bit context keys")
        self.order, self.vocab_size, self.bos_eos_id = int(order), int(vocab_size), int(bos_eos_id)
        self.discounts = [float(d) for d in discounts]
        self.weight, self.token_bonus = float(weight), float(token_bonus)
        self._raw = []
        self._tables = []  # per k: (keys, starts, ends, ids, discounted probability, back-off mass)
        for k, (keys, lens, ids, counts) in enumerate(tables):
            keys, lens = np.asarray(keys, dtype=np.int64), np.asarray(lens, dtype=np.int64)
            ids, counts = np.asarray(ids, dtype=np.int64), np.asarray(counts, dtype=np.float64)
            if keys.ndim != 1 or keys.shape != lens.shape or int(lens.sum()) != len(ids) or ids.shape != counts.shape:
                raise LMError(f"order-{k + 1} tables are inconsistent")
            if len(keys) > 1 and not (np.diff(keys) > 0).all():
                raise LMError(f"order-{k + 1} context keys are not sorted and unique")
            if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size or lens.min() < 1 or counts.min() <= 0):
                raise LMError(f"order-{k + 1} tables hold ids outside the vocabulary or empty contexts")
            ends = np.cumsum(lens)
            starts = ends - lens
            total = np.add.reduceat(counts, starts) if len(keys) else np.zeros(0)
            d = self.discounts[k]
            disc = np.maximum(counts - d, 0.0) / np.repeat(total, lens)
            self._tables.append((keys, starts, ends, ids, disc, d * lens / np.where(total > 0, total, 1.0)))
            self._raw.append((keys, lens, ids, counts))
        if len(self._tables[0][0]) != 1 or self._tables[0][0][0] != 0:
            raise LMError("no unigram table")
        self._cache: dict[tuple[int, ...], np.ndarray] = {}
        self._cache_size = int(cache_size)
        self._uniform = np.full(self.vocab_size, 1.0 / self.vocab_size)

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, sentences: Iterable[Sequence[int]], order: int, vocab_size: int, bos_eos_id: int,
              **kw) -> "TokenNgramLM":
        """Count and smooth. ``sentences``: token-id sequences (no start/end marks)."""
        if order < 1:
            raise LMError(f"order must be >= 1, got {order}")
        top: collections.Counter[tuple[int, ...]] = collections.Counter()
        n_sent = 0
        for s in sentences:
            seq = [bos_eos_id] * (order - 1) + [int(t) for t in s] + [bos_eos_id]
            for i in range(order - 1, len(seq)):
                top[tuple(seq[i - order + 1:i + 1])] += 1
            n_sent += 1
        if n_sent == 0:
            raise LMError("no training sentences")
        # counts[k]: n-grams of length k+1 (context length k); the highest order keeps raw
        # counts, every lower order the number of distinct left neighbours.
        counts: list[collections.Counter] = [collections.Counter() for _ in range(order)]
        counts[order - 1] = top
        for k in range(order - 2, -1, -1):
            for gram in counts[k + 1]:
                counts[k][gram[1:]] += 1
        tables, discounts = [], []
        for k in range(order):
            n1 = sum(1 for c in counts[k].values() if c == 1)
            n2 = sum(1 for c in counts[k].values() if c == 2)
            discounts.append(n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5)
            rows = sorted((_key(g[:-1], vocab_size), g[-1], c) for g, c in counts[k].items())
            arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
            keys, lens = np.unique(arr[:, 0], return_counts=True)
            tables.append((keys, lens, arr[:, 1], arr[:, 2].astype(np.float64)))
        return cls(order, vocab_size, bos_eos_id, tables, discounts, **kw)

    # ------------------------------------------------------------------ scoring
    def context_of(self, tokens: Sequence[int]) -> tuple[int, ...]:
        """The LM context after ``tokens`` (sentence start padded with ``<sos/eos>``)."""
        n = self.order - 1
        if n == 0:
            return ()
        tail = tuple(int(t) for t in tokens[-n:])
        return (self.bos_eos_id,) * (n - len(tail)) + tail

    def logprobs(self, context: tuple[int, ...]) -> np.ndarray:
        """(vocab_size,) natural-log probabilities of the next token after ``context``
        (as :meth:`context_of` makes it). The array is shared: do not modify it."""
        hit = self._cache.get(context)
        if hit is not None:
            return hit
        _, starts, ends, ids, disc, backoff = self._tables[0]
        p = backoff[0] * self._uniform
        p[ids] += disc
        key, scale = 0, 1
        for k in range(1, self.order):
            key += int(context[len(context) - k]) * scale
            scale *= self.vocab_size
            keys, starts, ends, ids, disc, backoff = self._tables[k]
            i = int(np.searchsorted(keys, key))
            if i == len(keys) or keys[i] != key:
                break  # a longer context containing an unseen suffix is unseen too
            a, b = int(starts[i]), int(ends[i])
            p = backoff[i] * p
            p[ids[a:b]] += disc[a:b]
        out = np.log(p)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()  # crude but thread-safe (single dict operations; sessions share the LM)
        self._cache[context] = out
        return out

    def score(self, tokens: Sequence[int], eos: bool = True) -> float:
        """log P(tokens [+ end of sentence])."""
        total, hist = 0.0, []
        for t in list(tokens) + ([self.bos_eos_id] if eos else []):
            total += float(self.logprobs(self.context_of(hist))[int(t)])
            hist.append(int(t))
        return total

    def perplexity(self, sentences: Iterable[Sequence[int]]) -> float:
        """Per-token perplexity (end of sentence counted) over ``sentences``."""
        lp, n = 0.0, 0
        for s in sentences:
            lp += self.score(s)
            n += len(s) + 1
        return float(np.exp(-lp / max(n, 1)))

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """One ``.npz``: a JSON header plus, per context length, the four flat arrays."""
        arrays = {"header": np.frombuffer(json.dumps({
            "format_version": FORMAT_VERSION, "order": self.order, "vocab_size": self.vocab_size,
            "bos_eos_id": self.bos_eos_id, "discounts": self.discounts, "weight": self.weight,
            "token_bonus": self.token_bonus}).encode(), dtype=np.uint8)}
        for k, (keys, lens, ids, counts) in enumerate(self._raw):
            arrays[f"keys{k}"], arrays[f"lens{k}"] = keys, lens.astype(np.int32)
            arrays[f"ids{k}"], arrays[f"counts{k}"] = ids.astype(np.int16 if self.vocab_size < 2**15 else np.int32), counts.astype(np.float32)
        tmp = Path(str(path) + ".part.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **kw) -> "TokenNgramLM":
        """Read :meth:`save`'s file. Raises :class:`LMError` naming the file when it is
        missing, unreadable or inconsistent."""
        try:
            with np.load(path, allow_pickle=False) as z:
                head = json.loads(bytes(z["header"]).decode())
                if head.get("format_version") != FORMAT_VERSION:
                    raise LMError(f"format_version {head.get('format_version')}, expected {FORMAT_VERSION}")
                order = int(head["order"])
                tables = [(z[f"keys{k}"], z[f"lens{k}"], z[f"ids{k}"], z[f"counts{k}"]) for k in range(order)]
            kw = {"weight": head.get("weight", 0.3), "token_bonus": head.get("token_bonus", 0.5), **kw}
            return cls(order, int(head["vocab_size"]), int(head["bos_eos_id"]), tables, head["discounts"], **kw)
        except FileNotFoundError:
            raise LMError(f"language model not found: {path}") from None
        except Exception as e:  # zip/npz/JSON damage, missing arrays, inconsistent tables
            raise LMError(f"{path}: not a usable token n-gram LM ({type(e).__name__}: {e})") from e


def _key(context: Sequence[int], vocab_size: int) -> int:
    """Context key: the base-``vocab_size`` number whose least significant digit is the
    most recent token (so :meth:`TokenNgramLM.logprobs` extends it digit by digit)."""
    key, scale = 0, 1
    for c in reversed(context):
        key += int(c) * scale
        scale *= vocab_size
    return key


LM_FILE = "lm.npz"


FUSION_FILE = "lm_fusion.json"


def load_model_lm(asr_dir: str | os.PathLike) -> TokenNgramLM | None:
    """The LM shipped in a recognizer folder (``asr_dir/lm.npz``, made by ``jrsv-stream
    train lm``), None when the folder has none; :class:`LMError` when it is unusable.

    ``asr_dir/lm_fusion.json`` (``{"weight": w, "token_bonus": b, ...}``, written by
    ``bench/fusion_grid.py --save``), when present, replaces the fusion point stored in
    ``lm.npz``: a pipeline re-tuned on its own separated tracks keeps the same LM file.
    """
    path = Path(asr_dir) / LM_FILE
    if not path.is_file():
        return None
    lm = TokenNgramLM.load(path)
    fusion = Path(asr_dir) / FUSION_FILE
    if fusion.is_file():
        try:
            f = json.loads(fusion.read_text())
            weight, bonus = float(f["weight"]), float(f["token_bonus"])
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise LMError(f"{fusion}: unreadable fusion point ({type(e).__name__}: {e}); "
                          f"expected {{\"weight\": float, \"token_bonus\": float}}") from e
        if not (math.isfinite(weight) and weight >= 0 and math.isfinite(bonus)):
            raise LMError(f"{fusion}: weight must be finite and >= 0 and token_bonus finite, got {weight}, {bonus}")
        lm.weight, lm.token_bonus = weight, bonus
    return lm
