"""Greedy and beam decoding with Whisper's decoder, without timestamps, using the key/value
cache of :mod:`jrsv_stream.nn.whisper` (one decoder call per step on the new token only).

Suppression as faster-whisper / CTranslate2 apply it with ``without_timestamps=True`` and
the default ``suppress_tokens=[-1]``, ``suppress_blank=True``: the tokens of
:attr:`WhisperTokenizer.decode_suppress_ids` (non-speech symbols and the task / SOT /
no-speech tokens) at every step, plus config.json's ``suppress_ids_begin`` (" " and
<|endoftext|>) at the first step. Timestamp tokens are *not* suppressed (CT2 does not when
the prompt ends with <|notimestamps|>; the model does not emit them then). Suppressed
logits are set to -inf before the log-softmax. At most ``min(max_tokens, n_text_ctx // 2,
n_text_ctx - prompt)`` tokens are generated (CT2's limit is 224 for a 448 context).
"""

from __future__ import annotations

import torch

from jrsv_stream.nn.whisper import DecoderCache, WhisperModel, cache_length, cache_reorder, cache_truncate

__all__ = ["beam_decode", "greedy_decode", "prompt_tokens", "suppress_masks", "token_logprobs"]


def suppress_masks(model: WhisperModel, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(every-step mask, first-step mask), bool (n_vocab,), True = suppressed."""
    tok = model.tokenizer
    V = model.dims.n_vocab
    every = torch.zeros(V, dtype=torch.bool, device=device)
    every[[i for i in tok.decode_suppress_ids if 0 <= i < V]] = True
    first = every.clone()
    first[[i for i in tok.suppress_ids_begin if 0 <= i < V]] = True
    return every, first


def _limit(model: WhisperModel, prompt_len: int, max_tokens: int) -> int:
    ctx = model.dims.n_text_ctx
    return max(0, min(max_tokens, ctx // 2, ctx - prompt_len))


def _prompt(model: WhisperModel, language: str, task: str, prev: list[int] | None = None) -> list[int]:
    """The SOT sequence, after ``<|startofprev|> prev`` when ``prev`` (previous-text
    tokens, e.g. hotword phrases; at most half the text context, the newest kept)."""
    if model.tokenizer is None:
        raise ValueError("model.tokenizer is None: load the model with a tokenizer.json")
    sot = model.tokenizer.sot_sequence(language, task, timestamps=False)
    if not prev:
        return sot
    return [model.tokenizer.sot_prev, *prev[-(model.dims.n_text_ctx // 2 - 1):], *sot]


def prompt_tokens(model: WhisperModel, phrases) -> list[int]:
    """Previous-text tokens naming ``phrases`` (Whisper's ``initial_prompt``): the
    decoder favours their words and spelling."""
    return model.tokenizer.encode(" " + ", ".join(phrases) + ".") if phrases else []


@torch.no_grad()
def greedy_decode(model: WhisperModel, audio_features: torch.Tensor, max_tokens: int = 224,
                  language: str = "en", task: str = "transcribe", scores: list[float] | None = None,
                  no_speech: list[float] | None = None, prev: list[int] | None = None,
                  token_logps: list[list[float]] | None = None, prefix: list[int] | None = None,
                  draft: list[int] | None = None) -> list[list[int]]:
    """Greedy decoding of a batch: audio_features (B, S, D) -> per row the tokens after the
    SOT sequence up to (not including) <|endoftext|>. Finished rows are dropped from the
    batch (and the cache) as they end. ``scores``, when a list, receives per row the summed
    log-probability of its tokens and <|endoftext|> (a row cut at the length limit: of its
    tokens). ``no_speech``, when a list, receives per row the probability of
    <|nospeech|> at the <|startoftranscript|> position (Whisper's no-speech detection).
    ``prev``: previous-text tokens (see :func:`prompt_tokens`). ``token_logps``, when a
    list, receives per row the log-probability of each of its tokens. ``prefix``: tokens
    forced after the SOT sequence (text already committed: the decoder continues it; they
    are not in the output or the scores; they count in the text context).

    ``draft`` (batch 1): tokens the output is expected to start with (an incremental final's
    previous hypothesis of the same segment): one decoder pass over the whole draft gives
    the logits after each of its tokens, used for as long as the greedy choice is the
    draft's token; at the first other choice the cache is cut back to the accepted tokens
    and decoding goes on token by token. With float weights the output is greedy
    decoding's (speculative decoding with the draft as the guess; tested), in one pass
    instead of one per accepted token; with the int8 decoder (``whisper_int8``) the one pass
    quantizes all the draft tokens' activations with one scale, so a near tie may go the
    other way (measured: 11 of 40 texts over music differ, by a comma or a number's format)."""
    tok = model.tokenizer
    prompt = _prompt(model, language, task, prev)
    prefix = list(prefix or [])[: max(0, model.dims.n_text_ctx // 2 - 1)]
    prompt = prompt + prefix
    dev = audio_features.device
    B = audio_features.shape[0]
    every, first = suppress_masks(model, dev)
    cache = DecoderCache()
    tokens = torch.tensor([prompt] * B, dtype=torch.long, device=dev)
    all_logits = model.decoder(tokens, audio_features, cache)
    if no_speech is not None:
        sot = prompt.index(tok.sot)  # the first: a prefix never holds SOT
        no_speech.extend(torch.softmax(all_logits[:, sot].float(), -1)[:, tok.no_speech].tolist())
    logits = all_logits[:, -1]
    out: list[list[int]] = [[] for _ in range(B)]
    per_token: list[list[float]] = [[] for _ in range(B)]
    sums = [0.0] * B
    alive = list(range(B))  # batch row -> output index
    limit = _limit(model, len(prompt), max_tokens)
    guess = list(draft or [])[:limit] if B == 1 else []
    if guess:  # the logits after each draft token, in one pass (positions after the prompt)
        base = cache_length(cache)
        after = model.decoder(torch.tensor([guess], dtype=torch.long, device=dev), None, cache)[0]
        used = 0  # draft tokens accepted so far
    for step in range(limit):
        masked = logits.float().masked_fill(first if (step == 0 and not prefix) else every, float("-inf"))
        nxt = masked.argmax(-1)
        lp = (masked.gather(-1, nxt[:, None])[:, 0] - torch.logsumexp(masked, -1)).tolist() \
            if (scores is not None or token_logps is not None) else [0.0] * len(alive)
        for r, v in enumerate(lp):
            sums[alive[r]] += v
        keep = []
        for r, t in enumerate(nxt.tolist()):
            if t == tok.eot:
                continue
            out[alive[r]].append(t)
            per_token[alive[r]].append(lp[r])
            keep.append(r)
        if not keep:
            break
        if len(keep) < len(alive):
            cache_reorder(cache, keep)
            alive = [alive[r] for r in keep]
            nxt = nxt[keep]
        if guess:
            if used < len(guess) and int(nxt[0]) == guess[used]:  # the draft holds: its next logits
                logits = after[used][None]
                used += 1
                continue
            cache_truncate(cache, base + used)  # the draft's tokens from here on are not the output
            guess = []
        logits = model.decoder(nxt[:, None], None, cache)[:, -1]
    if scores is not None:
        scores.extend(sums)
    if token_logps is not None:
        token_logps.extend(per_token)
    return out


@torch.no_grad()
def beam_decode(model: WhisperModel, audio_features: torch.Tensor, beam: int = 5, max_tokens: int = 224,
                length_penalty: float | None = None, language: str = "en", task: str = "transcribe",
                patience: float = 1.0, prev: list[int] | None = None, prefix: list[int] | None = None,
                no_speech: list[float] | None = None, views: tuple[torch.Tensor, ...] = ()
                ) -> list[tuple[list[int], float, float]]:
    """Beam search for one utterance: audio_features (1, S, D) -> n-best
    ``[(tokens, sum_logprob, avg_logprob)]``, best first.

    ``sum_logprob`` includes <|endoftext|>'s log-probability; ``avg_logprob`` = sum /
    (len(tokens) + 1), as faster-whisper reports it. Ranking score (faster-whisper /
    openai style): ``sum / len(tokens)`` when ``length_penalty`` is None, else
    ``sum / ((5 + len) / 6) ** length_penalty``. The search keeps ``beam`` live hypotheses
    (the best of the top 2 * beam candidates that do not end); a candidate ending with
    <|endoftext|> becomes a hypothesis only when it ranks within the top ``beam`` (as in
    CTranslate2's beam search, faster-whisper's engine). The search stops once
    ``round(beam * patience)`` hypotheses have ended, or at the length limit (then the live
    beams count as ended). Returns at most ``beam`` hypotheses. ``prefix``: tokens forced
    after the SOT sequence, as in :func:`greedy_decode` (not in the output or the scores).
    ``no_speech``, when a list, receives p(<|nospeech|>) (as :func:`greedy_decode`).
    ``views``: the same utterance heard other ways (each (1, S', D), e.g. the mixture beside
    the separated voice): each gets its own decoder cache, and every step scores the
    candidates by the mean of the views' log-softmaxes (a product of experts over what each
    hearing supports; the summed log-probabilities are those of that mean). ``no_speech``
    is the first view's (``audio_features``).
    """
    if audio_features.shape[0] != 1 or any(v.shape[0] != 1 for v in views):
        raise ValueError(f"beam_decode takes one utterance, got batch {audio_features.shape[0]}")
    tok = model.tokenizer
    prefix = list(prefix or [])[: max(0, model.dims.n_text_ctx // 2 - 1)]
    prompt = _prompt(model, language, task, prev) + prefix
    dev = audio_features.device
    every, first = suppress_masks(model, dev)
    caches = [DecoderCache() for _ in range(1 + len(views))]
    logits_v = []
    for feats, cache in zip((audio_features, *views), caches):
        all_logits = model.decoder(torch.tensor([prompt], device=dev), feats, cache)
        if no_speech is not None and not logits_v:
            no_speech.append(float(torch.softmax(all_logits[0, prompt.index(tok.sot)].float(), -1)[tok.no_speech]))
        logits_v.append(all_logits[:, -1])
    seqs: list[list[int]] = [[]]
    sums = torch.zeros(1, device=dev, dtype=torch.float64)
    finished: list[tuple[list[int], float]] = []
    want = max(1, round(beam * patience))
    for step in range(_limit(model, len(prompt), max_tokens)):
        mask = first if (step == 0 and not prefix) else every
        lp = torch.log_softmax(logits_v[0].float().masked_fill(mask, float("-inf")), -1)
        if views:
            for lg in logits_v[1:]:
                lp = lp + torch.log_softmax(lg.float().masked_fill(mask, float("-inf")), -1)
            lp = torch.log_softmax(lp / len(logits_v), -1)
        cand = (sums[:, None] + lp.double()).reshape(-1)
        top = cand.topk(min(2 * beam, cand.numel()))
        V = lp.shape[1]
        # after a forced prefix (mid-utterance) <|endoftext|> keeps a fair probability at
        # every phrase boundary: endings there would fill the finished list before the
        # continuation is done; so there a beam ends only where ending is its own best next token
        ends_ok = (lp.argmax(-1) == tok.eot).tolist() if prefix else None
        new_seqs, new_sums, rows = [], [], []
        for rank, (s, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            r, t = divmod(flat, V)
            if s == float("-inf"):
                break
            if t == tok.eot:
                if ends_ok is not None and not ends_ok[r]:
                    continue
                if rank < beam:  # an ending among the best `beam` candidates is a hypothesis
                    finished.append((seqs[r], s))
            elif len(new_seqs) < beam:  # live beams: the best `beam` candidates that go on
                new_seqs.append(seqs[r] + [t])
                new_sums.append(s)
                rows.append(r)
        if len(finished) >= want or not new_seqs:
            break
        seqs, sums = new_seqs, torch.tensor(new_sums, device=dev, dtype=torch.float64)
        nxt = torch.tensor([[s[-1]] for s in seqs], device=dev)
        logits_v = []
        for cache in caches:
            cache_reorder(cache, rows, cross=False)  # the beams share the utterance's cross-attention keys
            logits_v.append(model.decoder(nxt, None, cache)[:, -1])
    else:
        finished.extend(zip(seqs, sums.tolist()))
    if not finished:
        finished = list(zip(seqs, sums.tolist()))

    def score(t: list[int], s: float) -> float:
        n = max(1, len(t))
        return s / n if length_penalty is None else s / (((5 + n) / 6) ** length_penalty)

    finished.sort(key=lambda ts: score(*ts), reverse=True)
    return [(t, float(s), float(s) / (len(t) + 1)) for t, s in finished[:beam]]


@torch.no_grad()
def token_logprobs(model: WhisperModel, audio_features: torch.Tensor, seqs: list[list[int]],
                   prev: list[int] | None = None, prefix: list[int] | None = None, language: str = "en",
                   task: str = "transcribe") -> list[list[float]]:
    """The log-probability of each token of each sequence (teacher-forced, one batched
    decoder pass over audio_features (1, S, D)), under the masks the decoding applies: what
    :func:`greedy_decode`'s ``token_logps`` gives for its own output, for any sequences
    (e.g. a beam search's n-best: word confidences of its finals)."""
    if not seqs:
        return []
    prefix = list(prefix or [])[: max(0, model.dims.n_text_ctx // 2 - 1)]
    prompt = _prompt(model, language, task, prev) + prefix
    dev = audio_features.device
    every, first = suppress_masks(model, dev)
    L = max(len(q) for q in seqs)
    if L == 0:
        return [[] for _ in seqs]
    pad = model.tokenizer.eot
    rows = torch.tensor([prompt + q[:-1] + [pad] * (L - len(q)) if q else prompt + [pad] * (L - 1) for q in seqs],
                        device=dev)
    rows = rows[:, :len(prompt) + L - 1]
    logits = model.decoder(rows, audio_features.expand(len(seqs), -1, -1))[:, len(prompt) - 1:].float()
    masks = torch.stack([first if (k == 0 and not prefix) else every for k in range(L)])  # (L, V)
    lp = torch.log_softmax(logits.masked_fill(masks[None], float("-inf")), -1)
    return [[float(lp[i, k, t]) for k, t in enumerate(q)] for i, q in enumerate(seqs)]


def segment_token_limit(duration_s: float) -> int:
    """Most tokens a segment of ``duration_s`` seconds may decode to (8 + 8 per second):
    far above speech rates, a bound on looping output."""
    return int(8 + 8.0 * duration_s)


def segment_mel(model: WhisperModel, audio: torch.Tensor, min_pad_s: float = 2.0, pad_to_s: float = 0.0) -> torch.Tensor:
    """The log-mel a final encodes for one segment (T,) at 16 kHz: the audio followed by at
    least ``min_pad_s`` of silence and padded to at least ``pad_to_s`` seconds (30 s =
    Whisper's own window), never beyond 30 s -> (1, n_mels, 2 * S)."""
    from jrsv_stream.nn.whisper import log_mel

    total = min(30.0, max(audio.shape[-1] / 16000 + min_pad_s, pad_to_s))
    n = int(total * 16000) // 320 * 320
    a = torch.nn.functional.pad(audio[:n], (0, max(0, n - audio.shape[-1])))
    mel = log_mel(a, model.dims.n_mels)
    return mel[..., : mel.shape[-1] // 2 * 2]


@torch.no_grad()
def encode_segment(model: WhisperModel, audio: torch.Tensor, min_pad_s: float = 2.0, pad_to_s: float = 0.0) -> torch.Tensor:
    """Encoder features of one segment (T,) at 16 kHz, as a final decodes it
    (:func:`segment_mel`) -> (1, S, D)."""
    return model.encoder(segment_mel(model, audio, min_pad_s, pad_to_s))
