"""Cheap WebSocket load generator (asyncio + uvloop, hand-rolled frames).

N clients, each sends one ~300-byte Twilio-like JSON text frame every 20 ms
(clients are spread evenly across the 20 ms period).  Echo RTT is measured
with a per-connection FIFO of send timestamps (server echoes in order).
Client frames are masked with a zero masking key (valid per RFC 6455, saves the
generator's XOR cost; the server still performs its unmask step).

Usage: loadgen.py PORT N SERVER_PID [warmup_s] [measure_s] [label]
Prints one JSON line with results.
"""
import asyncio
import base64
import collections
import json
import os
import struct
import sys
import time

import uvloop

PORT = int(sys.argv[1]); N = int(sys.argv[2]); SPID = int(sys.argv[3])
WARM = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
MEAS = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
LABEL = sys.argv[6] if len(sys.argv) > 6 else ""
PATH = os.environ.get("WS_PATH", "/media")
CLK = os.sysconf("SC_CLK_TCK")

PAYLOAD = base64.b64encode(bytes(range(160))).decode()


def make_msg(seq):
    return json.dumps({
        "event": "media", "sequenceNumber": str(seq),
        "media": {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20),
                  "payload": PAYLOAD},
        "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0"},
        separators=(",", ":")).encode()


MSG = make_msg(123456)
assert 126 <= len(MSG) < 65536
FRAME = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(MSG)) + b"\0\0\0\0" + MSG


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK  # utime+stime (fields 14,15)


class Stats:
    measuring = False
    sent = 0
    recv = 0
    rtts = []


class Client(asyncio.Protocol):
    def __init__(self, ready):
        self.ready = ready
        self.buf = bytearray()
        self.handshook = False
        self.sent_ts = collections.deque()
        self.t = None

    def connection_made(self, t):
        self.t = t
        key = base64.b64encode(os.urandom(16)).decode()
        t.write((f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data):
        buf = self.buf
        buf += data
        if not self.handshook:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i])
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                print("handshake failed:", head[:200], file=sys.stderr)
                os._exit(2)
            del buf[:i + 4]
            self.handshook = True
            self.ready.set_result(self)
        now = time.perf_counter()
        pos = 0
        n = len(buf)
        st = Stats
        while n - pos >= 2:
            b1 = buf[pos + 1]
            ln = b1 & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                hl = 10
            if n - pos < hl + ln:
                break
            op = buf[pos] & 0x0F
            pos += hl + ln
            if op == 1 or op == 2:
                ts = self.sent_ts.popleft() if self.sent_ts else None
                if st.measuring and ts is not None:
                    st.recv += 1
                    st.rtts.append(now - ts)
        if pos:
            del buf[:pos]

    def connection_lost(self, exc):
        if Stats.measuring:
            print("connection lost during measurement", exc, file=sys.stderr)


async def main():
    loop = asyncio.get_running_loop()
    clients = []
    for _i in range(N):
        fut = loop.create_future()
        await loop.create_connection(lambda fut=fut: Client(fut), "127.0.0.1", PORT)
        clients.append(await asyncio.wait_for(fut, 10))
    # spread clients over 20 ms in 20 slots of 1 ms
    SLOTS = 20
    groups = [clients[i::SLOTS] for i in range(SLOTS)]
    period = 0.020 / SLOTS
    t0 = loop.time()
    k = 0
    start_meas = t0 + WARM
    end_meas = start_meas + MEAS
    s_cpu0 = g_cpu0 = None
    while True:
        k += 1
        target = t0 + k * period
        d = target - loop.time()
        if d > 0:
            await asyncio.sleep(d)
        now_l = loop.time()
        if s_cpu0 is None and now_l >= start_meas:
            s_cpu0 = cpu_of(SPID); g_cpu0 = cpu_of(os.getpid()); w0 = time.perf_counter()
            Stats.measuring = True
        if now_l >= end_meas:
            s_cpu1 = cpu_of(SPID); g_cpu1 = cpu_of(os.getpid()); w1 = time.perf_counter()
            Stats.measuring = False
            break
        g = groups[k % SLOTS]
        pc = time.perf_counter()
        for c in g:
            c.sent_ts.append(pc)
            c.t.write(FRAME)
        if Stats.measuring:
            Stats.sent += len(g)
    wall = w1 - w0
    r = sorted(Stats.rtts)
    def pct(p):
        return r[min(len(r) - 1, int(p * len(r)))] * 1e6 if r else float("nan")
    s_cpu = s_cpu1 - s_cpu0
    backlog = sum(len(c.sent_ts) for c in clients)
    out = dict(label=LABEL, N=N, wall=round(wall, 2), sent=Stats.sent, echoed=Stats.recv,
               backlog=backlog,
               srv_cpu_pct=round(100 * s_cpu / wall, 1),
               us_per_msg=round(1e6 * s_cpu / max(1, Stats.sent), 1),
               gen_cpu_pct=round(100 * (g_cpu1 - g_cpu0) / wall, 1),
               rtt_p50_us=round(pct(0.50)), rtt_p99_us=round(pct(0.99)),
               rtt_max_us=round(r[-1] * 1e6) if r else None,
               msg_bytes=len(MSG))
    print(json.dumps(out), flush=True)
    for c in clients:
        c.t.close()


uvloop.run(main())
