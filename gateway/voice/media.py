"""Playback media: fetch once, decode MP3/WAV, store as 8 kHz mono 16-bit WAV for Asterisk.

Layout: `<data_dir>/media/<sha256(url)>.wav`; `playback_file` returns the path without
`.wav` (absolute), as STREAM FILE wants it. A file is only ever visible complete (written to
a temporary name in the same directory, then renamed). Concurrent requests for one URL share
one download; failures are not cached (the next call tries again).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import miniaudio

from gateway.voice.interfaces import Fetcher, MediaError

SAMPLE_RATE = 8000
# What the call record says of a body that is not playable audio: never the bytes themselves.
_NOT_AUDIO = "media is not playable MP3 or WAV audio"
_FRAMES_PER_READ = 16384


def sniff_audio(data: bytes) -> str | None:
    """'wav' or 'mp3' from the content itself (never the URL or Content-Type), else None."""
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        # ID3v2 tag: 10-byte header, then a 28-bit synchsafe size (+10 more with a footer).
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
        start = 10 + size + (10 if data[5] & 0x10 else 0)
    # The first MPEG audio frame header must follow (a few padding bytes are tolerated).
    end = min(len(data) - 3, start + 4096)
    for i in range(start, max(start, end)):
        if _mpeg_audio_header(data[i : i + 4]):
            return "mp3"
    return None


def _mpeg_audio_header(h: bytes) -> bool:
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return False
    version = (h[1] >> 3) & 0x3
    layer = (h[1] >> 1) & 0x3
    bitrate = h[2] >> 4
    rate = (h[2] >> 2) & 0x3
    return version != 1 and layer == 1 and bitrate not in (0, 15) and rate != 3  # layer III


def decode_to_pcm(data: bytes, max_seconds: float) -> bytes:
    """Decode MP3 or WAV bytes to 8 kHz mono signed 16-bit PCM (little-endian). Blocking."""
    kind = sniff_audio(data)
    if kind is None:
        head = data[:16]
        raise MediaError(f"not an MP3 or WAV file ({len(data)} bytes starting {head!r})", public=_NOT_AUDIO)
    max_frames = int(max_seconds * SAMPLE_RATE)
    pcm = bytearray()
    try:
        stream = miniaudio.stream_memory(
            data,
            output_format=miniaudio.SampleFormat.SIGNED16,
            nchannels=1,
            sample_rate=SAMPLE_RATE,
            frames_to_read=_FRAMES_PER_READ,
        )
        try:
            for chunk in stream:
                pcm += chunk.tobytes()
                if len(pcm) > 2 * max_frames:
                    raise MediaError(f"{kind.upper()} audio is longer than {max_seconds:g} s")
        finally:
            stream.close()
    except miniaudio.MiniaudioError as exc:
        raise MediaError(f"cannot decode {kind.upper()} audio: {exc}", public=_NOT_AUDIO) from exc
    if not pcm:
        raise MediaError(f"{kind.upper()} file holds no decodable audio", public=_NOT_AUDIO)
    return bytes(pcm)


def write_wav_atomic(path: Path, pcm: bytes, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono 16-bit PCM as a WAV file that appears under `path` only when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            with wave.open(raw, "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(sample_rate)
                out.writeframes(pcm)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)  # Asterisk runs as another user and must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MediaCache:
    """`MediaSource`: playback URLs to cached 8 kHz mono WAV files."""

    def __init__(
        self,
        fetcher: Fetcher,
        data_dir: str | os.PathLike[str],
        max_bytes: int,
        timeout: float,
        *,
        max_seconds: float = 3600.0,
    ) -> None:
        self._fetcher = fetcher
        self.directory = Path(os.path.abspath(data_dir)) / "media"
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._max_seconds = max_seconds
        self._inflight: dict[str, asyncio.Future[str]] = {}
        # Decoding runs off the event loop on threads of its own, one per core: a burst of long
        # files on the loop's shared executor would hold up what else waits there (DNS lookups
        # of action_urls at call start).
        self._decoders = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="media-decode")

    @staticmethod
    def key(url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()

    async def playback_file(self, url: str) -> str:
        key = self.key(url)
        base = self.directory / key
        if base.with_name(key + ".wav").is_file():
            return str(base)
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._produce(url, base))
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._finished(key, f))
        # One caller hanging up must not cancel the download the others wait for.
        return await asyncio.shield(future)

    def _finished(self, key: str, future: asyncio.Future[str]) -> None:
        self._inflight.pop(key, None)
        if not future.cancelled():
            future.exception()  # retrieved: no "never retrieved" warning when every waiter left

    async def _produce(self, url: str, base: Path) -> str:
        result = await self._fetcher.get(url, max_bytes=self._max_bytes, timeout=self._timeout)
        if not 200 <= result.status < 300:
            raise MediaError(
                f"media URL answered HTTP {result.status}", public=f"media fetch failed: HTTP {result.status}"
            )
        path = base.with_name(base.name + ".wav")
        await asyncio.get_running_loop().run_in_executor(self._decoders, self._convert, result.body, path)
        return str(base)

    def _convert(self, body: bytes, path: Path) -> None:
        write_wav_atomic(path, decode_to_pcm(body, self._max_seconds))
