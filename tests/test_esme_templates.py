"""An account without the freeform flag sends over the SMPP server only the texts of its APPROVED
templates: smpplib as the ESME, the node SMSC as the gateway's SMSC, real sockets. The message
records the template as a REST template send does; a long message is matched whole."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import smpplib.client
import smpplib.consts

from gateway.app import ESME_SERVER
from gateway.keys import CONFIG, SESSIONS, TEMPLATES
from gateway.services.smpp_credentials import issue_credentials
from smpp.encoding import decode_short_message
from tests.conftest import wait_for
from tests.peers.node_smsc import NodeSmsc
from tests.test_esme_server import JP, esme_gateway

FAIL = smpplib.consts.SMPP_ESME_RSUBMITFAIL  # what an account may not send


def _submit_all(port: int, system_id: str, password: str, texts: list[Any]) -> list[tuple[int, str]]:
    """Each item a text (one submit_sm) or a list of texts (sar parts of one message); the
    status and msgid of every submit_sm, in order. smpplib's timeout is the deadline."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=10)
    client.connect()
    client.bind_transmitter(system_id=system_id, password=password)
    answers = []
    for ref, item in enumerate(texts, start=1):
        parts = [item] if isinstance(item, str) else item
        for seq, part in enumerate(parts, start=1):
            sar = {}
            if len(parts) > 1:
                sar = {"sar_msg_ref_num": ref, "sar_total_segments": len(parts), "sar_segment_seqnum": seq}
            client.send_message(
                source_addr_ton=5,
                source_addr="SHOP",
                dest_addr_ton=1,
                destination_addr=JP,
                short_message=part.encode(),
                **sar,
            )
            pdu = client.read_pdu()
            answers.append((int(pdu.status), (pdu.message_id or b"").decode()))
    client.unbind()
    client.disconnect()
    return answers


async def test_templates_decide_what_a_non_freeform_esme_may_send(
    clean_db: str, node_smsc: NodeSmsc, http: aiohttp.ClientSession
) -> None:
    async with esme_gateway(clean_db, node_smsc) as gw:
        creds = await gw.account(freeform=False, senders=("SHOP",))
        other = await gw.account(freeform=False, name="other", senders=("SHOP",))
        templates = gw.app[TEMPLATES]

        async def template(account_id: int, content: str, status: str) -> dict[str, Any]:
            made = await templates.create(account_id, "t", content)
            return await templates.set_status(made["template_id"], status)

        me = creds.account.id
        code = await template(me, "Your code is {code}. Bye", "APPROVED")
        tail = "lorem ipsum dolor sit amet " * 6
        letter = await template(me, "Dear {name}, " + tail + "regards {who}", "APPROVED")
        await template(me, "Pending {x} text", "PENDING")
        await template(me, "Rejected {x} text", "REJECTED")
        await template(other.account.id, "Other {x} text", "APPROVED")
        # x(.*)x(.*)...y: a backtracking engine tries every split of a run of x's without a y.
        await template(me, "x{a}" * 30 + "y", "APPROVED")

        issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
        assert issued is not None
        long_text = "Dear Ann Lee, " + tail + "regards the shop"
        assert len(long_text) > 160
        bad_long = "Dear Ann Lee, " + tail.upper() + "regards the shop"
        submits: list[Any] = [
            "Your code is 4711. Bye",
            [long_text[:153], long_text[153:]],  # neither part is the template; the whole is
            "Pending 1 text",
            "Rejected 1 text",
            "Other 1 text",
            "Your code is 4711. Bye now",  # the template is only its prefix
            "x" * 250,  # no y: matches nothing, and must not stall the server
            [bad_long[:153], bad_long[153:]],
            "Your code is . Bye",  # an empty variable, as the REST API allows
        ]
        port = gw.app[CONFIG].smpp_server.port
        answers = await asyncio.to_thread(_submit_all, port, issued.system_id, issued.password, submits)
        statuses = [status for status, _ in answers]
        assert statuses == [0, 0, 0, FAIL, FAIL, FAIL, FAIL, FAIL, 0, FAIL, 0]
        sent = {answers[0][1]: code, answers[2][1]: letter, answers[10][1]: code}

        # Recorded as the REST API's template sends are: listed under their template.
        for msgid, tpl in sent.items():
            url = f"{gw.base_url}/sms/templates/{tpl['template_id']}/messages/"
            async with http.get(url, headers=gw.auth(creds)) as r:
                assert msgid in {m["msgid"] for m in await r.json()}
        rows = await gw.sql("SELECT msgid FROM messages WHERE template_id IS NULL")
        assert rows == []

        async def all_sent() -> list[str] | None:
            got = await node_smsc.submits()
            texts = [decode_short_message(s.data_coding, s.esm_class, s.short_message).text for s in got]
            return texts if len(texts) == 4 else None

        texts = await wait_for(all_sent, timeout=15)
    assert texts[0] == "Your code is 4711. Bye"
    assert "".join(texts[1:3]) == long_text
    assert texts[3] == "Your code is . Bye"


