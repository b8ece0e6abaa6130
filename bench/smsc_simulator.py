"""SMPP throughput on one connection, both sides in one event loop (so each figure is a lower
bound for one core doing both sides):

- the simulator: pipelined raw submit_sm, receipts requested and acknowledged, from the first
  submit to the last receipt acknowledged (about 3,000/s on an idle core);
- the gateway's SmppClient: that many concurrent submit() calls through its window to the
  simulator, from the first call to the last answer (above 1,000/s on an idle core).

A loaded machine gives less, which is why these are a bench and not tests
(tests/test_simulator.py and tests/test_smpp_client.py check the same exchanges for
correctness only).

    .venv/bin/python -m bench.smsc_simulator [--submits 6000] [--window 100]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time

from smpp.client import SmppClient, SmppClientConfig
from smpp.simulator import SimulatorConfig, SmscSimulator
from smpp.types import DeliveryReceipt, MoPart, SubmitRequest

BIND = b"gateway\x00secret\x00\x00\x34\x00\x00\x00"
# source TON 5 "Demo", destination 818012345678, registered_delivery 1, "hello".
SUBMIT = b"\x00\x05\x00Demo\x00\x01\x01818012345678\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05hello"


def pdu(command_id: int, sequence: int, body: bytes = b"") -> bytes:
    return struct.pack(">LLLL", 16 + len(body), command_id, 0, sequence) + body


async def pipelined(port: int, total: int, window: int) -> float:
    """`total` submits over one bound connection, at most `window` unanswered; seconds taken."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(pdu(0x09, 1, BIND))
    length, _, status, _ = struct.unpack(">LLLL", await reader.readexactly(16))
    await reader.readexactly(length - 16)
    if status:
        raise RuntimeError(f"bind refused: {status:#x}")
    slots = asyncio.Semaphore(window)
    responses = receipts = 0
    finished = asyncio.Event()

    async def read_replies() -> None:
        nonlocal responses, receipts
        while not finished.is_set():
            length, command_id, status, sequence = struct.unpack(">LLLL", await reader.readexactly(16))
            await reader.readexactly(length - 16)
            if command_id == 0x80000004:
                if status:
                    raise RuntimeError(f"submit {sequence} refused: {status:#x}")
                responses += 1
                slots.release()
            elif command_id == 0x05:
                receipts += 1
                writer.write(pdu(0x80000005, sequence, b"\x00"))
            if responses == receipts == total:
                finished.set()

    replies = asyncio.create_task(read_replies())
    started = time.perf_counter()
    for sequence in range(2, total + 2):
        await slots.acquire()
        writer.write(pdu(0x04, sequence, SUBMIT))
    await finished.wait()
    elapsed = time.perf_counter() - started
    await replies
    writer.close()
    return elapsed


class _Ignore:
    """SmppEvents that drop what they are told: the bench counts answers only."""

    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        pass

    async def on_mo(self, part: MoPart) -> None:
        pass

    def on_bind_state(self, bound: bool) -> None:
        pass


async def through_client(port: int, total: int, window: int) -> float:
    """`total` concurrent SmppClient.submit() calls over one bind; seconds taken."""
    client = SmppClient(SmppClientConfig("127.0.0.1", port, "gateway", "secret", window=window), _Ignore())
    run = asyncio.create_task(client.run())
    try:
        if not await client.wait_bound(10):
            raise RuntimeError("the client did not bind")
        started = time.perf_counter()
        await asyncio.gather(
            *(
                client.submit(SubmitRequest(f"m{i}", "Demo", "+818012345678", f"load {i}"))
                for i in range(total)
            )
        )
        return time.perf_counter() - started
    finally:
        await client.stop()
        await run


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submits", type=int, default=6000)
    ap.add_argument("--window", type=int, default=100)
    args = ap.parse_args()
    simulator = SmscSimulator(SimulatorConfig(port=0, dlr_delay=0, summary_interval=0))
    await simulator.start()
    try:
        for name, run in (("simulator, raw pipelined", pipelined), ("SmppClient.submit", through_client)):
            elapsed = await run(simulator.port, args.submits, args.window)
            rate = args.submits / elapsed
            print(
                f"{name}: {args.submits} submits, window {args.window}:"
                f" {elapsed:.2f} s, {rate:.0f} submit_sm/s"
            )
    finally:
        await simulator.stop()


if __name__ == "__main__":
    asyncio.run(main())
