"""Japanese text -> what eSpeak NG's `ja` voice reads correctly.

The voice only knows kana: each kanji is spoken as "Chinese letter" (in English), and some
symbols as "Japanese letter". MeCab (through `fugashi`) with the UniDic dictionary
(`unidic-lite`) splits the text into words and gives each its pronunciation in katakana, which
is the reading in context (午前9時 -> ゴゼン 9 ジ, 今日は -> キョウ ワ), with particles as spoken
(は -> ワ, を -> オ) and long vowels as ー. pykakasi was tried first: it reads 9時 as "9とき"
and 今日は as "こんにちは", and is GPL-licensed.

MeCab's tagger is not safe to share between threads, so every parse holds one lock; it is
built on first use, which is in the synthesis worker thread (`tts._synthesize`), never on the
event loop.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from typing import Any

# Kanji (with 々 and 〆) and kana: a word made of these is read from the dictionary.
_JAPANESE = r"[\u3005\u3006\u3041-\u3096\u30a1-\u30fa\u30fc\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_JAPANESE_RE = re.compile(_JAPANESE)
# Kana written right against latin letters (NTTドコモ) are spelt one by one, the voiced ones as
# "Japanese letter": a space between them keeps the word whole.
_LATIN_EDGE_RE = re.compile(rf"(?<=[A-Za-z])(?={_JAPANESE})|(?<={_JAPANESE})(?=[A-Za-z])")
# eSpeak says "Japanese letter" for these. A wave dash before a number is a range (9時〜17時,
# "9 to 17"); anywhere else it only draws out the sound. The middle dot separates list items.
_RANGE_RE = re.compile(r"[\u301c~]\s*(?=\d)")
_WAVE_RE = re.compile(r"[\u301c~]")
_MIDDLE_DOT_RE = re.compile(r"[\u30fb]")
# Counters whose reading depends on the number, which the dictionary reads wrong after digits
# (5日 -> "5カ", 2人 -> "2ニン"). Days of the month from 1 to 10, 14, 20 and 24 have their own
# words; other days are the number and ニチ. 1日 is the 1st after a month (12月1日), else one day.
_DAYS = {
    2: "フツカ",
    3: "ミッカ",
    4: "ヨッカ",
    5: "イツカ",
    6: "ムイカ",
    7: "ナノカ",
    8: "ヨーカ",
    9: "ココノカ",
    10: "トーカ",
    14: "ジューヨッカ",
    20: "ハツカ",
    24: "ニジューヨッカ",
}
_DAY_RE = re.compile(r"(月)?(?<!\d)(\d{1,2})日(間)?")
_PEOPLE_RE = re.compile(r"(?<!\d)([12])人")
# UniDic reads words on their own; at the end of a compound 日 and 会社 are voiced (営業日 ->
# エーギョービ, 株式会社 -> カブシキガイシャ). Other words it marks as able to voice mostly are
# not (担当者 is タントーシャ), so only these two, the ones business greetings are full of.
_VOICED_AFTER_NOUN = {"日": "ビ", "会社": "ガイシャ"}


class _Tagger:
    lock = threading.Lock()
    _instance: Any = None

    @classmethod
    def get(cls) -> Any:
        """The tagger; call with `lock` held."""
        if cls._instance is None:
            import fugashi

            # Finds its dictionary in the unidic-lite package on its own.
            cls._instance = fugashi.Tagger()
        return cls._instance


def speakable(text: str) -> str:
    """`text` with every Japanese word spelt in katakana as pronounced; digits, latin letters,
    spaces and punctuation kept. Blocking (the first call loads the dictionary): run it off the
    event loop."""
    # NFKC turns full-width digits and letters into ASCII (eSpeak is silent on １２３４) and
    # half-width katakana into full width.
    text = unicodedata.normalize("NFKC", text)
    text = _RANGE_RE.sub("から", text)
    text = _MIDDLE_DOT_RE.sub("、", _WAVE_RE.sub("", text))
    text = _PEOPLE_RE.sub(lambda m: "ヒトリ" if m[1] == "1" else "フタリ", _DAY_RE.sub(_days, text))
    out: list[str] = []
    previous_noun = False
    with _Tagger.lock:
        for word in _Tagger.get()(text):
            surface: str = word.surface
            feature = word.feature
            pron = feature.pron if _JAPANESE_RE.search(surface) else None
            if not isinstance(pron, str) or pron in ("", "*"):
                out.append(word.white_space + surface)
                previous_noun = False
                continue
            if previous_noun and not word.white_space:
                pron = _VOICED_AFTER_NOUN.get(surface, pron)
            out.append(word.white_space + pron)
            previous_noun = feature.pos1 == "名詞"
    return _LATIN_EDGE_RE.sub(" ", "".join(out))


def _days(match: re.Match[str]) -> str:
    month, number, span = match[1] or "", int(match[2]), match[3] or ""
    if number == 1:
        reading = "ツイタチ" if month and not span else "イチニチ"
    else:
        reading = _DAYS.get(number, f"{number}ニチ")
    return month + reading + ("カン" if span else "")
