"""Builds the call flow from configuration: used by the app (FastAGI) and by the per-call
pyst2 AGI script, so both run exactly the same bridge. `http` is the caller's session for
customer URLs, from gateway.egress.client.policy_session (the caller closes it)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actions_dsl import Say
from gateway.config import VoiceConfig
from gateway.services.dialing import parse_prefixes
from gateway.services.numbers import NumberService
from gateway.voice.asterisk_paths import AsteriskView
from gateway.voice.calls import CallService, ScriptLimits
from gateway.voice.executor import Executor
from gateway.voice.fetcher import PolicyFetcher
from gateway.voice.interfaces import MediaSource, Speech
from gateway.voice.media import MediaCache
from gateway.voice.prepare import AudioPrep
from gateway.voice.tts import EspeakSpeech
from gateway.workers.observer import Observer


@asynccontextmanager
async def call_service(
    cfg: VoiceConfig,
    sessions: async_sessionmaker[AsyncSession],
    numbers: NumberService,
    http: aiohttp.ClientSession,
    *,
    base_url: str = "",
    wake_webhooks: Callable[[], None] = lambda: None,
    observer: Observer | None = None,
) -> AsyncIterator[CallService]:
    data_dir = await asyncio.to_thread(os.path.abspath, cfg.data_dir)
    asterisk_dir = cfg.asterisk_data_dir or data_dir
    for store in ("voicemail", "recordings"):
        await asyncio.to_thread(os.makedirs, os.path.join(data_dir, store), exist_ok=True)
    fetcher = PolicyFetcher(http)  # refuses a session without the URL policy
    media: MediaSource = MediaCache(fetcher, data_dir, cfg.media_max_bytes, cfg.media_timeout)
    speech: Speech = EspeakSpeech(data_dir)
    if asterisk_dir != data_dir:
        media = speech = AsteriskView(media, speech, data_dir, asterisk_dir)
    prep = AudioPrep(media, speech)  # the executor's sources: it takes what was prepared
    media = speech = prep
    executor = Executor(
        media,
        speech,
        cfg.trunk,
        cfg.dial_timeout,
        parse_prefixes(cfg.transfer_allow_prefixes, "transfer prefix"),
        os.path.join(asterisk_dir, "voicemail"),
        cfg.voicemail_max_seconds,
        cfg.voicemail_silence_seconds,
        voicemail_local_dir=os.path.join(data_dir, "voicemail"),
        recording_dir=os.path.join(asterisk_dir, "recordings"),
        recording_local_dir=os.path.join(data_dir, "recordings"),
        deny_number_types=cfg.deny_number_types,
    )
    yield CallService(
        sessions,
        numbers,
        fetcher,
        executor,
        ScriptLimits(cfg.action_url_timeout, cfg.action_url_max_bytes, cfg.max_fetches_per_call),
        Say(cfg.fallback_lang, cfg.fallback_text, line=0),
        base_url=base_url,
        wake_webhooks=wake_webhooks,
        observer=observer,
        prepare=prep.start,
    )
