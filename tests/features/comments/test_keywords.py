"""Keywords of a bullet comment for the danmaku keyword cloud."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.features.comments.keywords import MAX_TOKEN_LEN, STOP_WORDS, keywords, warm_up


def test_warm_up_is_idempotent_and_quiet() -> None:
    warm_up()
    warm_up()
    assert logging.getLogger("jieba").getEffectiveLevel() >= logging.WARNING


def test_chinese_sentence_is_cut_into_dictionary_words() -> None:
    # jieba cuts this as 这个/口红/颜色/真/好看: 这个 is a stop word, 真 a single character.
    assert keywords("这个口红颜色真好看") == ["口红", "颜色", "好看"]
    assert keywords("今天的直播间福利太多了") == ["今天", "直播间", "福利"]


def test_live_shopping_words_stay_whole() -> None:
    # The stock dictionary would cut 主播 into 主/播 and 包邮 into 包/邮 (both then dropped).
    assert keywords("主播好美，包邮吗？") == ["主播", "包邮"]
    assert keywords("家人们快上链接") == ["上链接"]  # 家人们 is a form of address: stop word


def test_english_is_casefolded_and_stop_words_dropped() -> None:
    assert keywords("This is THE best Lipstick, I love this lipstick!") == [
        "best",
        "lipstick",
        "love",
    ]
    assert keywords("ＬＩＰＳＴＩＣＫ Straße") == ["lipstick", "strasse"]  # NFKC + casefold
    assert keywords("I've seen it, don't buy") == ["seen", "buy"]  # contraction pieces


def test_mixed_scripts_are_split_by_script() -> None:
    assert keywords("iPhone15的颜色") == ["iphone15", "颜色"]
    assert keywords("snake_case ありがとう 사랑해") == ["snake", "case", "ありがとう", "사랑해"]


def test_laughter_numbers_and_emoji_spam_are_not_keywords() -> None:
    assert keywords("666666 2333 ６６６ 哈哈哈哈哈 哈哈 hahaha haha aaaa 😀😀😀 !!!") == []
    assert keywords("哈哈哈哈哈口红666") == ["口红"]


def test_short_and_long_tokens_are_dropped() -> None:
    assert keywords("a b c 好 x") == []
    assert keywords("x" * (MAX_TOKEN_LEN - 1) + "y") == ["x" * (MAX_TOKEN_LEN - 1) + "y"]
    assert keywords("x" * MAX_TOKEN_LEN + "y") == []


def test_each_keyword_once_per_comment() -> None:
    assert keywords("口红口红 口红！Lipstick lipstick LIPSTICK") == ["口红", "lipstick"]


def test_empty_and_punctuation_only() -> None:
    assert keywords("") == []
    assert keywords("？？？。。。 ...") == []


@settings(max_examples=300, deadline=None)  # the first example may load jieba's dictionary
@given(st.text(alphabet=st.characters() | st.sampled_from(list("口红颜色好看哈6 ab"))))
def test_keywords_respect_the_filters(raw: str) -> None:
    found = keywords(raw)
    assert len(found) == len(set(found))
    for word in found:
        assert 1 < len(word) <= MAX_TOKEN_LEN
        assert word not in STOP_WORDS and not word.isdigit()
        assert len(set(word)) > 1
