"""`say`: eSpeak NG speech as 8 kHz mono 16-bit WAV, cached by (language, text).

eSpeak NG comes from the `espeakng-loader` wheel, which ships `libespeak-ng.so` and its
`espeak-ng-data` directory (no system package needed). We drive the C API via ctypes:
`espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, ...)` plus a synth callback that collects the
22050 Hz samples, then miniaudio resamples to 8 kHz. The library keeps global state and is
not thread-safe: every call into it runs in a worker thread under one process-wide lock.

Layout: `<data_dir>/tts/<sha256(lang + NUL + text)>.wav`, with lang `ja+kana` for `ja`;
`say_file` returns the absolute path without `.wav`. Languages are eSpeak voice names (`en`,
`en-us`, `ja`, `fr`, ...); the Japanese voice reads only kana, so Japanese text is turned into
kana first (`japanese.py`).
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import miniaudio

from gateway.voice import japanese
from gateway.voice.interfaces import MediaError
from gateway.voice.media import SAMPLE_RATE, write_wav_atomic

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_ENDPAUSE = 0x1000
_INITIALIZE_DONT_EXIT = 0x8000  # report a broken data dir instead of calling exit()
_EE_OK = 0

# A voice name, not a path or a variant: `en`, `en-us`, `cmn-latn-pinyin`. (eSpeak also takes
# `en+f3` variants and file paths, which callers have no business choosing.)
_LANG_RE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """The process-wide eSpeak NG engine. Every method must be called with `lock` held."""

    lock = threading.Lock()
    _instance: _Espeak | None = None

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise MediaError(f"eSpeak NG failed to initialise (data at {data_path.decode()!r})")
        self._lib = lib
        self.sample_rate = rate
        self._chunks: list[bytes] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced for the library's sake
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        if wav and count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0  # 0 = continue

    def synthesize(self, lang: str, text: str) -> bytes:
        """Mono 16-bit PCM at `sample_rate`."""
        if self._lib.espeak_SetVoiceByName(lang.encode()) != _EE_OK:
            raise MediaError(f"no eSpeak NG voice for language {lang!r}")
        encoded = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        self._chunks = []
        status = self._lib.espeak_Synth(
            buffer,
            len(encoded),
            0,
            _POS_CHARACTER,
            0,
            _ESPEAK_CHARS_UTF8 | _ESPEAK_ENDPAUSE,
            None,
            None,
        )
        self._lib.espeak_Synchronize()
        pcm, self._chunks = b"".join(self._chunks), []
        if status != _EE_OK:
            raise MediaError(f"eSpeak NG synthesis failed (status {status})")
        return pcm


def _synthesize(lang: str, text: str) -> bytes:
    """8 kHz mono 16-bit PCM for `text`. Blocking; serialised across the process."""
    text = japanese.speakable(text) if lang == "ja" else text
    with _Espeak.lock:
        engine = _Espeak.get()
        pcm = engine.synthesize(lang, text)
        rate = engine.sample_rate
    if not pcm:
        raise MediaError(f"eSpeak NG produced no audio for {lang!r} text")
    fmt = miniaudio.SampleFormat.SIGNED16
    return bytes(miniaudio.convert_frames(fmt, 1, rate, pcm, fmt, 1, SAMPLE_RATE))


class EspeakSpeech:
    """`Speech` backed by eSpeak NG."""

    def __init__(self, data_dir: str | os.PathLike[str], *, max_chars: int = 4000) -> None:
        self.directory = Path(os.path.abspath(data_dir)) / "tts"
        self._max_chars = max_chars
        self._inflight: dict[str, asyncio.Future[str]] = {}
        # Synthesis runs off the event loop, on a thread of its own: the engine takes one text at
        # a time anyway, and queued syntheses waiting for it on the loop's shared executor would
        # hold up everything else sent there (DNS lookups of action_urls, media decoding).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="espeak")

    @staticmethod
    def key(lang: str, text: str) -> str:
        # The NUL keeps ("en", "-gb hello") and ("en-gb", " hello") apart. Japanese has keys of
        # its own so that speech cached before kanji were read ("Chinese letter") is not reused.
        voice = "ja+kana" if lang == "ja" else lang
        return hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()

    async def say_file(self, lang: str, text: str) -> str:
        lang = lang.strip().lower()
        if not _LANG_RE.fullmatch(lang):
            raise MediaError(f"unknown language {lang!r}")
        text = _CONTROL_RE.sub(" ", text).strip()
        if not text:
            raise MediaError("nothing to say: the text is empty")
        if len(text) > self._max_chars:
            raise MediaError(f"text too long to say ({len(text)} characters, at most {self._max_chars})")
        key = self.key(lang, text)
        base = self.directory / key
        path = base.with_name(key + ".wav")
        if path.is_file():
            return str(base)
        future = self._inflight.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = asyncio.ensure_future(loop.run_in_executor(self._thread, self._make, lang, text, path))
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._finished(key, f))
        await asyncio.shield(future)
        return str(base)

    def _finished(self, key: str, future: asyncio.Future[str]) -> None:
        self._inflight.pop(key, None)
        if not future.cancelled():
            future.exception()

    @staticmethod
    def _make(lang: str, text: str, path: Path) -> str:
        write_wav_atomic(path, _synthesize(lang, text))
        return str(path)
