"""Playback media cache (fetch, decode MP3/WAV, 8 kHz mono WAV) and eSpeak NG speech."""

from __future__ import annotations

import array
import asyncio
import hashlib
import io
import itertools
import math
import random
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import lameenc
import pytest
import pytest_asyncio

from gateway.egress.client import policy_session
from gateway.egress.policy import SsrfPolicy
from gateway.voice import media, tts
from gateway.voice.fetcher import PolicyFetcher
from gateway.voice.interfaces import FetchRefused, MediaError
from gateway.voice.media import MediaCache, sniff_audio
from gateway.voice.tts import EspeakSpeech
from tests.conftest import wait_for
from tests.test_ssrf import MiniServer

TONE_HZ = 440.0


def sine_pcm(rate: int, channels: int, seconds: float, hz: float = TONE_HZ) -> bytes:
    frames = int(rate * seconds)
    samples = array.array("h")
    for i in range(frames):
        v = int(12000 * math.sin(2 * math.pi * hz * i / rate))
        samples.extend([v] * channels)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def make_wav(rate: int = 44100, channels: int = 2, seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(sine_pcm(rate, channels, seconds))
    return buf.getvalue()


def make_mp3(rate: int = 44100, channels: int = 2, seconds: float = 1.5) -> bytes:
    enc = lameenc.Encoder()
    enc.set_bit_rate(128)
    enc.set_in_sample_rate(rate)
    enc.set_channels(channels)
    enc.set_quality(2)
    return bytes(enc.encode(sine_pcm(rate, channels, seconds)) + enc.flush())


WAV = make_wav()  # 44.1 kHz stereo, 1.0 s
MP3 = make_mp3()  # 44.1 kHz stereo, 1.5 s
GARBAGE = random.Random(7).randbytes(20_000)


def read_wav(base: str) -> tuple[wave._wave_params, array.array[int]]:
    with wave.open(base + ".wav", "rb") as w:
        params = w.getparams()
        samples = array.array("h", w.readframes(params.nframes))
    if sys.byteorder == "big":
        samples.byteswap()
    return params, samples


def assert_8k_mono_16(params: wave._wave_params) -> None:
    assert (params.nchannels, params.sampwidth, params.framerate, params.comptype) == (1, 2, 8000, "NONE")


def mtime(base: str) -> int:
    return Path(base + ".wav").stat().st_mtime_ns


def rms(samples: array.array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def dominant_hz(samples: array.array[int], rate: int) -> float:
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[MiniServer]:
    srv = MiniServer()
    srv.files = {
        "/tone.wav": (WAV, "audio/wav"),
        "/tone.mp3": (MP3, "audio/mpeg"),
        "/mislabelled.wav": (MP3, "audio/wav"),  # an MP3 behind a .wav name and type
        "/mislabelled.mp3": (WAV, "audio/mpeg"),
        "/garbage.mp3": (GARBAGE, "audio/mpeg"),
        "/fake-riff.wav": (b"RIFF\x00\x10\x00\x00WAVE" + GARBAGE, "audio/wav"),
        "/page.html": (b"<html><body>hello</body></html>", "text/html"),
    }
    await srv.start()
    yield srv
    await srv.stop()


@pytest_asyncio.fixture
async def fetcher() -> AsyncIterator[PolicyFetcher]:
    policy = SsrfPolicy(allow_private=False, allow_loopback=True)  # the test server is loopback
    async with policy_session(policy) as session:
        yield PolicyFetcher(session)


@pytest.fixture
def cache(fetcher: PolicyFetcher, tmp_path: Path) -> MediaCache:
    return MediaCache(fetcher, tmp_path, max_bytes=1_000_000, timeout=5)


# --------------------------------------------------------------------------- media


@pytest.mark.parametrize(
    ("path", "seconds"),
    [("/tone.wav", 1.0), ("/tone.mp3", 1.5), ("/mislabelled.wav", 1.5), ("/mislabelled.mp3", 1.0)],
)
async def test_playback_file_is_8k_mono_16bit_wav(
    path: str, seconds: float, server: MiniServer, cache: MediaCache, tmp_path: Path
) -> None:
    url = server.url(path)
    base = await cache.playback_file(url)
    assert not base.endswith(".wav")
    assert Path(base) == tmp_path / "media" / hashlib.sha256(url.encode()).hexdigest()
    assert Path(base).is_absolute()
    params, samples = read_wav(base)
    assert_8k_mono_16(params)
    assert params.nframes / 8000 == pytest.approx(seconds, rel=0.05)
    assert rms(samples) > 3000  # the 12000-amplitude tone survived the mixdown
    assert dominant_hz(samples, 8000) == pytest.approx(TONE_HZ, rel=0.03)  # resampled, not respeeded
    assert [p.name for p in (tmp_path / "media").iterdir()] == [Path(base).name + ".wav"]


async def test_second_call_served_from_cache(server: MiniServer, cache: MediaCache, tmp_path: Path) -> None:
    url = server.url("/tone.mp3")
    first = await cache.playback_file(url)
    before = mtime(first)
    second = await cache.playback_file(url)
    assert first == second
    assert server.count("/tone.mp3") == 1
    assert mtime(first) == before
    # A fresh cache over the same directory (a restart) also reuses the file.
    again = MediaCache(cache._fetcher, tmp_path, max_bytes=1_000_000, timeout=5)
    assert await again.playback_file(url) == first
    assert server.count("/tone.mp3") == 1


async def test_concurrent_calls_share_one_download(server: MiniServer, cache: MediaCache) -> None:
    server.gate = asyncio.Event()
    url = server.url("/tone.wav")
    tasks = [asyncio.create_task(cache.playback_file(url)) for _ in range(5)]
    await asyncio.sleep(0.2)  # every caller is waiting on the held response
    assert server.count("/tone.wav") == 1
    server.gate.set()
    paths = await asyncio.gather(*tasks)
    assert len(set(paths)) == 1
    assert server.count("/tone.wav") == 1


async def test_queued_decodes_leave_the_loops_shared_executor_free(
    server: MiniServer, cache: MediaCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many callers' new media being decoded at once must not hold up what else waits on the
    loop's default executor (DNS lookups of action_urls)."""
    release = threading.Event()

    def stuck(data: bytes, max_seconds: float) -> bytes:
        release.wait(5)  # a long file
        return b"\0\0" * 800

    monkeypatch.setattr(media, "decode_to_pcm", stuck)
    url = server.url("/tone.wav")
    plays = [asyncio.ensure_future(cache.playback_file(f"{url}?n={n}")) for n in range(40)]
    try:

        async def all_fetched() -> bool:
            return server.count("/tone.wav") == 40

        await wait_for(all_fetched)
        await asyncio.sleep(0.05)  # every decode submitted
        # What an action_url's DNS lookup does, while every decode is still running or queued.
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 2)
    finally:
        release.set()
    assert len(set(await asyncio.gather(*plays))) == 40


async def test_one_waiter_cancelled_does_not_cancel_the_download(
    server: MiniServer, cache: MediaCache
) -> None:
    server.gate = asyncio.Event()
    url = server.url("/tone.wav")
    hung_up = asyncio.create_task(cache.playback_file(url))
    stays = asyncio.create_task(cache.playback_file(url))
    await asyncio.sleep(0.1)
    hung_up.cancel()
    server.gate.set()
    base = await stays
    assert_8k_mono_16(read_wav(base)[0])
    assert hung_up.cancelled()
    assert server.count("/tone.wav") == 1


@pytest.mark.parametrize("path", ["/garbage.mp3", "/fake-riff.wav", "/page.html"])
async def test_undecodable_content_is_media_error(
    path: str, server: MiniServer, cache: MediaCache, tmp_path: Path
) -> None:
    with pytest.raises(MediaError) as info:
        await cache.playback_file(server.url(path))
    assert not isinstance(info.value, FetchRefused)
    media = tmp_path / "media"
    assert not media.exists() or list(media.iterdir()) == []  # nothing half-written left behind
    # Failures are not cached: the next call fetches again.
    with pytest.raises(MediaError):
        await cache.playback_file(server.url(path))
    assert server.count(path) == 2


async def test_http_error_status_is_media_error(server: MiniServer, cache: MediaCache) -> None:
    with pytest.raises(MediaError, match="HTTP 404"):
        await cache.playback_file(server.url("/status/404"))


async def test_too_long_audio_refused(server: MiniServer, fetcher: PolicyFetcher, tmp_path: Path) -> None:
    short = MediaCache(fetcher, tmp_path, max_bytes=1_000_000, timeout=5, max_seconds=0.5)
    with pytest.raises(MediaError, match=r"longer than 0\.5 s"):
        await short.playback_file(server.url("/tone.mp3"))


async def test_media_over_size_cap_refused(
    server: MiniServer, fetcher: PolicyFetcher, tmp_path: Path
) -> None:
    small = MediaCache(fetcher, tmp_path, max_bytes=10_000, timeout=5)
    with pytest.raises(FetchRefused, match="10000-byte cap"):
        await small.playback_file(server.url("/tone.wav"))


async def test_ssrf_policy_applies_to_media(server: MiniServer, tmp_path: Path) -> None:
    policy = SsrfPolicy(allow_private=True, allow_loopback=False)
    async with policy_session(policy) as session:
        strict = MediaCache(PolicyFetcher(session), tmp_path, max_bytes=1_000_000, timeout=5)
        with pytest.raises(FetchRefused, match="loopback"):
            await strict.playback_file(server.url("/tone.wav"))
    assert server.hits == []


def test_sniffing_is_by_content() -> None:
    assert sniff_audio(WAV) == "wav"
    assert sniff_audio(MP3) == "mp3"
    assert sniff_audio(b"ID3\x03\x00\x00\x00\x00\x00\x00" + MP3) == "mp3"  # empty ID3v2 tag first
    assert sniff_audio(GARBAGE) is None
    assert sniff_audio(b"<html>") is None
    assert sniff_audio(b"") is None


# --------------------------------------------------------------------------- speech


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "Hello, this is a test of the gateway."), ("ja", "こんにちは、テストです。")],
)
async def test_say_file_is_8k_mono_speech(lang: str, text: str, tmp_path: Path) -> None:
    speech = EspeakSpeech(tmp_path)
    base = await speech.say_file(lang, text)
    assert Path(base).parent == tmp_path / "tts"
    voice = "ja+kana" if lang == "ja" else lang
    assert Path(base).name == hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()
    params, samples = read_wav(base)
    assert_8k_mono_16(params)
    assert 0.8 < params.nframes / 8000 < 6.0
    assert rms(samples) > 300  # not silence
    assert max(abs(s) for s in samples) > 2000


