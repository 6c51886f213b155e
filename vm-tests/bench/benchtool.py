#!/usr/bin/python3
"""benchtool: the load generator, server and reporter of vm-tests/bench (issue 5).

Debian's python3, standard library only. One TCP protocol for every workload,
so each path needs one forwarded port: the client sends a 16-byte header
(struct "!c7xQ": op, size), then

  L  latency/idle: the server answers one byte b"H" at once, then reads to EOF
  E  echo: the server echoes every byte until EOF
  U  upload SIZE: the server reads SIZE bytes, answers b"A" (the client's clock
     stops there), then the 64-hex sha256 of what it read, then reads to EOF
  D  download SIZE: the server sends SIZE bytes of the test stream, then FIN

The test stream is deterministic (seeded random data, 1 MiB blocks, each a
different window of a random pool with its index in its first 8 bytes), so
loss, duplication and reordering change the sha256. Receivers store the
bytes and hash them after the clock stops (hashing 1 GiB takes ~0.6 s, more
than a transfer on the faster paths); senders send from a prebuilt buffer.

Subcommands:
  serve  --port P [--host ::] [--stream-bytes N]      selectors loop, one thread
  client --name X --host H --port P --out FILE [--watch JSON] [sizes...]
         runs every workload against one path, prints progress, writes JSON
  idle   --host H --port P --count N --pid PID [--after-n M]
         N idle connections, RSS growth of PID per connection, then M
         sequential connections after they closed; one JSON line
  report FILE... [--json OUT] [--markdown OUT]        the table and the targets
"""
import argparse
import errno
import hashlib
import json
import os
import platform
import random
import resource
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

HDR = struct.Struct("!c7xQ")
BLOCK = 1 << 20
CHUNK = 4 << 20  # largest single send()/recv_into(), bytes
_POOL = None


