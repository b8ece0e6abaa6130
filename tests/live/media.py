"""Audio the live suite makes for itself at run time (nothing binary is kept in the repository):
WAV tones for playback and for the sounds a source-built Asterisk lacks (`beep`,
`ss-noservice`), and a pcap of RTP that SIPp's play_pcap_audio sends as the caller's voice
followed by an RFC 4733 DTMF digit."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

RATE = 8000


def tone(seconds: float, freq: float = 440.0, level: float = 0.3) -> list[int]:
    """16-bit samples of a sine at 8 kHz."""
    n = int(seconds * RATE)
    return [int(level * 32767 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n)]


def write_wav(path: Path, samples: list[int]) -> None:
    """8 kHz mono 16-bit, the format Asterisk's format_wav reads and writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(struct.pack(f"<{len(samples)}h", *samples))


def _ulaw(sample: int) -> int:
    """G.711 mu-law of one 16-bit sample (the encoder audioop had)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = next((bit for bit in range(7, 0, -1) if magnitude & (1 << (bit + 7))), 0)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


_LOOPBACK = bytes([127, 0, 0, 1])
_DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


def write_rtp_pcap(path: Path, silence: float, seconds: float, digit: str, dst_port: int = 6000) -> None:
    """`silence` seconds of silence then `seconds` of a tone as PCMU (payload type 0, 20 ms
    packets), then `digit` as an RFC 4733 telephone-event (payload type 101) lasting 200 ms
    with three end packets.

    SIPp replays the UDP payloads with the capture's timing to the media address the far
    end's SDP gave, so the addresses in the frames do not matter."""
    ssrc, seq, ts, t = 0x4C495645, 1, 0, 0.0
    packets: list[tuple[float, bytes]] = []
    samples = [0] * int(silence * RATE) + tone(seconds, 400.0)
    for start in range(0, len(samples) - 159, 160):
        payload = bytes(_ulaw(s) for s in samples[start : start + 160])
        packets.append((t, struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + payload))
        seq, ts, t = seq + 1, ts + 160, t + 0.02
    event = _DTMF_EVENTS[digit]
    for i in range(1, 11):  # 10 x 20 ms = 200 ms, the first with the marker bit
        end = i == 10
        for _ in range(3 if end else 1):
            body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, i * 160)
            marker = 0x80 if i == 1 else 0
            packets.append((t, struct.pack("!BBHII", 0x80, marker | 101, seq, ts, ssrc) + body))
            seq += 1
        t += 0.02
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet link type
        for when, rtp in packets:
            udp = struct.pack("!HHHH", 5000, dst_port, 8 + len(rtp), 0) + rtp
            ip = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                0,
                0,
                64,
                17,
                0,
                bytes([127, 0, 0, 1]),
                bytes([127, 0, 0, 1]),
            )
            frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
            sec = int(when)
            out.write(struct.pack("<IIII", sec, int((when - sec) * 1e6), len(frame), len(frame)))
            out.write(frame)
