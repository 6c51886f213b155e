#!/usr/bin/python3
"""tcptool: the TCP peers of the vm-tests (Debian python3, standard library only).

Servers run inside the sandbox namespace, clients in the client namespace.
Data is a deterministic stream: 1 MiB blocks of one fixed random block, in
which every 4 KiB starts with its own stream offset (8 bytes), so loss,
duplication and reordering of any piece (a frame, a segment) change the
sha256. Every client prints one JSON line: bytes, sha256, the
expected sha256 where it knows it, errors (errno names), elapsed seconds.

Servers:
  serve --port P --mode MODE [--bytes N] [--rate B/s --slow-secs S] [--host H (default ::, dual-stack)] [--report FILE]
    sink-reply    read until EOF, then send N bytes, close
    reply-close   send N bytes at once, close (never reads)
    reply-shut    send N bytes, shutdown(SHUT_WR), read until EOF, close
    slow-sink     read at --rate B/s for --slow-secs, then at full speed, until EOF
    source        send N bytes (never reads), close
    discard       read and drop until EOF, close; one thread for all connections
                  (thousands at once), no report
  Each finished connection appends a JSON line (bytes read, sha256) to --report.
Clients:
  connect  --host H --port P                    connect only; prints errno name and ms
  hold     --host H --port P --secs S           connect, keep the connection S seconds, close
  send-shut-read --host H --port P --bytes N    send N, shutdown(SHUT_WR), read to EOF
  read     --host H --port P [--rate --slow-secs] read to EOF (slowly at first if asked)
  read-then-send --host H --port P --bytes N    read to EOF, then send N, close
  send     --host H --port P --bytes N          send N (no shutdown), close
  read-hold-shut --host H --port P --bytes N --secs S [--send-bytes M]
           read N bytes, then wait S seconds and record whether EOF (or more
           data) arrived meanwhile ("early_eof", "extra"); then send M bytes,
           shutdown(SHUT_WR), and read to EOF within --timeout ("eof"): a
           target's FIN that only reaches the client after its half-close
  connect-many --host H --port P --count N       N connects one after another (each
           closed at once); prints one JSON line: how many ended how
           ("connected" or the errno name)
  hold-many --host H --port P --count N --secs S  open N connections one after
           another, send 100 bytes on each, print "holding N", keep them S seconds
  read-many --host H --port P --count N --rate B/s --secs S [--timeout T]
           open N connections (each within T seconds), print "reading N", read
           each at B/s (0: never read: stalled downloads) for S seconds, print
           one JSON line (bytes read in all, connections that ended early), then
           close them all (unread data: the peer sees a reset)
  expect   --bytes N                            print the sha256 of N stream bytes
"""
import argparse
import errno
import hashlib
import json
import os
import random
import resource
import selectors
import socket
import sys
import threading
import time

BLOCK = 1 << 20
STAMP = 4096  # every STAMP bytes carry their stream offset
_base = bytearray(random.Random("osh-vm-tests").randbytes(BLOCK))


def block(i):
    b = bytearray(_base)
    for off in range(0, BLOCK, STAMP):
        b[off:off + 8] = (i * BLOCK + off).to_bytes(8, "big")
    return b


def stream(n):
    """Yields the first n bytes of the test stream in chunks."""
    i = 0
    while n > 0:
        b = block(i)
        k = min(n, BLOCK)
        yield memoryview(b)[:k]
        n -= k
        i += 1


def expect_sha(n):
    h = hashlib.sha256()
    for c in stream(n):
        h.update(c)
    return h.hexdigest()


def send_stream(sock, n, rate=0, slow_secs=0):
    start = time.monotonic()
    sent = 0
    for c in stream(n):
        if rate and time.monotonic() - start < slow_secs:
            for off in range(0, len(c), 65536):
                sock.sendall(c[off:off + 65536])
                sent += len(c[off:off + 65536])
                time.sleep(65536 / rate)
        else:
            sock.sendall(c)
            sent += len(c)
    return sent


def recv_all(sock, rate=0, slow_secs=0):
    h = hashlib.sha256()
    total = 0
    start = time.monotonic()
    while True:
        slow = rate and time.monotonic() - start < slow_secs
        want = 65536 if slow else 1 << 20
        d = sock.recv(want)
        if not d:
            break
        h.update(d)
        total += len(d)
        if slow:
            time.sleep(len(d) / rate)
    return total, h.hexdigest()


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__


def report(path, obj):
    line = json.dumps(obj)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
    else:
        print(line, flush=True)


def raise_fd_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def discard_loop(ls):
    """The discard server: one selector for the listener and every connection."""
    raise_fd_limit(65536)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is ls:
                c, _ = ls.accept()
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()


def connect_many(a):
    outcomes = {}
    for _ in range(a.count):
        try:
            s = socket.create_connection((a.host, a.port), timeout=a.timeout)
            s.close()
            key = "connected"
        except OSError as e:
            key = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "timeout"
        outcomes[key] = outcomes.get(key, 0) + 1
    print(json.dumps(outcomes), flush=True)


def hold_many(a):
    raise_fd_limit(a.count + 256)
    socks = []
    for _ in range(a.count):
        s = socket.create_connection((a.host, a.port), timeout=a.timeout)
        s.sendall(b"x" * 100)
        socks.append(s)
    print("holding", len(socks), flush=True)
    time.sleep(a.secs)


