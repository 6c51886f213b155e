#!/usr/bin/python3
"""hostile: hostile packets for vm-tests/test_hostile.sh (Debian python3 + python3-scapy).

Runs in the client namespace. Packets are built with scapy and written with an
AF_PACKET SOCK_DGRAM socket bound to the TUN: on an L3 TUN (IFF_TUN |
IFF_NO_PI) that hands the raw IP packet to the tunnel exactly as if the
kernel had routed it there. The same socket sees what the tunnel writes back
into the TUN (PACKET_HOST), so each case reports the tunnel's answers.

Each case prints one JSON line:
  case, sent (packets of non-zero length: what rx_packets must grow by),
  answers (the tunnel's packets to us, one summary each, e.g. "TCP SA", "TCP R", "ICMP 3/1"),
  live_* (for cases against a live connection: "ok" or an errno name),
  plus case details.

Cases (--v4/--v6: the sandbox's addresses; --port: a port answered by
`hostile.py echo-server` in the sandbox):
  frag4       IPv4 fragments of a SYN: in order, out of order, overlapping, a tiny first fragment
  frag6       IPv6 fragments (fragment header), in order, out of order, and an atomic fragment
  ext6        IPv6 SYNs behind hop-by-hop, destination options and routing (type 0, type 4) headers
  ipopts      IPv4 SYNs with IP options (NOP+record route, router alert)
  badsum-ip   an IPv4 SYN with a bad header checksum
  badsum-tcp  an IPv4 and an IPv6 SYN with a bad TCP checksum, and data with a bad checksum
              on a live connection (which must not see it)
  truncated   zero-length, truncated IPv4/IPv6/TCP headers, length fields past the packet, IHL 4
  synfin      SYN+FIN and SYN+RST (IPv4 and IPv6)
  rst-storm   on a live connection: 200 RSTs out of the window, 50 in the window but not
              exact (challenge ACKs, RFC 5961 §3.2), 100 to unknown flows; the connection must
              still echo; then one RST with the exact sequence number, after which the
              connection must be gone (the client's next segment draws a RST: ECONNRESET)
  tcp-options SYNs with an unknown option, an option running past the header, a zero option
              length, 40 bytes of options, MSS 0, window scale 14: each is answered SYN-ACK
  ecn         a SYN with ECE|CWR in an IP packet marked CE: answered SYN-ACK without ECE
              (lwIP has no ECN: RFC 3168 §6.1.1)
  icmp-too-big ICMP "fragmentation needed" (IPv4, MTU 576) and ICMPv6 "packet too big"
              (MTU 1280) quoting a live connection's segment; both connections must still echo
  land        a SYN whose source is the sandbox's own address and port (LAND): must not be
              answered (an answer goes to a sandbox address, straight back into the TUN)
  seq-wrap    on a live connection, a FIN with sequence number = the next expected + 2^31
              (found by stack_fuzz: lwIP 2.1.3 aborts on it); the connection must still echo
Server:
  echo-server --port P    echo every byte, dual-stack on ::, one thread per connection
"""
import argparse
import errno
import json
import os
import random
import select
import socket
import struct
import threading
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
# How much longer than on an idle machine to wait for the system (the
# vm-tests' load-scaled wait: lib.sh osh_scale_factor; 1 when not set).
# Collection windows only grow: "no answer" is then watched for longer.
try:
    WAIT = max(1.0, float(os.environ.get("OSH_WAIT_FACTOR", "1")))
except ValueError:
    WAIT = 1.0

PACKET_HOST = 0
PACKET_OUTGOING = 4

CLIENT4 = "198.18.0.1"  # the TUN's own addresses: the kernel's source for the tunnel
CLIENT6 = "fd00:6f73:6800::1"


