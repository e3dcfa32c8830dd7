"""Comment text: normal form, banned-word matching, clean_word and trim_comment."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from livecommerce.features.comments import text
from livecommerce.features.comments.text import BannedWords, clean_word, normalize, trim_comment


@pytest.mark.parametrize(
    "raw",
    [
        "bad",
        "Bad",
        "BAD",
        "ＢＡＤ",
        "b a d",
        "B.A.D",
        "b\u200bad",
        "\ufeffb-a_d!",
        "b\u3000a\u00a0d",
    ],
)
def test_disguises_normalise_to_the_plain_word(raw: str) -> None:
    assert normalize(raw) == "bad"


def test_normalize_keeps_letters_digits_and_chinese() -> None:
    assert normalize("傻 逼，Ｘ１！") == "傻逼x1"
    assert normalize("Straße") == "strasse"  # casefold, not lower()
    assert normalize("😀 ... \t\n") == ""


def test_invisible_default_ignorables_are_removed() -> None:
    # Variation selector, Hangul filler, combining grapheme joiner, a tag character.
    assert normalize("b\ufe0fa\u3164d\u034f\U000e0041") == "bad"


def test_removing_a_separator_recomposes_the_neighbours() -> None:
    # "e", ".", combining acute: once the dot is gone the accent belongs to the "e", and
    # the result must equal the precomposed letter (and be a fixed point).
    assert normalize("e.\u0301") == normalize("É") == "\u00e9"


def test_delete_table_matches_a_full_unicode_scan() -> None:
    # The table only scans planes 0-1 plus listed ranges; prove nothing is missed.
    scanned = {cp for cp in range(sys.maxunicode + 1) if text._is_deleted(chr(cp))}
    assert scanned <= text._DELETE.keys()
    extra = {chr(cp) for cp in text._DELETE.keys() - scanned}
    assert all(unicodedata.category(c) in ("Mn", "Lo", "Cn", "So") for c in extra)


def test_banned_words_see_through_disguises() -> None:
    banned = BannedWords(["bad", "傻逼"])
    for disguised in ["so ＢＡＤ", "B.A.D!", "b\u200bad", "really Bad", "你个傻 逼", "傻.逼"]:
        assert banned.find(disguised) is not None, disguised
    assert banned.find("你个傻 逼") == "傻逼"
    assert banned.find("Ｂ a D") == "bad"


def test_clean_text_is_not_matched() -> None:
    banned = BannedWords(["bad", "傻逼"])
    assert banned.find("what a good lipstick, 颜色真好看") is None
    assert banned.find("") is None
    assert banned.find("b a") is None  # a partial word is not the word


def test_find_returns_the_earliest_match() -> None:
    banned = BannedWords(["zzz", "abc"])
    assert banned.find("abc zzz") == "abc"
    assert banned.find("zzz abc") == "zzz"


def test_match_across_word_boundary_is_the_accepted_trade_off() -> None:
    assert BannedWords(["shit"]).find("this hit") == "shit"


def test_words_are_cleaned_deduplicated_and_sorted() -> None:
    banned = BannedWords(["Zeta", "ＢＡＤ", "b.a.d", "...", "", "傻 逼"])
    assert banned.words == ("bad", "zeta", "傻逼")
    assert len(banned) == 3


def test_empty_list_matches_nothing() -> None:
    for banned in (BannedWords([]), BannedWords(), BannedWords(["...", " ", "😀"])):
        assert len(banned) == 0 and banned.words == ()
        assert banned.find("anything at all 傻逼") is None


def test_clean_word() -> None:
    assert clean_word("  ＢａＤ ") == "bad"
    assert clean_word("x" * 50) == "x" * 50
    assert clean_word("x." * 50) == "x" * 50  # the limit applies after cleaning
    with pytest.raises(ValueError, match="empty"):
        clean_word("... !!")
    with pytest.raises(ValueError, match="empty"):
        clean_word("")
    with pytest.raises(ValueError, match="too long"):
        clean_word("x" * 51)


def test_trim_comment_strips_and_bounds_the_length() -> None:
    assert trim_comment("  hello \n", 100) == "hello"
    assert trim_comment("x" * 100, 100) == "x" * 100
    assert trim_comment("  " + "x" * 100 + "  ", 100) == "x" * 100  # stripped first
    assert trim_comment("😀" * 100, 100) == "😀" * 100  # characters, not UTF-8 bytes
    assert trim_comment("好" * 100, 100) == "好" * 100
    with pytest.raises(ValueError, match="too long"):
        trim_comment("x" * 101, 100)
    with pytest.raises(ValueError, match="too long"):
        trim_comment("😀" * 101, 100)
    for blank in ["", "   ", "\t\n", "\u3000"]:
        with pytest.raises(ValueError, match="empty"):
            trim_comment(blank, 100)


# Letters that interact with NFKC / casefold, marks, separators and invisible characters,
# mixed with arbitrary characters, so idempotence is exercised where it is fragile.
_TRICKY = st.sampled_from(
    list("aAeEiIsSjJ.- \u0301\u030c\u0307\u0345ǰΐßẞİﬁＡ１\u200b\u3000\ufe0f傻逼가가\u1100\u1161")
)


@given(st.text(alphabet=st.characters() | _TRICKY))
def test_normalize_is_idempotent(raw: str) -> None:
    once = normalize(raw)
    assert normalize(once) == once


_SEPARATORS = st.sampled_from([" ", ".", "-", "*", "\u200b", "\u3000", "\ufeff", "_", "\t"])
_WORD_CHARS = st.characters(categories=["Lu", "Ll", "Lo", "Nd"]) | st.sampled_from(list("傻逼abc"))


@given(st.data(), st.text(alphabet=_WORD_CHARS, min_size=1, max_size=12))
def test_a_word_with_random_separators_is_found(data: st.DataObject, word: str) -> None:
    cleaned = normalize(word)
    assume(cleaned)  # Hangul fillers are category Lo, yet invisible and so deleted
    seps = data.draw(st.lists(st.text(_SEPARATORS, max_size=3), min_size=len(word)))
    disguised = "".join(char + sep for char, sep in zip(word, seps, strict=False))
    prefix = data.draw(st.sampled_from(["", "hello ", "你好，"]))
    assert BannedWords([word]).find(prefix + disguised + " bye") == cleaned
