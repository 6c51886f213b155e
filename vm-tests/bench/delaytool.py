#!/usr/bin/python3
"""delaytool: the client and reporter of vm-tests/bench/delay_bench.sh (issue 15.3).

Single-stream bulk transfers against `benchtool.py serve` (same protocol and
test stream: see benchtool.py), through a path with added round-trip delay.

  bulk   --name X --host H --port P --rtt-ms D --out FILE [--watch JSON]
         [--bytes N] [--max-secs S] [--reps R] [--dirs "down up"]
         one warm-up download (4 MiB, not measured), 5 sequential connect +
         first byte probes (median ms: at least the added RTT), then R repetitions of
         each direction, one fresh connection each. A download stops at N
         bytes or after S seconds, whichever comes first (the received bytes
         are compared with the stream's prefix, so a time-bounded download is
         checked too); an upload sends N bytes and waits for the server's
         sha256 (no time bound). Records Mbit/s, whether the bytes are intact,
         the peak RSS of each watched process group during the transfer
         (sampled every 0.1 s), and the 1-minute load average before it.
  report FILE... [--markdown OUT] [--json OUT]   the table; exit 1 when a
         transfer was not intact or failed
"""
import argparse
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchtool  # noqa: E402  (the protocol, the test stream, process watch)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Peak:
    """Peak RSS (KiB) of each watched group, sampled at most every 0.1 s."""

    def __init__(self, watch):
        self.watch, self.peak, self.t = watch, {}, 0.0

    def sample(self, force=False):
        now = time.monotonic()
        if not force and now - self.t < 0.1:
            return
        self.t = now
        for g in self.watch.groups:
            v = self.watch.rss(g) or 0
            self.peak[g] = max(self.peak.get(g, 0), v)


def download(addr, size, max_secs, stream, buf, watch):
    peak = Peak(watch)
    peak.sample(True)
    load = loadavg()
    t0 = time.monotonic()
    s = benchtool.connect(addr, 30)
    s.settimeout(1.0)
    s.sendall(benchtool.HDR.pack(b"D", size))
    mv = memoryview(buf)
    got, timed_out = 0, False
    while got < size:
        if time.monotonic() - t0 >= max_secs:
            timed_out = True
            break
        try:
            n = s.recv_into(mv[got:min(size, got + benchtool.CHUNK)])
        except socket.timeout:
            peak.sample()
            continue
        if n == 0:
            break
        got += n
        peak.sample()
    t1 = time.monotonic()
    peak.sample(True)
    s.close()
    intact = mv[:got] == memoryview(stream)[:got] and got > 0
    return {"dir": "down", "bytes": got, "secs": t1 - t0, "mbps": got * 8 / (t1 - t0) / 1e6,
            "complete": got == size, "timed_out": timed_out, "intact": intact and (got == size or timed_out),
            "peak_rss_kib": peak.peak, "load1": load}


def upload(addr, size, stream, expect, watch):
    peak = Peak(watch)
    peak.sample(True)
    load = loadavg()
    t0 = time.monotonic()
    s = benchtool.connect(addr, 300)
    s.sendall(benchtool.HDR.pack(b"U", size))
    mv = memoryview(stream)
    off = 0
    while off < size:
        off += s.send(mv[off:min(size, off + (1 << 20))])
        peak.sample()
    if benchtool.recv_exact(s, 1) != b"A":
        raise ConnectionError("no ack")
    t1 = time.monotonic()
    peak.sample(True)
    got = benchtool.recv_exact(s, 64).decode()
    s.close()
    return {"dir": "up", "bytes": size, "secs": t1 - t0, "mbps": size * 8 / (t1 - t0) / 1e6,
            "complete": True, "timed_out": False, "intact": got == expect,
            "peak_rss_kib": peak.peak, "load1": load}