def errname(e):
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def csum(data):
    """Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def raw_tcp(src, dst, sport, dport, flags, seq=1000, ack=0, opts=b"", payload=b"", win=64240, good=True):
    """A TCP segment byte by byte (options exactly as given, padded to 4 bytes),
    with a valid checksum unless good=False; returned inside an IP packet."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    opts = opts + b"\0" * (-len(opts) % 4)
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq % (1 << 32), ack % (1 << 32),
                      ((20 + len(opts)) // 4) << 4, flags, win, 0, 0) + opts + payload
    v6 = ":" in src
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    if v6:
        pseudo = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack("!I3xB", len(seg), 6)
    else:
        pseudo = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack("!xBH", 6, len(seg))
    c = csum(pseudo + seg)
    if not good:
        c ^= 0x5A5A
    seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    return bytes(IPv6(src=src, dst=dst, nh=6) / seg) if v6 else bytes(IP(src=src, dst=dst, proto=6) / seg)


def fix_ip4_checksum(pkt):
    pkt = bytearray(pkt)
    ihl = (pkt[0] & 15) * 4
    pkt[10:12] = b"\0\0"
    pkt[10:12] = struct.pack("!H", csum(bytes(pkt[:ihl])))
    return bytes(pkt)


SYN, FIN, RST, PSH, ACK, ECE, CWR = 0x02, 0x01, 0x04, 0x08, 0x10, 0x40, 0x80


class Tun:
    """Writes raw IP packets into the TUN and reads what the tunnel writes back."""

    def __init__(self, ifname):
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sent = 0
        self.log = []  # (direction "in"/"out", bytes)
        self.live_ports = set()  # local ports of live connections (their traffic is not an answer)

    def send(self, pkt):
        data = bytes(pkt)
        proto = ETH_P_IPV6 if data[:1] and data[0] >> 4 == 6 else ETH_P_IP
        self.sock.sendto(data, (self.ifname, proto))
        if data:
            self.sent += 1

    def collect(self, secs):
        """Reads every packet on the TUN for `secs` seconds (answers arrive within ms)."""
        deadline = time.monotonic() + secs * WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return
            data, addr = self.sock.recvfrom(65536)
            self.log.append(("in" if addr[2] == PACKET_HOST else "out", data))

    def answers(self, match=None):
        """Summaries of the tunnel's packets (direction "in") since the last clear()."""
        out = []
        for d, data in self.log:
            if d != "in":
                continue
            pkt = parse(data)
            if pkt is None:
                continue
            if match is None and live_port(pkt) in self.live_ports:
                continue
            if match and not match(pkt):
                continue
            out.append(summary(pkt))
        return out

    def clear(self):
        self.log = []


def parse(data):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    if not data:
        return None
    return IP(data) if data[0] >> 4 == 4 else IPv6(data)


def live_port(pkt):
    from scapy.layers.inet import TCP
    return pkt[TCP].dport if TCP in pkt else None


def summary(pkt):
    from scapy.layers.inet import TCP, ICMP
    from scapy.layers.inet6 import _ICMPv6
    if TCP in pkt:
        return "TCP " + str(pkt[TCP].flags)
    if ICMP in pkt:
        return "ICMP %d/%d" % (pkt[ICMP].type, pkt[ICMP].code)
    for layer in pkt.layers():
        if issubclass(layer, _ICMPv6):
            p = pkt[layer]
            return "ICMPv6 %d/%d" % (p.type, p.code)
    return pkt.summary()


def tcp_flags_of(pkt):
    from scapy.layers.inet import TCP
    return str(pkt[TCP].flags) if TCP in pkt else ""


class Live:
    """A real TCP connection through the tunnel to the sandbox's echo server,
    plus the sequence numbers both ends use, read off the TUN."""

    def __init__(self, tun, addr, port):
        self.tun, self.addr, self.port = tun, addr, port
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.s = socket.socket(fam, socket.SOCK_STREAM)
        self.s.settimeout(5 * WAIT)
        self.s.connect((addr, port))
        self.lport = self.s.getsockname()[1]
        tun.live_ports.add(self.lport)
        self.n = 0
        res = self.check()
        if res != "ok":
            raise RuntimeError("live connection does not echo: " + res)
        self.learn()

    def check(self):
        """Sends one line, expects it back. "ok" or the errno name."""
        self.n += 1
        msg = ("live-%d-%s\n" % (self.n, "x" * 40)).encode()
        try:
            self.s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                d = self.s.recv(len(msg) - len(got))
                if not d:
                    return "EOF"
                got += d
            return "ok" if got == msg else "mismatch"
        except OSError as e:
            return errname(e)

    def learn(self):
        """client_nxt = the client's next sequence number (what lwIP expects),
        server_nxt = the sandbox side's next sequence number."""
        from scapy.layers.inet import TCP
        self.tun.collect(0.3)  # the echo's segments and the kernel's ACK
        self.client_nxt = self.server_nxt = None
        for d, data in self.tun.log:
            pkt = parse(data)
            if pkt is None or TCP not in pkt:
                continue
            t = pkt[TCP]
            plen = len(bytes(t.payload))
            if d == "out" and t.sport == self.lport and t.dport == self.port:
                self.client_nxt = (t.seq + plen) % (1 << 32)
                self.server_nxt = t.ack
            elif d == "in" and t.dport == self.lport and t.sport == self.port:
                self.server_nxt = (t.seq + plen) % (1 << 32)
        if self.client_nxt is None or self.server_nxt is None:
            raise RuntimeError("did not see the live connection's segments on the TUN")
        self.tun.clear()

    def ip(self, src_is_client=True):
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6
        local = CLIENT6 if ":" in self.addr else CLIENT4
        s, d = (local, self.addr) if src_is_client else (self.addr, local)
        return IPv6(src=s, dst=d) if ":" in self.addr else IP(src=s, dst=d)

    def close(self):
        self.s.close()


def case_frag4(a, tun, out):
    from scapy.layers.inet import IP, TCP, fragment
    base = IP(src=CLIENT4, dst=a.v4, id=0x4242) / TCP(sport=41001, dport=a.port, flags="S") / (b"f" * 64)
    frags = fragment(base, fragsize=24)                       # 4 fragments
    for f in frags:
        tun.send(f)
    base.id = 0x4243
    for f in reversed(fragment(base, fragsize=24)):           # out of order
        tun.send(f)
    # Overlapping: [0, 32) with MF, then [16, 84) rewriting bytes 16..31.
    whole = bytes(base[TCP])
    tun.send(IP(src=CLIENT4, dst=a.v4, id=0x4244, proto=6, flags="MF", frag=0) / whole[:32])
    tun.send(IP(src=CLIENT4, dst=a.v4, id=0x4244, proto=6, frag=2) / whole[16:])
    # A tiny first fragment that splits the TCP header (RFC 1858).
    tun.send(IP(src=CLIENT4, dst=a.v4, id=0x4245, proto=6, flags="MF", frag=0) / whole[:8])
    tun.send(IP(src=CLIENT4, dst=a.v4, id=0x4245, proto=6, frag=1) / whole[8:])
    out["fragments"] = tun.sent


def case_frag6(a, tun, out):
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
    base = IPv6(src=CLIENT6, dst=a.v6) / IPv6ExtHdrFragment(id=0x6001) / TCP(sport=41002, dport=a.port, flags="S") / (b"g" * 120)
    frags = fragment6(base, 96)
    for f in frags:
        tun.send(f)
    base[IPv6ExtHdrFragment].id = 0x6002
    for f in reversed(fragment6(base, 96)):
        tun.send(f)
    tun.send(IPv6(src=CLIENT6, dst=a.v6) / IPv6ExtHdrFragment(id=0x6003, m=0, offset=0) / TCP(sport=41003, dport=a.port, flags="S"))
    out["fragments"] = tun.sent


def case_ext6(a, tun, out):
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting
    syn = TCP(sport=41004, dport=a.port, flags="S")
    ip6 = IPv6(src=CLIENT6, dst=a.v6)
    tun.send(ip6 / IPv6ExtHdrHopByHop() / syn)
    tun.send(ip6 / IPv6ExtHdrDestOpt() / syn)
    tun.send(ip6 / IPv6ExtHdrRouting(type=0, segleft=0, addresses=[a.v6]) / syn)
    tun.send(ip6 / IPv6ExtHdrSegmentRouting(segleft=0, addresses=[a.v6]) / syn)
    tun.send(ip6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / syn)


def case_ipopts(a, tun, out):
    from scapy.layers.inet import IP, TCP, IPOption_NOP, IPOption_RR, IPOption_Router_Alert
    tun.send(IP(src=CLIENT4, dst=a.v4, options=[IPOption_NOP(), IPOption_RR(routers=["0.0.0.0"] * 3)]) /
             TCP(sport=41005, dport=a.port, flags="S", seq=1000))
    tun.send(IP(src=CLIENT4, dst=a.v4, options=[IPOption_Router_Alert()]) / TCP(sport=41006, dport=a.port, flags="S", seq=2000))


def case_badsum_ip(a, tun, out):
    p = bytearray(raw_tcp(CLIENT4, a.v4, 41007, a.port, SYN))
    p[10] ^= 0x5A  # header checksum
    tun.send(bytes(p))
    out["packet"] = bytes(p).hex()


def case_badsum_tcp(a, tun, out):
    for src, dst in ((CLIENT4, a.v4), (CLIENT6, a.v6)):
        p = raw_tcp(src, dst, 41008, a.port, SYN, good=False)
        tun.send(p)
        out.setdefault("packets", []).append(p.hex())
    live = Live(tun, a.v4, a.port)
    p = raw_tcp(CLIENT4, a.v4, live.lport, a.port, PSH | ACK, seq=live.client_nxt, ack=live.server_nxt,
                payload=b"CORRUPT\n", good=False)
    tun.send(p)
    out["packet_live"] = p.hex()
    tun.collect(0.3)
    out["live_after"] = live.check()  # "ok" only if the corrupt bytes were not taken
    live.close()


def case_truncated(a, tun, out):
    syn4 = raw_tcp(CLIENT4, a.v4, 41009, a.port, SYN)
    syn6 = raw_tcp(CLIENT6, a.v6, 41009, a.port, SYN)
    try:                                           # zero-length: AF_PACKET refuses it (EINVAL),
        tun.send(b"")                              # so no TUN reader ever sees an empty packet
        out["zero_length"] = "sent"
    except OSError as e:
        out["zero_length"] = errname(e)
    tun.send(syn4[:10])                            # inside the IPv4 header
    tun.send(syn6[:30])                            # inside the IPv6 header
    tun.send(syn4[:28])                            # buffer ends 8 bytes into TCP
    short = bytearray(syn4[:28])
    short[2:4] = struct.pack("!H", 28)             # IP total length 28: TCP header cut
    tun.send(fix_ip4_checksum(short))
    ihl4 = bytearray(syn4)
    ihl4[0] = 0x44                                 # IHL 4 (16 bytes)
    tun.send(fix_ip4_checksum(ihl4))
    long6 = bytearray(syn6)
    long6[4:6] = struct.pack("!H", 200)            # payload length past the packet
    tun.send(bytes(long6))
    tun.send(raw_tcp(CLIENT4, a.v4, 41009, a.port, SYN)[:20] + bytes([0x45]))  # 1 byte of TCP
    out["malformed"] = tun.sent


def case_synfin(a, tun, out):
    tun.send(raw_tcp(CLIENT4, a.v4, 41010, a.port, SYN | FIN))
    tun.send(raw_tcp(CLIENT4, a.v4, 41011, a.port, SYN | RST))
    tun.send(raw_tcp(CLIENT6, a.v6, 41012, a.port, SYN | FIN))


def case_rst_storm(a, tun, out):
    from scapy.layers.inet import IP, TCP
    live = Live(tun, a.v4, a.port)
    rnd = random.Random(6)
    for _ in range(200):  # far outside the window
        tun.send(live.ip() / TCP(sport=live.lport, dport=a.port, flags="R",
                                 seq=(live.client_nxt + (1 << 31) + rnd.randrange(1 << 20)) % (1 << 32)))
    for _ in range(50):   # inside the 64 KiB window, not exact: challenge ACK
        tun.send(live.ip() / TCP(sport=live.lport, dport=a.port, flags="R",
                                 seq=(live.client_nxt + 1 + rnd.randrange(60000)) % (1 << 32)))
    for i in range(100):  # flows that do not exist
        tun.send(IP(src=CLIENT4, dst=a.v4) / TCP(sport=50000 + i, dport=a.port, flags="R", seq=rnd.randrange(1 << 32)))
    tun.collect(0.5)
    ours = lambda p: TCP in p and p[TCP].dport == live.lport
    out["challenge_acks"] = sum(1 for s in tun.answers(ours) if s == "TCP A")
    out["answers_unknown_flows"] = len(tun.answers(lambda p: TCP in p and 50000 <= p[TCP].dport < 50100))
    tun.clear()
    out["live_after_storm"] = live.check()
    live.learn()
    tun.send(live.ip() / TCP(sport=live.lport, dport=a.port, flags="R", seq=live.client_nxt))
    tun.collect(0.3)
    # The tunnel has forgotten the connection; the client's next segment
    # draws a RST and the socket fails (as a real peer would do it).
    res = "ok"
    deadline = time.monotonic() + 5 * WAIT
    while res == "ok" and time.monotonic() < deadline:
        res = live.check()
    out["live_after_exact_rst"] = res
    live.close()


def case_tcp_options(a, tun, out):
    opts = [
        b"\xfe\x0a" + b"\xab" * 8,              # unknown kind 254, length 10
        b"\x02\x04\x05\xb4\xfd\x28",            # an option whose length (40) runs past the header
        b"\x02\x00\x01\x01",                    # zero option length
        b"\xfe\x28" + b"\x01" * 38,             # 40 bytes of options (data offset 15)
        b"\x02\x04\x00\x00",                    # MSS 0
        b"\x03\x03\x0e\x01",                    # window scale 14
    ]
    sport = 41020
    for src, dst in ((CLIENT4, a.v4), (CLIENT6, a.v6)):
        for o in opts:
            tun.send(raw_tcp(src, dst, sport, a.port, SYN, seq=7000, opts=o))
            sport += 1
    out["syns"] = tun.sent


def case_ecn(a, tun, out):
    """A SYN asking for ECN (ECE|CWR, RFC 3168 §6.1.1) in a CE-marked packet."""
    p4 = bytearray(raw_tcp(CLIENT4, a.v4, 41040, a.port, SYN | ECE | CWR, seq=9000))
    p4[1] = 0x03  # CE
    tun.send(fix_ip4_checksum(p4))
    p6 = bytearray(raw_tcp(CLIENT6, a.v6, 41041, a.port, SYN | ECE | CWR, seq=9000))
    p6[1] |= 0x03 << 4  # traffic class CE
    tun.send(bytes(p6))
    tun.collect(0.3)
    out["synack_flags"] = ",".join(tcp_flags_of(parse(d)) for dd, d in tun.log if dd == "in" and parse(d) is not None)


def case_icmp_too_big(a, tun, out):
    from scapy.layers.inet import IP, TCP, ICMP
    from scapy.layers.inet6 import ICMPv6PacketTooBig
    l4 = Live(tun, a.v4, a.port)
    l6 = Live(tun, a.v6, a.port)
    q4 = l4.ip(src_is_client=False) / TCP(sport=a.port, dport=l4.lport, flags="PA", seq=l4.server_nxt, ack=l4.client_nxt) / (b"z" * 1400)
    tun.send(IP(src=CLIENT4, dst=a.v4) / ICMP(type=3, code=4, nexthopmtu=576) / bytes(q4)[:28])
    q6 = l6.ip(src_is_client=False) / TCP(sport=a.port, dport=l6.lport, flags="PA", seq=l6.server_nxt, ack=l6.client_nxt) / (b"z" * 1400)
    from scapy.layers.inet6 import IPv6
    tun.send(IPv6(src=CLIENT6, dst=a.v6) / ICMPv6PacketTooBig(mtu=1280) / bytes(q6)[:1232])
    tun.collect(0.3)
    out["live4_after"] = l4.check()
    out["live6_after"] = l6.check()
    l4.close()
    l6.close()


def case_seq_wrap(a, tun, out):
    """A FIN whose sequence number is the live connection's next one + 2^31."""
    live = Live(tun, a.v4, a.port)
    p = raw_tcp(CLIENT4, a.v4, live.lport, a.port, FIN | ACK, seq=live.client_nxt + (1 << 31), ack=live.server_nxt)
    tun.send(p)
    out["packet"] = p.hex()
    tun.collect(0.3)
    out["live_after"] = live.check()
    live.close()


def case_land(a, tun, out):
    from scapy.layers.inet import IP, TCP
    p = IP(src=a.v4, dst=a.v4) / TCP(sport=a.port, dport=a.port, flags="S", seq=4242)
    tun.send(p)
    out["packet"] = bytes(IP(bytes(p))).hex()


CASES = {
    "frag4": case_frag4, "frag6": case_frag6, "ext6": case_ext6, "ipopts": case_ipopts,
    "badsum-ip": case_badsum_ip, "badsum-tcp": case_badsum_tcp, "truncated": case_truncated,
    "synfin": case_synfin, "rst-storm": case_rst_storm, "tcp-options": case_tcp_options,
    "ecn": case_ecn, "icmp-too-big": case_icmp_too_big, "land": case_land, "seq-wrap": case_seq_wrap,
}


def echo_server(port):
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.bind(("::", port))
    ls.listen(64)

    def handle(c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case")
    p.add_argument("--tun", default="osh0")
    p.add_argument("--v4", default="")
    p.add_argument("--v6", default="")
    p.add_argument("--port", type=int, default=7777)
    a = p.parse_args()
    if a.case == "echo-server":
        echo_server(a.port)
        return
    if a.case not in CASES:
        p.error("unknown case " + a.case)
    tun = Tun(a.tun)
    out = {"case": a.case}
    try:
        CASES[a.case](a, tun, out)
        tun.collect(0.5)  # answers come within milliseconds
    except OSError as e:  # e.g. ENETDOWN: the tunnel died and took osh0 with it
        out["error"] = errname(e)
    # Answers to the injected packets (not the live connections' own traffic).
    out["answers"] = ",".join(tun.answers())
    out["sent"] = tun.sent
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
