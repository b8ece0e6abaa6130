"""When Asterisk runs on another host and mounts the gateway's voice data_dir under another
path, the files we prepare must be named as Asterisk sees them."""

from __future__ import annotations

import os

from gateway.voice.interfaces import MediaSource, Speech


class AsteriskView:
    """MediaSource and Speech whose paths are rewritten from `local_root` to `asterisk_root`."""

    def __init__(self, media: MediaSource, speech: Speech, local_root: str, asterisk_root: str) -> None:
        self._media = media
        self._speech = speech
        self._local = os.path.normpath(local_root)
        self._asterisk = os.path.normpath(asterisk_root)

    def _map(self, path: str) -> str:
        rel = os.path.relpath(os.path.normpath(path), self._local)
        if rel.startswith(".."):
            raise ValueError(f"{path} is outside the voice data directory")
        return os.path.join(self._asterisk, rel)

    async def playback_file(self, url: str) -> str:
        return self._map(await self._media.playback_file(url))

    async def say_file(self, lang: str, text: str) -> str:
        return self._map(await self._speech.say_file(lang, text))