async def test_a_freeform_account_is_not_held_to_templates(clean_db: str, node_smsc: NodeSmsc) -> None:
    """The freeform flag still lets any text through, and such a message records no template."""
    async with esme_gateway(clean_db, node_smsc) as gw:
        creds = await gw.account(senders=("SHOP",))
        issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
        assert issued is not None
        port = gw.app[CONFIG].smpp_server.port
        answers = await asyncio.to_thread(_submit_all, port, issued.system_id, issued.password, ["anything"])
        assert answers[0][0] == 0
        assert await gw.sql("SELECT template_id FROM messages") == [(None,)]


async def test_parts_that_never_complete_are_held_to_the_templates_too(
    clean_db: str, node_smsc: NodeSmsc
) -> None:
    """The stale-parts flush sends a long message as far as it arrived: for an account without
    the freeform flag only if that text is one of its APPROVED templates."""
    async with esme_gateway(clean_db, node_smsc, smpp_server__parts_window_seconds=0.0) as gw:
        creds = await gw.account(freeform=False, senders=("SHOP",))
        made = await gw.app[TEMPLATES].create(creds.account.id, "t", "Your code is {code}. Bye")
        await gw.app[TEMPLATES].set_status(made["template_id"], "APPROVED")
        issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
        assert issued is not None
        port = gw.app[CONFIG].smpp_server.port
        # Each the first of two parts whose second never comes.
        firsts = ["Your code is 4711. Bye", "free text"]

        def first_parts() -> list[tuple[int, str]]:
            client = smpplib.client.Client("127.0.0.1", port, timeout=10)
            client.connect()
            client.bind_transmitter(system_id=issued.system_id, password=issued.password)
            answers = []
            for ref, first in enumerate(firsts, start=1):
                client.send_message(
                    source_addr_ton=5,
                    source_addr="SHOP",
                    dest_addr_ton=1,
                    destination_addr=JP,
                    short_message=first.encode(),
                    sar_msg_ref_num=ref,
                    sar_total_segments=2,
                    sar_segment_seqnum=1,
                )
                pdu = client.read_pdu()
                answers.append((int(pdu.status), pdu.message_id.decode()))
            client.unbind()
            client.disconnect()
            return answers

        answers = await asyncio.to_thread(first_parts)
        assert [status for status, _ in answers] == [0, 0]
        await gw.app[ESME_SERVER].backend.flush_stale_parts()  # the sweep's work, now
        [(template_id,)] = await gw.sql("SELECT id FROM templates WHERE uid = :uid", uid=made["template_id"])
        rows = await gw.sql("SELECT msgid, body, template_id FROM messages")
        assert [tuple(r) for r in rows] == [(answers[0][1], "Your code is 4711. Bye", template_id)]
        assert await gw.sql("SELECT count(*) FROM esme_parts") == [(0,)]
