#!/usr/bin/env python3
"""DNS burst driver for vm-tests/test_dns_burst.sh (issue 14.3).

  dns_burst.py run --dns ADDR --target ADDR --port PORT --name NAME
                   [--conns 50] [--interval-ms 50] [--burst-rate 200] [--timeout 5]

Runs in the client namespace. Phase "quiet": opens --conns TCP connections to
TARGET:PORT one after another, one every --interval-ms (connect, close), and
records each connect() time. Phase "burst": the same while one thread sends crafted DNS queries to
DNS:53 at --burst-rate per second (each ~60 KB: 10,000 questions whose names
are chains of compression pointers, the query of issue 14 that held the lwIP
core lock for tens of milliseconds) and another sends a legitimate query for
NAME (type A) every 100 ms, retrying like a stub resolver (1 s, at most 3
attempts). Prints one JSON object: latencies (ms, p50/p99/max) per phase,
connection failures, legitimate queries answered / failed / retried, crafted
queries sent.
"""
import argparse
import json
import socket
import statistics
import struct
import sys
import threading
import time


def crafted_query(questions=10000):
    """QDCOUNT=questions; question 0 is "a." A IN, question i's name is a
    compression pointer to question i-1's name (a chain as deep as 14-bit
    offsets allow, then pointers to the deepest one): 60,013 bytes."""
    q = bytearray(struct.pack(">HHHHHH", 0x6666, 0x0100, questions, 0, 0, 0))
    prev = len(q)
    q += b"\x01a\x00" + struct.pack(">HH", 1, 1)
    deepest = prev
    for _ in range(1, questions):
        here = len(q)
        target = prev if prev < 0x4000 else deepest
        if prev < 0x4000:
            deepest = prev
        q += struct.pack(">H", 0xC000 | target) + struct.pack(">HH", 1, 1)
        prev = here
    return bytes(q)


def legit_query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.strip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def answered(reply, qid):
    if len(reply) < 12:
        return False
    rid, flags, _qd, an = struct.unpack(">HHHH", reply[:8])
    return rid == qid and flags & 0x8000 and (flags & 0x000F) == 0 and an >= 1


def connect_phase(target, port, n, interval_s, timeout):
    lat, errors = [], []
    fam = socket.AF_INET6 if ":" in target else socket.AF_INET
    nxt = time.monotonic()
    # The phase ends by this deadline whatever happens (a stalled tunnel
    # must fail the test, not hang it): the rest count as errors.
    deadline = nxt + n * interval_s + 2 * timeout
    for i in range(n):
        if time.monotonic() > deadline:
            errors.append(f"{n - i} connections not tried: the phase's deadline passed")
            break
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        nxt += interval_s
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        t0 = time.monotonic()
        try:
            s.connect((target, port))
            lat.append((time.monotonic() - t0) * 1000.0)
        except OSError as e:
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            s.close()
    return lat, errors


def summary(lat):
    if not lat:
        return {"n": 0}
    s = sorted(lat)
    p99 = s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]
    return {"n": len(s), "p50_ms": round(statistics.median(s), 2), "p99_ms": round(p99, 2),
            "max_ms": round(s[-1], 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["run"])
    ap.add_argument("--dns", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--interval-ms", type=float, default=50.0)
    ap.add_argument("--burst-rate", type=float, default=200.0)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    fam = socket.AF_INET6 if ":" in a.dns else socket.AF_INET

    out = {}
    lat, err = connect_phase(a.target, a.port, a.conns, a.interval_ms / 1000.0, a.timeout)
    out["quiet"] = summary(lat)
    out["quiet"]["errors"] = err

    stop = threading.Event()
    crafted = crafted_query()
    sent = [0]

    def burst():
        s = socket.socket(fam, socket.SOCK_DGRAM)
        interval = 1.0 / a.burst_rate
        nxt = time.monotonic()
        while not stop.is_set():
            try:
                s.sendto(crafted, (a.dns, 53))
                sent[0] += 1
            except OSError:
                pass
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        s.close()

    legit = {"ok": 0, "failed": 0, "retried": 0, "rtt_ms": []}

    def queries():
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        qid = 1
        while not stop.is_set():
            qid = (qid + 1) & 0xFFFF or 1
            ok = False
            for attempt in range(3):
                t0 = time.monotonic()
                s.sendto(legit_query(qid, a.name), (a.dns, 53))
                try:
                    while True:
                        reply = s.recv(4096)
                        if answered(reply, qid):
                            ok = True
                            break
                except socket.timeout:
                    pass
                if ok:
                    legit["rtt_ms"].append((time.monotonic() - t0) * 1000.0)
                    if attempt:
                        legit["retried"] += 1
                    break
            legit["ok" if ok else "failed"] += 1
            time.sleep(0.1)
        s.close()

    threads = [threading.Thread(target=burst), threading.Thread(target=queries)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the burst is under way before the first connect
    lat, err = connect_phase(a.target, a.port, a.conns, a.interval_ms / 1000.0, a.timeout)
    stop.set()
    for t in threads:
        t.join()
    out["burst"] = summary(lat)
    out["burst"]["errors"] = err
    out["crafted_sent"] = sent[0]
    out["crafted_bytes"] = len(crafted)
    out["legit"] = {"ok": legit["ok"], "failed": legit["failed"], "retried": legit["retried"],
                    "rtt": summary(legit["rtt_ms"])}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
