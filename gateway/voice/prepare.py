"""Audio made ready ahead of the executor: the first action's media downloaded and decoded, or its
speech synthesised, while Asterisk answers the call (a real ANSWER takes ~0.5 s).

`AudioPrep` is the executor's MediaSource and Speech: when the call asks for the audio it started
preparing, it gets that job's outcome, file or failure (so a failing URL is fetched once per
call, not twice); anything else goes to the media source or speech engine as before. Jobs are
kept per call (the asyncio task running it) and dropped when the call ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from actions_dsl import Action, Gather, Playback, Say, VoicemailPlayback, VoicemailSay
from gateway.voice.interfaces import MediaSource, Speech

_Key = tuple["asyncio.Task[object]", str, str]


class AudioPrep:
    def __init__(self, media: MediaSource, speech: Speech) -> None:
        self._media = media
        self._speech = speech
        self._jobs: dict[_Key, asyncio.Future[str]] = {}

    def start(self, action: Action) -> None:
        """Start making `action`'s audio for the current call, if it plays any; returns at once."""
        call = asyncio.current_task()
        if call is None:
            return
        if isinstance(action, Gather) and action.prompts:
            action = action.prompts[0]  # a menu's first words, as for any first action
        if isinstance(action, Playback | VoicemailPlayback):
            key: _Key = (call, "media", action.url)
            job: Awaitable[str] = self._media.playback_file(action.url)
        elif isinstance(action, Say | VoicemailSay):
            key = (call, "speech", f"{action.lang}\0{action.text}")
            job = self._speech.say_file(action.lang, action.text)
        else:
            return
        future = asyncio.ensure_future(job)
        future.add_done_callback(_retrieved)
        self._jobs[key] = future
        call.add_done_callback(lambda _: self._jobs.pop(key, None))

    async def playback_file(self, url: str) -> str:
        job = self._take("media", url)
        return await (job if job is not None else self._media.playback_file(url))

    async def say_file(self, lang: str, text: str) -> str:
        job = self._take("speech", f"{lang}\0{text}")
        return await (job if job is not None else self._speech.say_file(lang, text))

    def _take(self, kind: str, what: str) -> asyncio.Future[str] | None:
        call = asyncio.current_task()
        return None if call is None else self._jobs.pop((call, kind, what), None)


def _retrieved(future: asyncio.Future[str]) -> None:
    # A job nobody awaited (the caller hung up first) must not warn "exception never retrieved".
    if not future.cancelled():
        future.exception()