async def test_say_cache_hit_skips_synthesis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = tts._synthesize

    def counting(lang: str, text: str) -> bytes:
        calls.append((lang, text))
        return real(lang, text)

    monkeypatch.setattr(tts, "_synthesize", counting)
    speech = EspeakSpeech(tmp_path)
    first = await speech.say_file("en", "Please hold.")
    before = mtime(first)
    assert await speech.say_file("en", "Please hold.") == first
    assert await EspeakSpeech(tmp_path).say_file("en", "Please hold.") == first
    assert mtime(first) == before
    assert calls == [("en", "Please hold.")]
    # Same text in another language is another file.
    other = await speech.say_file("ja", "Please hold.")
    assert other != first
    assert len(calls) == 2


async def test_concurrent_say_synthesizes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = tts._synthesize

    def counting(lang: str, text: str) -> bytes:
        calls.append(text)
        return real(lang, text)

    monkeypatch.setattr(tts, "_synthesize", counting)
    speech = EspeakSpeech(tmp_path)
    paths = await asyncio.gather(*(speech.say_file("en", "One moment please.") for _ in range(4)))
    assert len(set(paths)) == 1
    assert calls == ["One moment please."]
    # Different texts in parallel threads are serialised by the engine lock and all come out right.
    texts = [f"Number {n}." for n in range(4)]
    results = await asyncio.gather(*(speech.say_file("en", t) for t in texts))
    for base in results:
        params, samples = read_wav(base)
        assert_8k_mono_16(params)
        assert rms(samples) > 300


