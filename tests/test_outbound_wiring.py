"""Outbound calls as the app wires them from configuration (voice.ami_*): the xoxzo-cloudpy
client places a TTS call, the AMI stand-in originates it and, like the dialplan's
`gateway-outbound` context, runs AGI against the gateway's own FastAGI server."""

from __future__ import annotations

import asyncio
from typing import Any

from xoxzo.cloudpy import XoxzoClient

from gateway.app import FASTAGI
from tests.conftest import gateway_config, start_gateway, wait_for
from tests.peers.ami_server import AmiServer


async def test_tts_call_through_the_configured_ami(clean_db: str, sim_smsc: Any) -> None:
    ami = AmiServer(secret="s3cret")
    await ami.start()
    cfg = gateway_config(
        clean_db,
        sim_smsc.host,
        sim_smsc.port,
        voice__ami_enabled=True,
        voice__ami_port=ami.port,
        voice__ami_secret="s3cret",
        voice__outbound_prices={"": 12.0},
    )
    gw = await start_gateway(cfg)
    try:
        ami.agi_port = gw.app[FASTAGI].port
        creds = await gw.account()
        client = XoxzoClient(sid=creds.account.sid, auth_token=creds.auth_token, api_host=gw.base_url)

        async def placed() -> Any:
            res = await asyncio.to_thread(
                client.call_tts_playback, "+81312345678", "+819012345678", "Hello from the gateway", "en"
            )
            return res if res.errors != 503 else None  # the AMI login may still be under way

        res = await wait_for(placed)
        assert res.errors is None, res.message
        callid = res.messages[0]["callid"]
        [call] = await ami.finished_calls(1)
        assert call.transcript.verbs[:2] == ["ANSWER", "STREAM FILE"] and call.transcript.missing == []

        async def completed() -> Any:
            st = await asyncio.to_thread(client.get_simple_playback_status, callid)
            return st.message if st.message.get("status") == "COMPLETED" else None

        status = await wait_for(completed)
        assert status["direction"] == "outbound" and status["cost"] == 12.0
    finally:
        await gw.runner.cleanup()
        await ami.close()
