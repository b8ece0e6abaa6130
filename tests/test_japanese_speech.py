"""`say ja` with kanji: the text is read in kana, not spelt out as "Chinese letter".

Measured with the real eSpeak NG: its `ja` voice speaks each kanji as the English word "Chinese"
plus the Japanese "letter" (phonemes `(en)tS'aIni:z(ja)l'et@`), and some kana and symbols as
"Japanese letter" (`(en)dZ'ap@ni:z(ja)l'et@`). Without conversion 本日はお電話ありがとうございます。
lasts about 8 s against 2.5 s for its kana reading.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import re
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.voice import japanese, tts
from gateway.voice.tts import EspeakSpeech

KANJI_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
GREETING = "本日はお電話ありがとうございます。"
GREETING_KANA = "ほんじつはおでんわありがとうございます。"  # as a person would write it in kana


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / tts.SAMPLE_RATE


def raw_speech(text: str) -> bytes:
    """`text` through eSpeak as it is, the way `say ja` spoke it before kanji were converted."""
    with tts._Espeak.lock:
        return tts._Espeak.get().synthesize("ja", text)


def phonemes(text: str) -> str:
    """eSpeak's phonemes for `text` in the `ja` voice (what it is about to say)."""
    with tts._Espeak.lock:
        lib = tts._Espeak.get()._lib
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        assert lib.espeak_SetVoiceByName(b"ja") == 0
        buffer = ctypes.create_string_buffer(text.encode() + b"\0")
        cursor = ctypes.c_void_p(ctypes.addressof(buffer))
        clauses = []
        while cursor.value:  # one clause per call; the library sets the cursor to NULL at the end
            clauses.append(lib.espeak_TextToPhonemes(ctypes.byref(cursor), 1, 0).decode())
        return " | ".join(clauses)


def spells_letters(phoneme_text: str) -> bool:
    # "Chinese letter" / "Japanese letter": a switch to English and back for the word "letter".
    return "(ja)l'et@" in phoneme_text


def test_kanji_greeting_sounds_like_its_kana_reading() -> None:
    kana = seconds(tts._synthesize("ja", GREETING_KANA))
    spoken = seconds(tts._synthesize("ja", GREETING))
    assert abs(spoken - kana) <= 0.25 * kana, (spoken, kana)
    # The measure tells the two apart: unconverted, every kanji is "Chinese letter".
    assert seconds(raw_speech(GREETING)) > 2 * kana
    assert spells_letters(phonemes(GREETING))
    assert not spells_letters(phonemes(japanese.speakable(GREETING)))
    assert "(en)" not in phonemes(japanese.speakable(GREETING))


async def test_say_ja_with_kanji_writes_speech_of_the_kana_length(tmp_path: Path) -> None:
    base = await EspeakSpeech(tmp_path).say_file("ja", GREETING)
    with wave.open(base + ".wav") as wav:
        spoken = wav.getnframes() / wav.getframerate()
    kana = seconds(tts._synthesize("ja", GREETING_KANA))
    assert abs(spoken - kana) <= 0.25 * kana, (spoken, kana)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Particles as spoken (は -> ワ), long vowels as ー.
        (GREETING, "ホンジツワオデンワアリガトーゴザイマス。"),
        # 時 after a number is ジ (pykakasi says "とき").
        ("営業時間は午前9時から午後6時までです。", "エーギョージカンワゴゼン9ジカラゴゴ6ジマデデス。"),
        # Full-width digits become ASCII: eSpeak is silent on １２３４.
        ("お客様のご予約番号は１２３４です。", "オキャクサマノゴヨヤクバンゴーワ1234デス。"),
        # Latin stays; a space keeps the kana after it from being spelt letter by letter.
        # 会社 after a noun is ガイシャ.
        ("ABC株式会社のサポート窓口です。", "ABC カブシキガイシャノサポートマドグチデス。"),
        # 今日は is "today", not こんにちは; を is オ.
        (
            "担当者に転送します。今日はありがとうございました。",
            "タントーシャニテンソーシマス。キョーワアリガトーゴザイマシタ。",
        ),
        # A wave dash before a number is "to"; the middle dot a pause.
        (
            "平日10時〜17時、土日・祝日は休業です。",
            "ヘージツ10ジカラ17ジ、ドニチ、シュクジツワキューギョーデス。",
        ),
        # 日 at the end of a compound is ビ.
        (
            "月曜日から金曜日、3〜5営業日以内にお届けします。",
            "ゲツヨービカラキンヨービ、3カラ5エーギョービイナイニオトドケシマス。",
        ),
        # Days and people counted in digits have readings of their own.
        (
            "12月1日から3日間、2人までご利用いただけます。",
            "12ガツツイタチカラミッカカン、フタリマデゴリヨーイタダケマス。",
        ),
        ("12月5日までにお支払いください。", "12ガツイツカマデニオシハライクダサイ。"),
    ],
)
def test_real_sentences_become_their_reading(text: str, expected: str) -> None:
    out = japanese.speakable(text)
    assert out == expected
    assert not KANJI_RE.search(out)
    assert not spells_letters(phonemes(out))


def test_no_kanji_remain_in_a_voicemail_greeting() -> None:
    text = "留守番電話サービスに接続します。発信音の後に、お名前と電話番号をお話しください。NTTドコモ様々"
    out = japanese.speakable(text)
    assert not KANJI_RE.search(out), out
    assert "アトニ" in out and "デンワバンゴー" in out and "NTT ドコモ" in out
    assert not spells_letters(phonemes(out))


def test_other_languages_are_not_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(japanese, "speakable", lambda text: seen.append(text) or text)
    tts._synthesize("en", "Hello 本")
    assert seen == []


def test_conversion_is_safe_from_many_threads() -> None:
    texts = ["営業時間は午前9時から午後6時までです。", GREETING, "担当者に転送します。"] * 20
    expected = [japanese.speakable(t) for t in texts[:3]] * 20
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(japanese.speakable, texts)) == expected


async def test_say_converts_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    real = japanese.speakable

    def recording(text: str) -> str:
        threads.append(threading.current_thread())
        return real(text)

    monkeypatch.setattr(japanese, "speakable", recording)
    loop_thread = threading.current_thread()
    await asyncio.wait_for(EspeakSpeech(tmp_path).say_file("ja", "少々お待ちください。"), 30)
    assert threads and loop_thread not in threads


async def test_speech_cached_before_kanji_were_read_is_not_reused(tmp_path: Path) -> None:
    # A file left by an older gateway under the key it used then: sha256("ja" NUL text).
    old = tmp_path / "tts" / (hashlib.sha256(f"ja\0{GREETING}".encode()).hexdigest() + ".wav")
    old.parent.mkdir()
    old.write_bytes(b"stale speech that spells out every kanji")
    base = await EspeakSpeech(tmp_path).say_file("ja", GREETING)
    assert base + ".wav" != str(old)
    with wave.open(base + ".wav") as wav:
        assert wav.getnframes() > 0
    assert old.read_bytes() == b"stale speech that spells out every kanji"  # left alone, never played