def bulk(a):
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    addr = (fam, (a.host, a.port))
    watch = benchtool.Watch(json.loads(a.watch))
    stream = benchtool.make_stream(a.bytes)
    buf = bytearray(b"\x01") * a.bytes  # pre-touched pages
    expect = benchtool.sha(stream) if "up" in a.dirs.split() else None
    res = {"path": a.name, "label": a.label, "rtt_ms": a.rtt_ms, "bytes": a.bytes,
           "max_secs": a.max_secs, "reps": []}
    warm = download(addr, min(a.bytes, 4 << 20), 30, stream, buf, watch)  # channel, token, windows
    res["warmup"] = warm
    print(f"  [{a.name} +{a.rtt_ms} ms] warm-up download {warm['bytes'] >> 20} MiB: "
          f"{warm['mbps']:.0f} Mbit/s intact={warm['intact']}", flush=True)
    lat, fails = benchtool.latency(addr, 5)  # connect + 16-byte request + first byte
    res["first_byte_ms"] = sorted(v * 1e3 for v in lat)
    res["first_byte_failed"] = fails
    print(f"  [{a.name} +{a.rtt_ms} ms] connect + first byte, 5 sequential: median "
          f"{benchtool.pct(lat, 0.5) * 1e3:.1f} ms, failed {fails}", flush=True)
    for r in range(a.reps):
        for d in a.dirs.split():
            try:
                x = download(addr, a.bytes, a.max_secs, stream, buf, watch) if d == "down" else \
                    upload(addr, a.bytes, stream, expect, watch)
            except OSError as e:
                x = {"dir": d, "error": repr(e), "intact": False, "mbps": None}
            x["rep"] = r + 1
            res["reps"].append(x)
            if x.get("error"):
                print(f"  [{a.name} +{a.rtt_ms} ms] {d} #{r + 1}: FAILED {x['error']}", flush=True)
                continue
            rss = " ".join(f"{g}={v / 1024:.0f}MiB" for g, v in x["peak_rss_kib"].items())
            print(f"  [{a.name} +{a.rtt_ms} ms] {d} #{r + 1}: {x['bytes'] >> 20} MiB in {x['secs']:.1f} s"
                  f"{' (time bound)' if x['timed_out'] else ''}: {x['mbps']:.0f} Mbit/s, intact={x['intact']},"
                  f" peak RSS {rss}, load {x['load1']:.2f}", flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


def held(r, d):
    """The most bytes the relay held towards the client (download), MiB."""
    v = r.get("relay_peak_down_kib")
    return f"{v / 1024:.1f}" if d == "down" and v else "–"


def report(a):
    runs = []
    for p in a.files:
        with open(p) as f:
            runs.append(json.load(f))
    runs.sort(key=lambda r: (r["rtt_ms"], r["path"]))
    lines = ["| added RTT | path | direction | Mbit/s, each rep | intact | peak RSS MiB, tunnel process "
             "(each rep) | peak RSS MiB, gateway | load (1 min) before each | connect + first byte, ms | relay held, MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ok = True
    for r in runs:
        for d in ("down", "up"):
            reps = [x for x in r["reps"] if x["dir"] == d]
            if not reps:
                continue
            ok = ok and all(x.get("intact") for x in reps)
            mb = ", ".join("FAILED" if x.get("error") else
                           f"{x['mbps']:.0f}{'*' if x.get('timed_out') else ''}" for x in reps)
            intact = "yes" if all(x.get("intact") for x in reps) else "**NO**"

            def rss(g):
                return ", ".join(f"{x['peak_rss_kib'].get(g, 0) / 1024:.0f}" for x in reps if "peak_rss_kib" in x)
            load = ", ".join(f"{x['load1']:.1f}" for x in reps if "load1" in x)
            fb = r.get("first_byte_ms") or []
            fbs = f"{fb[len(fb) // 2]:.1f}" if fb else "–"
            ok = ok and r.get("first_byte_failed", 0) == 0
            lines.append(f"| {r['rtt_ms']} ms | {r['path']}: {r['label']} | {d}load | {mb} | {intact} | "
                         f"{rss('tunnel')} | {rss('gateway')} | {load} | {fbs} | {held(r, d)} |")
    b = runs[0]["bytes"] >> 20 if runs else 0
    t = runs[0]["max_secs"] if runs else 0
    lines.append("")
    lines.append(f"Each transfer: one connection, {b} MiB or {t:g} s, whichever ends first "
                 "(* = stopped by the time bound; the bytes received were checked). Relay held: the most "
                 "bytes the delaying relay held towards the client over the path's connection (all its reps), "
                 "a lower bound on the HTTP/2 window the gateway was granted.")
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": benchtool.machine(), "runs": runs,
                       "extra": json.loads(a.extra) if a.extra else {}}, f, indent=1)
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bulk")
    b.add_argument("--name", required=True)
    b.add_argument("--label", default="")
    b.add_argument("--host", required=True)
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--rtt-ms", type=int, required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--watch", default="{}")
    b.add_argument("--bytes", type=int, default=256 << 20)
    b.add_argument("--max-secs", type=float, default=20)
    b.add_argument("--reps", type=int, default=2)
    b.add_argument("--dirs", default="down")
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    r.add_argument("--markdown")
    r.add_argument("--json")
    r.add_argument("--extra", default="")
    a = p.parse_args()
    if a.cmd == "bulk":
        bulk(a)
    else:
        sys.exit(report(a))


if __name__ == "__main__":
    main()