async def test_queued_syntheses_leave_the_loops_shared_executor_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers' texts queue for the one engine; meanwhile the loop's default executor (DNS
    lookups of action_urls, media decoding) must not be stuck behind them."""
    done: list[str] = []

    def slow(lang: str, text: str) -> bytes:
        time.sleep(0.05)
        done.append(text)
        return b"\0\0" * 800

    monkeypatch.setattr(tts, "_synthesize", slow)
    speech = EspeakSpeech(tmp_path)
    says = [asyncio.ensure_future(speech.say_file("en", f"Caller {n}")) for n in range(40)]
    await asyncio.sleep(0.01)  # every synthesis submitted
    await asyncio.to_thread(lambda: None)  # what an action_url's DNS lookup does
    assert len(done) <= 3
    await asyncio.gather(*says)
    assert len(done) == 40


@pytest.mark.parametrize("lang", ["xx", "zz-qq", "en+f3", "../en", "", "english"])
async def test_unknown_language_is_media_error(lang: str, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="language") as info:
        await EspeakSpeech(tmp_path).say_file(lang, "hello")
    assert repr(lang.strip().lower()) in str(info.value)
    assert not (tmp_path / "tts").exists() or list((tmp_path / "tts").iterdir()) == []


async def test_empty_or_oversized_text_is_media_error(tmp_path: Path) -> None:
    speech = EspeakSpeech(tmp_path, max_chars=50)
    with pytest.raises(MediaError, match="empty"):
        await speech.say_file("en", "  \n ")
    with pytest.raises(MediaError, match="too long"):
        await speech.say_file("en", "a" * 51)