def read_many(a):
    raise_fd_limit(a.count + 256)
    socks = []
    for _ in range(a.count):
        s = socket.create_connection((a.host, a.port), timeout=a.timeout)
        s.setblocking(False)
        socks.append(s)
    print("reading", len(socks), flush=True)
    total, ended = 0, 0
    sel = selectors.DefaultSelector()
    if a.rate > 0:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
    start = time.monotonic()
    got = {s: 0 for s in socks}
    while time.monotonic() - start < a.secs:
        if a.rate <= 0:
            time.sleep(min(0.5, a.secs))
            continue
        allowed = a.rate * (time.monotonic() - start)  # bytes each may have read by now
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            want = int(allowed - got[s])
            if want <= 0:
                continue
            try:
                d = s.recv(min(want, 65536))
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if not d:
                sel.unregister(s)
                ended += 1
                continue
            got[s] += len(d)
            total += len(d)
        time.sleep(0.01)
    print(json.dumps({"cmd": "read-many", "count": len(socks), "bytes": total, "ended": ended}), flush=True)
    for s in socks:
        s.close()


def serve(a):
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6 and a.host == "::":
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # v4 and v6 loopback alike
    ls.bind((a.host, a.port))
    ls.listen(4096 if a.mode == "discard" else 256)
    if a.mode == "discard":
        discard_loop(ls)
        return

    def handle(c):
        out = {"mode": a.mode}
        try:
            if a.mode == "sink-reply":
                out["bytes"], out["sha256"] = recv_all(c)
                send_stream(c, a.bytes)
            elif a.mode == "reply-close":
                send_stream(c, a.bytes)
            elif a.mode == "reply-shut":
                send_stream(c, a.bytes)
                c.shutdown(socket.SHUT_WR)
                out["bytes"], out["sha256"] = recv_all(c)
            elif a.mode == "slow-sink":
                out["bytes"], out["sha256"] = recv_all(c, a.rate, a.slow_secs)
            elif a.mode == "source":
                send_stream(c, a.bytes, a.rate, a.slow_secs)
        except OSError as e:
            out["error"] = errname(e)
        finally:
            c.close()
            report(a.report, out)

    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def client(a):
    out = {"cmd": a.cmd}
    t0 = time.monotonic()
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    try:
        s.connect((a.host, a.port))
        out["connect_ms"] = round((time.monotonic() - t0) * 1000, 2)
        out["connected"] = True
        if a.cmd == "connect":
            pass
        elif a.cmd == "hold":
            time.sleep(a.secs)
        elif a.cmd == "send-shut-read":
            s.settimeout(None)
            out["sent"] = send_stream(s, a.bytes)
            s.shutdown(socket.SHUT_WR)
            out["bytes"], out["sha256"] = recv_all(s)
        elif a.cmd == "read":
            s.settimeout(None)
            out["bytes"], out["sha256"] = recv_all(s, a.rate, a.slow_secs)
        elif a.cmd == "read-then-send":
            s.settimeout(None)
            out["bytes"], out["sha256"] = recv_all(s)
            out["sent"] = send_stream(s, a.bytes)
        elif a.cmd == "read-hold-shut":
            s.settimeout(None)
            h = hashlib.sha256()
            got = 0
            while got < a.bytes:
                d = s.recv(min(1 << 20, a.bytes - got))
                if not d:
                    out["early_eof"] = True
                    break
                h.update(d)
                got += len(d)
            out["bytes"], out["sha256"] = got, h.hexdigest()
            if not out.get("early_eof"):
                # Nothing more may arrive within S seconds: neither data nor EOF.
                s.settimeout(a.secs)
                try:
                    d = s.recv(65536)
                    out["early_eof"] = d == b""
                    out["extra"] = len(d)
                except TimeoutError:
                    out["early_eof"] = False
                    out["extra"] = 0
                out["held_s"] = round(time.monotonic() - t0, 3)
                s.settimeout(None)
                out["sent"] = send_stream(s, a.send_bytes) if a.send_bytes else 0
                s.shutdown(socket.SHUT_WR)
                t1 = time.monotonic()
                s.settimeout(a.timeout)
                rest = 0
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    rest += len(d)
                out["eof"] = True
                out["extra"] += rest
                out["eof_after_shut_ms"] = round((time.monotonic() - t1) * 1000, 2)
        elif a.cmd == "send":
            s.settimeout(None)
            out["sent"] = send_stream(s, a.bytes, a.rate, a.slow_secs)
            s.shutdown(socket.SHUT_WR)
            out["eof"] = s.recv(1) == b""
    except OSError as e:
        out["error"] = errname(e)
        out["error_ms"] = round((time.monotonic() - t0) * 1000, 2)
    finally:
        s.close()
    out["elapsed_s"] = round(time.monotonic() - t0, 3)
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", default="sink-reply")
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--slow-secs", type=float, default=0)
    p.add_argument("--timeout", type=float, default=15)
    p.add_argument("--report", default="")
    p.add_argument("--secs", type=float, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--send-bytes", type=int, default=0)
    a = p.parse_args()
    if a.cmd == "serve":
        if a.host == "127.0.0.1" and "--host" not in sys.argv:
            a.host = "::"  # servers default to dual-stack
        serve(a)
    elif a.cmd == "expect":
        print(expect_sha(a.bytes))
    elif a.cmd == "hold-many":
        hold_many(a)
    elif a.cmd == "connect-many":
        connect_many(a)
    elif a.cmd == "read-many":
        read_many(a)
    else:
        client(a)


if __name__ == "__main__":
    main()
