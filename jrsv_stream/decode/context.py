"""Context biasing from a hotword list: an Aho-Corasick graph over token ids.

The scheme of WeNet's / icefall's context graph (reimplemented here on flat lists):

- every hotword is a path of token ids from the root of a trie; a node's ``node_score`` is
  ``depth * context_score`` (the bonus a prefix holds while it matches that far);
- stepping a token follows the trie edge when there is one (``+context_score``); otherwise
  it follows fail arcs (longest proper suffix that is still in the trie), and the score
  change is ``node_score[new] - node_score[old]``: a partial match that breaks gives its
  bonus back, so partial matches do not stick;
- reaching the end of a hotword (or of one that is a suffix of the current match) adds
  ``output_score``: the completed hotword's bonus, kept for good;
- :meth:`ContextGraph.finalize` removes the bonus of a match still open at the end of
  decoding (``-node_score``).

So a finished prefix holds ``len(hotword) * context_score`` per completed hotword and
nothing for unfinished ones. States are plain ints (node ids; 0 = root), so a prefix beam
hypothesis carries its context state as one int and one float.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Iterable, Sequence

ROOT = 0


class ContextGraph:
    """Aho-Corasick hotword graph over token ids.

    Args:
        hotwords: token-id sequences (empty ones are ignored, duplicates merged).
        context_score: bonus per matched token (log domain, > 0).
        scores: optional bonus per matched token of each hotword (same length as
            ``hotwords``; default ``context_score`` for all). Where hotwords share a
            prefix, the shared tokens get the largest of their bonuses.

    Raises:
        ValueError: ``context_score`` is negative or a token id is negative.
    """

    def __init__(self, hotwords: Iterable[Sequence[int]], context_score: float, scores: Sequence[float] | None = None):
        if context_score < 0:
            raise ValueError(f"context_score must be >= 0, got {context_score}")
        self.context_score = float(context_score)
        words = [tuple(int(t) for t in h) for h in hotwords]
        per = [float(context_score)] * len(words) if scores is None else [float(x) for x in scores]
        if len(per) != len(words):
            raise ValueError(f"{len(per)} scores for {len(words)} hotwords")
        if any(x < 0 for x in per):
            raise ValueError(f"hotword scores must be >= 0, got {per}")
        best: dict[tuple[int, ...], float] = {}
        for w, x in zip(words, per):
            if w:
                best[w] = max(x, best.get(w, x))
        self.hotwords: tuple[tuple[int, ...], ...] = tuple(best)
        self.next: list[dict[int, int]] = [{}]
        self.parent: list[int] = [ROOT]
        self.token_score: list[float] = [0.0]  # bonus of the edge into the node
        self.is_end: list[bool] = [False]
        self.fail: list[int] = [ROOT]
        for word, x in best.items():
            node = ROOT
            for tok in word:
                if tok < 0:
                    raise ValueError(f"negative token id in hotword {word}")
                child = self.next[node].get(tok)
                if child is None:
                    child = len(self.next)
                    self.next[node][tok] = child
                    self.next.append({})
                    self.parent.append(node)
                    self.token_score.append(x)
                    self.is_end.append(False)
                    self.fail.append(ROOT)
                else:
                    self.token_score[child] = max(self.token_score[child], x)
                node = child
            self.is_end[node] = True
        self.node_score: list[float] = [0.0] * self.num_nodes
        for n in range(1, self.num_nodes):  # parents are created before their children
            self.node_score[n] = self.node_score[self.parent[n]] + self.token_score[n]
        self.output_score: list[float] = [0.0] * self.num_nodes
        self._fill_fail_and_output()

    @property
    def num_nodes(self) -> int:
        return len(self.next)

    def _fill_fail_and_output(self) -> None:
        # Breadth-first, so a node's fail target (shallower) is final before the node.
        own = [self.node_score[n] if self.is_end[n] else 0.0 for n in range(self.num_nodes)]
        queue = deque(self.next[ROOT].values())
        for n in queue:
            self.fail[n] = ROOT
            self.output_score[n] = own[n]
        while queue:
            node = queue.popleft()
            for tok, child in self.next[node].items():
                f = self.fail[node]
                while tok not in self.next[f] and f != ROOT:
                    f = self.fail[f]
                target = self.next[f].get(tok, ROOT)
                self.fail[child] = target if target != child else ROOT
                # Completed hotwords ending here: this node's own plus all that end at its
                # fail target (suffixes), already accumulated there.
                self.output_score[child] = own[child] + self.output_score[self.fail[child]]
                queue.append(child)

    def forward(self, node: int, token: int) -> tuple[float, int]:
        """One token from ``node``: ``(score change, next node)``."""
        child = self.next[node].get(token)
        if child is not None:
            return self.token_score[child] + self.output_score[child], child
        f = node
        while f != ROOT:
            f = self.fail[f]
            child = self.next[f].get(token)
            if child is not None:
                break
        else:
            child = self.next[ROOT].get(token, ROOT)
        return self.node_score[child] - self.node_score[node] + self.output_score[child], child

    def finalize(self, node: int) -> float:
        """Score change at the end of decoding: gives back an open partial match's bonus."""
        return -self.node_score[node]

    def score_sequence(self, tokens: Sequence[int], finalize: bool = True) -> float:
        """Total bonus of a token sequence (for tests and for rescoring outside the search)."""
        node, total = ROOT, 0.0
        for t in tokens:
            delta, node = self.forward(node, int(t))
            total += delta
        return total + (self.finalize(node) if finalize else 0.0)


@functools.lru_cache(maxsize=64)
def build_context_graph(hotwords: tuple[tuple[int, ...], ...], context_score: float,
                        scores: tuple[float, ...] | None = None) -> ContextGraph | None:
    """Cached :class:`ContextGraph` for a config's hotwords (None when there are none)."""
    if not hotwords or (context_score == 0.0 and not scores):
        return None
    return ContextGraph(hotwords, context_score, scores)


def hotwords_to_ids(words: Iterable[str], tokenizer) -> tuple[tuple[int, ...], ...]:
    """Tokenize hotword strings (e.g. streamers' names) for ``PrefixBeamConfig.hotwords``.

    Args:
        words: hotwords or phrases, normalized like the training text.
        tokenizer: a :class:`jrsv_stream.decode.tokenizer.Tokenizer`.

    Returns:
        One token-id tuple per non-empty hotword, as the tokenizer splits it mid-sentence
        (the first piece carries the word-start mark).
    """
    out = []
    for w in words:
        w = w.strip()
        if w:
            ids = tuple(tokenizer.encode(w))
            if ids:
                out.append(ids)
    return tuple(dict.fromkeys(out))
