"""Numbers as spoken words, for scoring and aligning texts that write digits ("Press 1")
against references and CTC heads that spell them ("press one")."""

from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """Cardinal number in words, 0 <= n < 10**9 (``162`` -> "one hundred sixty two")."""
    if n < 0 or n >= 10**9:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)  # unreachable


_DIGITS = re.compile(r"\d+")


def spell_digits(text: str) -> str:
    """Every run of digits in ``text`` as words ("10 of clubs" -> " ten  of clubs"; runs of
    ten or more digits are dropped)."""
    return _DIGITS.sub(lambda m: f" {number_words(int(m.group()))} " if len(m.group()) < 10 else " ", text)
