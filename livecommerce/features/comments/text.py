"""Comment text: the normal form for banned-word checks, the banned-word matcher, trimming.

Banned words are matched on a *normalised* form of both the stored word and the comment:
Unicode NFKC (full-width "ＢＡＤ" becomes "BAD", compatibility forms are unified), then
``casefold()``, then every whitespace, separator, punctuation, symbol, control and
invisible character (format characters such as U+200B and U+FEFF, and the other
default-ignorable code points: variation selectors, Hangul fillers) is deleted.

Deleting separators and punctuation is the point of the exercise: "b a d", "B.A.D",
"b\u200bad" and "傻 逼" are the usual ways to slip a word past a filter, and they all
collapse to the stored form ("bad", "傻逼").  A filter that only compared whole words
would be beaten by a single inserted space.

The accepted trade-off: with the spaces gone a banned word can also match *across* a
word boundary ("this hit" becomes "thishit", which contains "shit").  Chinese platforms
live with this; Chinese text has no spaces to begin with, so substring matching is the
only option there anyway.  Moderators should keep very short Latin words off the list.

Everything here is pure: no I/O, safe to call from the event loop.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

import ahocorasick  # type: ignore[import-not-found]

MAX_WORD_LEN = 50
"""Longest banned word accepted by :func:`clean_word`, in characters after normalising."""

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) that are *not* Cc/Cf/Z*:
# invisible characters (combining grapheme joiner, Mongolian/ideographic variation
# selectors, Hangul fillers, tags) that render as nothing and so can hide inside a word.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)

# Planes 0 and 1 hold every P*, S*, Z*, Cc and Cf character except the plane-14 tags,
# which _IGNORABLE_RANGES covers; scanning only them builds the table in ~20 ms instead of
# ~200 ms.  tests/features/comments/test_text.py checks this against a full scan.
_SCAN_LIMIT = 0x20000
_MAX_PASSES = 4


def _is_deleted(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "PSZ" or category in ("Cc", "Cf") or char.isspace()


def _build_delete_table() -> dict[int, None]:
    table: dict[int, None] = {cp: None for cp in range(_SCAN_LIMIT) if _is_deleted(chr(cp))}
    for first, last in _IGNORABLE_RANGES:
        table.update(dict.fromkeys(range(first, last + 1)))
    return table


# Built at import (~20 ms) so that no comment ever pays for it on the event loop.  A plain
# dict keeps memory bounded (~9k entries); code points it lacks are left unchanged.
_DELETE = _build_delete_table()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().translate(_DELETE)


def normalize(text: str) -> str:
    """The form of ``text`` used for banned-word checks (see the module docstring)."""
    folded = _fold(text)
    # Common case: the result is NFKC and casefolded, so folding again changes nothing.
    if unicodedata.is_normalized("NFKC", folded):
        return folded
    # Rare: deleting a character brought a letter next to a combining mark ("e.\u0301"),
    # or casefolding decomposed a letter ("ǰ").  Fold to a fixed point so that
    # normalize() is idempotent and stored words match the comments they came from.
    for _ in range(_MAX_PASSES):
        again = _fold(folded)
        if again == folded:
            break
        folded = again
    return folded


def clean_word(word: str) -> str:
    """Normalise a banned word for storage; ``ValueError`` if empty or too long."""
    cleaned = normalize(word)
    if not cleaned:
        raise ValueError("empty")
    if len(cleaned) > MAX_WORD_LEN:
        raise ValueError("too long")
    return cleaned


def _build_automaton(words: tuple[str, ...]) -> Any:
    # pyahocorasick refuses to search an automaton without keys, so an empty list
    # gets no automaton at all.
    if not words:
        return None
    automaton = ahocorasick.Automaton()
    for word in words:
        automaton.add_word(word, word)
    automaton.make_automaton()
    return automaton


class BannedWords:
    """An immutable set of banned words, matched as substrings of the normalised text."""

    __slots__ = ("_automaton", "_words")

    def __init__(self, words: Iterable[str] = ()) -> None:
        cleaned = {normalize(word) for word in words}
        cleaned.discard("")  # e.g. "..." or an emoji: nothing left to match on
        self._words = tuple(sorted(cleaned))
        self._automaton = _build_automaton(self._words)

    @property
    def words(self) -> tuple[str, ...]:
        """The cleaned words, sorted."""
        return self._words

    def __len__(self) -> int:
        return len(self._words)

    def __repr__(self) -> str:
        return f"BannedWords({len(self._words)} words)"

    def find(self, text: str) -> str | None:
        """The first banned word (cleaned form) that occurs in ``text``, else ``None``."""
        if self._automaton is None:
            return None
        # Matches come in order of where they end, so this is the earliest-ending one.
        for _end, word in self._automaton.iter(normalize(text)):
            found: str = word
            return found
        return None


def trim_comment(text: str, max_len: int) -> str:
    """``text`` without surrounding whitespace; ``ValueError`` if empty or too long.

    The limit counts characters (code points), not bytes: "😀" is one character.
    """
    trimmed = text.strip()
    if not trimmed:
        raise ValueError("empty")
    if len(trimmed) > max_len:
        raise ValueError("too long")
    return trimmed