def make_stream(n):
    """The first n bytes of the test stream, as a bytearray."""
    global _POOL
    if _POOL is None:
        _POOL = random.Random(0x05E11).randbytes(9 * BLOCK)
    buf = bytearray(n)
    for i in range((n + BLOCK - 1) // BLOCK):
        k = min(BLOCK, n - i * BLOCK)
        off = (i * 65599 * 16) % (8 * BLOCK)
        buf[i * BLOCK:i * BLOCK + k] = _POOL[off:off + k]
        idx = i.to_bytes(8, "big")[:k]
        buf[i * BLOCK:i * BLOCK + len(idx)] = idx
    return buf


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------- server

class Server:
    """One-thread selectors server for the protocol above. Every socket is
    non-blocking; per-connection state is a small dict."""

    def __init__(self, host, port, stream_bytes):
        self.sel = selectors.DefaultSelector()
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.ls = socket.socket(fam, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            self.ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # v4 and v6 alike
        self.stream = memoryview(make_stream(stream_bytes))
        self.upbuf = memoryview(bytearray(b"\x01") * stream_bytes)  # pre-touched pages
        self.ls.bind((host, port))
        self.ls.listen(4096)
        self.ls.setblocking(False)
        self.sel.register(self.ls, selectors.EVENT_READ, None)

    def run(self):
        while True:
            for key, ev in self.sel.select():
                if key.data is None:
                    self.accept()
                else:
                    self.step(key.fileobj, key.data, ev)

    def accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except BlockingIOError:
                return
            except OSError as e:  # EMFILE and friends: try again on the next event
                print(f"accept: {e}", file=sys.stderr, flush=True)
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = {"hdr": b"", "op": None, "out": b"", "off": 0}
            self.sel.register(s, selectors.EVENT_READ, c)

    def close(self, s):
        self.sel.unregister(s)
        s.close()

    def want(self, s, c):
        ev = selectors.EVENT_READ  # the header, echo data, or EOF/reset
        if c["out"] or (c["op"] == b"D" and c["off"] < c["size"]):
            ev |= selectors.EVENT_WRITE
        if c["op"] == b"E" and len(c["out"]) > (1 << 20):
            ev &= ~selectors.EVENT_READ  # back-pressure: echo what we have first
        self.sel.modify(s, ev, c)

    def step(self, s, c, ev):
        try:
            if ev & selectors.EVENT_WRITE:
                self.write(s, c)
            if ev & selectors.EVENT_READ:
                if not self.read(s, c):
                    self.close(s)
                    return
            self.want(s, c)
        except OSError:
            self.close(s)

    def read(self, s, c):
        """Returns False when the connection is over."""
        op = c["op"]
        if op == b"U" and c["got"] < c["size"]:
            n = s.recv_into(self.upbuf[c["got"]:min(c["size"], c["got"] + CHUNK)])
            if n == 0:
                return False
            c["got"] += n
            if c["got"] == c["size"]:
                s.setblocking(True)
                s.sendall(b"A")
                s.sendall(sha(self.upbuf[:c["size"]]).encode())
                s.setblocking(False)
            return True
        try:
            d = s.recv(65536)
        except BlockingIOError:
            return True
        if not d:
            return False
        if op is None:
            c["hdr"] += d
            if len(c["hdr"]) < HDR.size:
                return True
            op, size = HDR.unpack(c["hdr"][:HDR.size])
            rest = c["hdr"][HDR.size:]
            c.update(op=op, size=size, got=0)
            if op == b"L":
                c["out"] = b"H"
            elif op == b"E":
                c["out"] = rest
            elif op == b"U":
                if size > len(self.upbuf):
                    return False
                self.upbuf[:len(rest)] = rest
                c["got"] = len(rest)
            elif op == b"D":
                if size > len(self.stream):
                    return False
            else:
                return False
            self.write(s, c)
            return True
        if op == b"E":
            c["out"] += d
            self.write(s, c)
        return True  # L, U (after SIZE), D: discard until EOF

    def write(self, s, c):
        if c["out"]:
            try:
                n = s.send(c["out"])
            except BlockingIOError:
                return
            c["out"] = c["out"][n:]
        elif c["op"] == b"D" and c["off"] < c["size"]:
            while c["off"] < c["size"]:
                try:
                    n = s.send(self.stream[c["off"]:min(c["size"], c["off"] + CHUNK)])
                except BlockingIOError:
                    return
                c["off"] += n
            s.shutdown(socket.SHUT_WR)


# ---------------------------------------------------------------- process watch

TCK = os.sysconf("SC_CLK_TCK")


def _children():
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(p))
        except (OSError, ValueError):
            pass
    return kids


def _tree(roots):
    kids = _children()
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_s(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            t += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError):
            pass
    return t / TCK


def rss_kib(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        t += int(line.split()[1])
        except OSError:
            pass
    return t


class Profiler:
    """perf record (cpu-clock or another event, call graphs) of each watched process group while a
    transfer runs (bench.sh --profile; issue 16.1: this machine has no hardware
    counters). One perf.data per group and transfer: DIR/<path>-<word>-<group>.data."""

    def __init__(self, out_dir, path_name, watch, event="cpu-clock"):
        self.dir, self.path, self.watch = out_dir, path_name, watch
        # cpu-clock is sampled at 999 Hz; another event (page-faults) is
        # recorded at every occurrence, so the sample count is the count.
        self.event_args = ["-e", event] + (["-F", "999"] if event == "cpu-clock" else ["-c", "1"])
        self.procs = []

    def start(self, word):
        if not self.dir:
            return
        os.makedirs(self.dir, exist_ok=True)
        for g, roots in self.watch.groups.items():
            pids = ",".join(str(p) for p in _tree(roots))
            out = os.path.join(self.dir, f"{self.path}-{word}-{g}.data")
            with open(out + ".log", "w") as err:  # perf's own complaints, next to its data
                self.procs.append((out, subprocess.Popen(
                    ["perf", "record", "-q", *self.event_args, "-g", "-o", out, "-p", pids],
                    stdout=subprocess.DEVNULL, stderr=err)))
        time.sleep(0.3)  # perf attaches before the transfer starts

    def stop(self):
        for _, pr in self.procs:
            pr.send_signal(signal.SIGINT)
        for out, pr in self.procs:
            try:
                pr.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait()
            if not os.path.exists(out):
                print(f"  [{self.path}] profile: perf record wrote no {out} (exit {pr.returncode}; see {out}.log)",
                      flush=True)
        self.procs = []


class Watch:
    """Process groups (roots and their descendants) whose CPU and RSS are sampled."""

    def __init__(self, groups):
        self.groups = {k: [int(p) for p in v] for k, v in groups.items() if v}

    def cpu(self):
        return {k: cpu_s(_tree(v)) for k, v in self.groups.items()}

    def rss(self, group):
        return rss_kib(_tree(self.groups[group])) if group in self.groups else None


# ---------------------------------------------------------------- client workloads

def connect(addr, timeout=30.0):
    s = socket.socket(addr[0], socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect(addr[1])
    return s


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise ConnectionError("EOF after %d of %d bytes" % (len(b), n))
        b += d
    return bytes(b)


def bulk_up(addr, stream, size, expect, watch):
    c0 = watch.cpu()
    t0 = time.monotonic()
    s = connect(addr, 120)
    s.sendall(HDR.pack(b"U", size))
    mv = memoryview(stream)
    off = 0
    while off < size:
        off += s.send(mv[off:min(size, off + CHUNK)])
    if recv_exact(s, 1) != b"A":
        raise ConnectionError("no ack")
    t1 = time.monotonic()
    c1 = watch.cpu()
    got = recv_exact(s, 64).decode()
    s.close()
    return {"gbps": size * 8 / (t1 - t0) / 1e9, "secs": t1 - t0, "sha_ok": got == expect,
            "cpu_s": {k: c1[k] - c0[k] for k in c1}}


def bulk_down(addr, buf, size, expect, watch):
    c0 = watch.cpu()
    t0 = time.monotonic()
    s = connect(addr, 120)
    s.sendall(HDR.pack(b"D", size))
    mv = memoryview(buf)
    got = 0
    while True:
        n = s.recv_into(mv[got:min(len(buf), got + CHUNK)])
        if n == 0:
            break
        got += n
        if got == len(buf):
            if s.recv(1):
                raise ConnectionError("more bytes than asked for")
            break
    t1 = time.monotonic()
    c1 = watch.cpu()
    s.close()
    ok = got == size and sha(mv[:size]) == expect
    return {"gbps": got * 8 / (t1 - t0) / 1e9, "secs": t1 - t0, "sha_ok": ok,
            "cpu_s": {k: c1[k] - c0[k] for k in c1}}


def latency(addr, n):
    """n sequential connections: connect, request, first byte; seconds each."""
    out, fails = [], 0
    hdr = HDR.pack(b"L", 0)
    for _ in range(n):
        t0 = time.monotonic()
        try:
            s = connect(addr, 10)
            s.sendall(hdr)
            if s.recv(1) != b"H":
                raise ConnectionError("bad first byte")
            out.append(time.monotonic() - t0)
            s.close()
        except OSError:
            fails += 1
    return out, fails


def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def rr(addr, n, size=64):
    s = connect(addr, 30)
    s.sendall(HDR.pack(b"E", 0))
    msg = os.urandom(size)
    t0 = time.monotonic()
    for _ in range(n):
        s.sendall(msg)
        if recv_exact(s, size) != msg:
            raise ConnectionError("echo mismatch")
    t1 = time.monotonic()
    s.close()
    return t1 - t0


def churn(addr, n, size=1024):
    payload = os.urandom(size)
    hdr = HDR.pack(b"E", 0)
    fails = 0
    t0 = time.monotonic()
    for _ in range(n):
        try:
            s = connect(addr, 10)
            s.sendall(hdr + payload)
            if recv_exact(s, size) != payload:
                raise ConnectionError("echo mismatch")
            s.close()
        except OSError:
            fails += 1
    return time.monotonic() - t0, fails


def storm(addr, n, size, expect):
    """n concurrent downloads of size bytes, one thread, non-blocking sockets."""
    sel = selectors.DefaultSelector()
    conns = []
    t0 = time.monotonic()
    for _ in range(n):
        s = socket.socket(addr[0], socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect_ex(addr[1])
        c = {"s": s, "buf": bytearray(size), "got": 0, "sent": False, "err": None}
        conns.append(c)
        sel.register(s, selectors.EVENT_WRITE, c)
    live = n
    deadline = t0 + 60
    while live and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=1):
            c = key.data
            s = c["s"]
            try:
                if not c["sent"]:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    s.send(HDR.pack(b"D", size))
                    c["sent"] = True
                    sel.modify(s, selectors.EVENT_READ, c)
                    continue
                mv = memoryview(c["buf"])
                n_ = s.recv_into(mv[c["got"]:]) if c["got"] < size else len(s.recv(1))
                if n_ == 0:
                    sel.unregister(s)
                    live -= 1
                else:
                    c["got"] += n_
            except BlockingIOError:
                pass
            except OSError as e:
                c["err"] = errno.errorcode.get(e.errno, str(e))
                sel.unregister(s)
                live -= 1
    t1 = time.monotonic()
    bad = 0
    for c in conns:
        if c["err"] or c["got"] != size or sha(c["buf"]) != expect:
            bad += 1
        c["s"].close()
    return t1 - t0, bad + live


def idle(addr, n, watch, group, baseline):
    """n concurrent connections, each proven end to end (the server's byte);
    RSS of `group` with all of them open, against `baseline` (KiB, measured
    once before the first repetition: freed memory stays in the process's
    heap, so a later repetition's own start would hide the growth)."""
    time.sleep(0.5)  # measurement hygiene: the previous rep's connections wind down
    before = baseline
    socks, fails = [], 0
    hdr = HDR.pack(b"L", 0)
    t0 = time.monotonic()
    for _ in range(n):
        try:
            s = connect(addr, 15)
            s.sendall(hdr)
            socks.append(s)
        except OSError:
            fails += 1
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    ok = 0
    deadline = time.monotonic() + 30
    while ok + fails < n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            sel.unregister(key.fileobj)
            try:
                if key.fileobj.recv(1) == b"H":
                    ok += 1
                else:
                    fails += 1
            except OSError:
                fails += 1
    t_open = time.monotonic() - t0
    time.sleep(0.3)  # let lazily allocated per-connection state settle
    during = watch.rss(group)
    for s in socks:
        s.close()
    res = {"established": ok, "failed": n - ok, "open_secs": t_open}
    if before is not None:
        res.update(rss_before_kib=before, rss_during_kib=during,
                   rss_per_conn_kib=(during - before) / max(ok, 1))
    return res


def client(a):
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    addr = (fam, (a.host, a.port))
    watch = Watch(json.loads(a.watch))
    res = {"path": a.name, "label": a.label, "host": a.host, "port": a.port,
           "params": {k: getattr(a, k) for k in ("reps", "bulk_bytes", "latency_n", "rr_n",
                                                 "storm_n", "storm_bytes", "churn_n", "idle_n")}}

    def log(msg):
        print(f"  [{a.name}] {msg}", flush=True)

    stream = make_stream(a.bulk_bytes)
    expect_bulk = sha(stream)
    expect_storm = sha(stream[:a.storm_bytes]) if a.storm_bytes <= a.bulk_bytes else sha(make_stream(a.storm_bytes))
    downbuf = bytearray(b"\x01") * a.bulk_bytes  # pre-touched pages

    latency(addr, 20)  # warm-up: channel, tokens, lazily created state

    res["idle"] = []
    baseline = watch.rss("tunnel")
    for r in range(a.reps):
        x = idle(addr, a.idle_n, watch, "tunnel", baseline)
        res["idle"].append(x)
        log(f"idle {a.idle_n}: {x}")

    res["latency"] = []
    for r in range(a.reps):
        v, fails = latency(addr, a.latency_n)
        x = {"p50_ms": pct(v, 0.5) * 1e3, "p95_ms": pct(v, 0.95) * 1e3, "failed": fails}
        res["latency"].append(x)
        log(f"connect+first byte x{a.latency_n}: p50 {x['p50_ms']:.3f} ms p95 {x['p95_ms']:.3f} ms fails {fails}")

    res["rr"] = []
    for r in range(a.reps):
        try:
            secs = rr(addr, a.rr_n)
        except OSError as e:
            res["rr"].append({"secs": None, "per_s": None, "error": repr(e)})
            log(f"rr {a.rr_n} x 64 B: FAILED {e!r}")
            continue
        res["rr"].append({"secs": secs, "per_s": a.rr_n / secs})
        log(f"rr {a.rr_n} x 64 B: {secs:.3f} s ({a.rr_n / secs:.0f}/s)")

    res["churn"] = []
    for r in range(a.reps):
        secs, fails = churn(addr, a.churn_n)
        res["churn"].append({"secs": secs, "failed": fails})
        log(f"churn {a.churn_n}: {secs:.3f} s, fails {fails}")

    res["storm"] = []
    for r in range(a.reps):
        secs, bad = storm(addr, a.storm_n, a.storm_bytes, expect_storm)
        res["storm"].append({"secs": secs, "failed": bad})
        log(f"storm {a.storm_n} x {a.storm_bytes} B: {secs:.3f} s, bad {bad}")

    res["bulk_up"], res["bulk_down"] = [], []
    prof = Profiler(a.profile_dir, a.name, watch, a.profile_event)
    for r in range(a.reps):
        for key, fn, buf, word in (("bulk_up", bulk_up, stream, "upload"),
                                   ("bulk_down", bulk_down, downbuf, "download")):
            # The profiled transfer is an extra one, before the measured ones
            # (perf's own cost must not enter the table).
            if r == 0 and a.profile_dir:
                prof.start(word)
                try:
                    fn(addr, buf, a.bulk_bytes, expect_bulk, watch)
                except OSError as e:
                    log(f"profiled {word}: FAILED {e!r}")
                prof.stop()
            try:
                x = fn(addr, buf, a.bulk_bytes, expect_bulk, watch)
            except OSError as e:
                res[key].append({"gbps": None, "secs": None, "sha_ok": False, "cpu_s": {},
                                 "error": repr(e)})
                log(f"{word} {a.bulk_bytes} B: FAILED {e!r}")
                continue
            res[key].append(x)
            log(f"{word} {a.bulk_bytes} B: {x['gbps']:.2f} Gbit/s sha_ok={x['sha_ok']} cpu={fmt_cpu(x['cpu_s'])}")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


def idle_check(a):
    """The idle-memory check of vm-tests/test_idle_memory.sh: warm-up, then
    idle() against the RSS of process --pid (and its children), then
    --after-n sequential connections right after the idle ones closed (the
    close storm must not fail later connections). One JSON line."""
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    addr = (fam, (a.host, a.port))
    watch = Watch({"tunnel": [a.pid]})
    latency(addr, 20)  # warm-up: channel, tokens, lazily created state
    res = idle(addr, a.count, watch, "tunnel", watch.rss("tunnel"))
    v, fails = latency(addr, a.after_n)
    res.update(after_ok=len(v), after_failed=fails, after_max_ms=round(max(v, default=0) * 1e3, 1))
    print(json.dumps(res), flush=True)


def fmt_cpu(d):
    return " ".join(f"{k}={v:.2f}s" for k, v in d.items())


# ---------------------------------------------------------------- report

def stats(v):
    v = [x for x in v if x is not None]
    if not v:
        return None
    return {"min": min(v), "median": statistics.median(v), "max": max(v), "n": len(v)}


def summarize(r):
    gib = r["params"]["bulk_bytes"] / (1 << 30)
    s = {"path": r["path"], "label": r["label"]}
    for d in ("bulk_up", "bulk_down"):
        reps = r[d]
        s[d + "_gbps"] = stats([x["gbps"] for x in reps])
        s[d + "_sha_ok"] = all(x["sha_ok"] for x in reps)
        s[d + "_failed"] = sum(1 for x in reps if x.get("error"))
        for g in sorted({g for x in reps for g in x["cpu_s"]}):
            s[f"{d}_cpu_s_per_gib_{g}"] = stats([x["cpu_s"][g] / gib for x in reps if g in x["cpu_s"]])
    s["latency_p50_ms"] = stats([x["p50_ms"] for x in r["latency"]])
    s["latency_p95_ms"] = stats([x["p95_ms"] for x in r["latency"]])
    s["latency_failed"] = sum(x["failed"] for x in r["latency"])
    s["rr_per_s"] = stats([x["per_s"] for x in r["rr"]])
    s["rr_failed"] = sum(1 for x in r["rr"] if x.get("error"))
    s["storm_secs"] = stats([x["secs"] for x in r["storm"]])
    s["storm_failed"] = sum(x["failed"] for x in r["storm"])
    s["churn_secs"] = stats([x["secs"] for x in r["churn"]])
    s["churn_failed"] = sum(x["failed"] for x in r["churn"])
    s["idle_established"] = stats([x["established"] for x in r["idle"]])
    s["idle_failed"] = sum(x["failed"] for x in r["idle"])
    s["idle_rss_per_conn_kib"] = stats([x.get("rss_per_conn_kib") for x in r["idle"]])
    return s


def cell(st, fmt="{:.2f}"):
    if not st:
        return "–"
    if st["n"] == 1:
        return fmt.format(st["median"])
    return f"{fmt.format(st['median'])} ({fmt.format(st['min'])}–{fmt.format(st['max'])})"


def machine():
    m = {"kernel": platform.release(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    m["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            m["mem_gib"] = round(int(f.readline().split()[1]) / (1 << 20), 1)
        with open("/etc/debian_version") as f:
            m["debian"] = f.read().strip()
    except OSError:
        pass
    return m


def targets(by):
    """Issue 5 §4, as ratios of medians from the same run."""
    out = []

    def med(p, k):
        st = by.get(p, {}).get(k)
        return st["median"] if st else None

    def add(name, ok, detail):
        out.append({"target": name, "met": bool(ok), "detail": detail})

    for d, word in (("bulk_up", "upload"), ("bulk_down", "download")):
        dd, cc, bb = med("D", d + "_gbps"), med("C", d + "_gbps"), med("B", d + "_gbps")
        if dd and cc:
            add(f"D {word} ≥ 0.9 × C", dd >= 0.9 * cc, f"D/C = {dd / cc:.2f} ({dd:.2f} vs {cc:.2f} Gbit/s)")
        if dd and bb:
            add(f"D {word} ≥ 1.5 × B", dd >= 1.5 * bb, f"D/B = {dd / bb:.2f} ({dd:.2f} vs {bb:.2f} Gbit/s)")
    dl, cl = med("D", "latency_p50_ms"), med("C", "latency_p50_ms")
    if dl is not None and cl is not None:
        add("D connect+first byte p50 ≤ C p50 + 0.5 ms", dl <= cl + 0.5,
            f"D − C = {dl - cl:+.3f} ms ({dl:.3f} vs {cl:.3f} ms)")
    ul = med("U", "latency_p50_ms")
    if ul is not None and dl is not None:
        # Not a target: what upstream behaviour (no "connected" signal) costs
        # a client that speaks first, against the negotiated extension.
        out.append({"target": "U (upstream mode) connect+first byte p50 − D p50: the settle window's cost",
                    "met": None, "detail": f"U − D = {ul - dl:+.3f} ms ({ul:.3f} vs {dl:.3f} ms)"})
    ds, cs = med("D", "storm_secs"), med("C", "storm_secs")
    if ds and cs:
        add("D storm wall time ≤ 1.2 × C", ds <= 1.2 * cs, f"D/C = {ds / cs:.2f} ({ds:.3f} vs {cs:.3f} s)")
    for p in ("D", "E"):
        if p not in by:
            continue
        rss = med(p, "idle_rss_per_conn_kib")
        if rss is not None:
            add(f"{p} RSS growth ≤ 32 KiB per idle connection", rss <= 32, f"{rss:.1f} KiB per connection")
        est = by[p].get("idle_established")
        n = by[p].get("idle_n")
        add(f"{p} {n} concurrent connections, zero failures",
            by[p]["idle_failed"] == 0 and est and est["min"] == n,
            f"{by[p]['idle_failed']} failed over {est['n'] if est else 0} reps")
    return out


def report(a):
    runs = []
    for path in a.files:
        with open(path) as f:
            runs.append(json.load(f))
    runs.sort(key=lambda r: r["path"])
    by = {}
    for r in runs:
        s = summarize(r)
        s["idle_n"] = r["params"]["idle_n"]
        by[r["path"]] = s
    p0 = runs[0]["params"]
    rows = [
        (f"upload {p0['bulk_bytes'] >> 20} MiB, Gbit/s", "bulk_up_gbps", "{:.2f}"),
        (f"download {p0['bulk_bytes'] >> 20} MiB, Gbit/s", "bulk_down_gbps", "{:.2f}"),
        (f"connect+first byte p50, ms ({p0['latency_n']} seq.)", "latency_p50_ms", "{:.3f}"),
        ("connect+first byte p95, ms", "latency_p95_ms", "{:.3f}"),
        (f"request/response 64 B, round trips/s ({p0['rr_n']})", "rr_per_s", "{:.0f}"),
        (f"storm {p0['storm_n']} × {p0['storm_bytes'] >> 10} KiB, wall s", "storm_secs", "{:.3f}"),
        (f"churn {p0['churn_n']} × (connect, 1 KiB, close), wall s", "churn_secs", "{:.3f}"),
        (f"idle {p0['idle_n']}: established", "idle_established", "{:.0f}"),
        ("idle: tunnel-process RSS growth, KiB/conn", "idle_rss_per_conn_kib", "{:.1f}"),
        ("upload CPU s/GiB: tunnel process", "bulk_up_cpu_s_per_gib_tunnel", "{:.2f}"),
        ("upload CPU s/GiB: gateway", "bulk_up_cpu_s_per_gib_gateway", "{:.2f}"),
        ("upload CPU s/GiB: supervisor", "bulk_up_cpu_s_per_gib_supervisor", "{:.2f}"),
        ("upload CPU s/GiB: sshd (B only)", "bulk_up_cpu_s_per_gib_sshd", "{:.2f}"),
        ("download CPU s/GiB: tunnel process", "bulk_down_cpu_s_per_gib_tunnel", "{:.2f}"),
        ("download CPU s/GiB: gateway", "bulk_down_cpu_s_per_gib_gateway", "{:.2f}"),
        ("download CPU s/GiB: supervisor", "bulk_down_cpu_s_per_gib_supervisor", "{:.2f}"),
        ("download CPU s/GiB: sshd (B only)", "bulk_down_cpu_s_per_gib_sshd", "{:.2f}"),
    ]
    paths = [r["path"] for r in runs]
    lines = ["| metric (median (min–max) of %d reps) | %s |" % (p0["reps"], " | ".join(
        f"{p}: {by[p]['label']}" for p in paths)),
             "|---|" + "---|" * len(paths)]
    for title, key, fmt in rows:
        if not any(by[p].get(key) for p in paths):
            continue
        lines.append(f"| {title} | " + " | ".join(cell(by[p].get(key), fmt) for p in paths) + " |")
    fail_keys = ("bulk_up_failed", "bulk_down_failed", "latency_failed", "rr_failed", "storm_failed",
                 "churn_failed", "idle_failed")
    fails = {p: {k: by[p][k] for k in fail_keys} for p in paths}
    sha_ok = {p: by[p]["bulk_up_sha_ok"] and by[p]["bulk_down_sha_ok"] for p in paths}
    lines.append("")
    lines.append("sha256 of every bulk transfer: " + ", ".join(
        f"{p} {'ok' if sha_ok[p] else 'MISMATCH'}" for p in paths))
    lines.append("failures (upload/download/latency/rr/storm/churn/idle): " + ", ".join(
        f"{p} {'/'.join(str(v) for v in fails[p].values())}" for p in paths))
    tg = targets(by)
    lines.append("")
    lines.append("| target (issue 5 §4) | met | measured |")
    lines.append("|---|---|---|")
    for t in tg:
        met = 'info' if t['met'] is None else ('yes' if t['met'] else '**no**')
        lines.append(f"| {t['target']} | {met} | {t['detail']} |")
    text = "\n".join(lines)
    print(text)
    doc = {"machine": machine(), "params": p0, "summary": by, "targets": tg, "runs": runs,
           "sha_ok": sha_ok, "extra": json.loads(a.extra) if a.extra else {}}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    ok = all(sha_ok.values()) and all(sum(v.values()) == 0 for v in fails.values())
    return 0 if ok or a.no_fail else 1


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def main():
    raise_fd_limit()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="::")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--stream-bytes", type=int, default=1 << 30)
    c = sub.add_parser("client")
    c.add_argument("--name", required=True)
    c.add_argument("--label", default="")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--watch", default="{}", help='JSON {"tunnel": [pid...], "gateway": [...], ...}')
    c.add_argument("--reps", type=int, default=3)
    c.add_argument("--bulk-bytes", type=int, default=1 << 30)
    c.add_argument("--latency-n", type=int, default=1000)
    c.add_argument("--rr-n", type=int, default=10000)
    c.add_argument("--storm-n", type=int, default=50)
    c.add_argument("--storm-bytes", type=int, default=1 << 20)
    c.add_argument("--churn-n", type=int, default=1000)
    c.add_argument("--idle-n", type=int, default=1000)
    c.add_argument("--profile-dir", default="", help="perf record each group during one extra bulk transfer per direction")
    c.add_argument("--profile-event", default="cpu-clock", help="perf event of --profile-dir (cpu-clock: sampled; others: every one)")
    i = sub.add_parser("idle", help="hold --count idle connections; RSS growth of --pid per connection")
    i.add_argument("--host", required=True)
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--count", type=int, required=True)
    i.add_argument("--pid", type=int, required=True)
    i.add_argument("--after-n", type=int, default=20)
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    r.add_argument("--json")
    r.add_argument("--markdown")
    r.add_argument("--extra", default="", help="JSON object stored as 'extra' (versions, cipher)")
    r.add_argument("--no-fail", action="store_true", help="exit 0 even with failures")
    a = p.parse_args()
    if a.cmd == "serve":
        srv = Server(a.host, a.port, a.stream_bytes)
        print(f"benchtool: serving on [{a.host}]:{a.port}", flush=True)
        srv.run()
    elif a.cmd == "client":
        client(a)
    elif a.cmd == "idle":
        idle_check(a)
    else:
        sys.exit(report(a))


if __name__ == "__main__":
    main()
