"""Audio made ready ahead of the executor: the first action's media downloaded and decoded, or its
speech synthesised, while Asterisk answers the call (a real ANSWER takes ~0.5 s).

The executor then asks the media source or the speech engine for the same file and gets it from
the cache, or joins the job in flight (both share one job per URL or text). A failure is not
kept: the executor's own request tries again and reports it on the call record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from actions_dsl import Action, Playback, Say, VoicemailPlayback, VoicemailSay
from gateway.voice.interfaces import MediaSource, Speech

log = logging.getLogger(__name__)


class AudioPrep:
    def __init__(self, media: MediaSource, speech: Speech) -> None:
        self._media = media
        self._speech = speech
        self._jobs: set[asyncio.Task[None]] = set()  # referenced until done

    def start(self, action: Action) -> None:
        """Start making `action`'s audio, if it plays any; returns at once."""
        if isinstance(action, Playback | VoicemailPlayback):
            job: Awaitable[str] = self._media.playback_file(action.url)
        elif isinstance(action, Say | VoicemailSay):
            job = self._speech.say_file(action.lang, action.text)
        else:
            return
        task = asyncio.ensure_future(_quietly(job))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)


async def _quietly(job: Awaitable[str]) -> None:
    try:
        await job
    except Exception as exc:  # reported by the executor's own request for it
        log.debug("preparing audio failed: %s", exc)
