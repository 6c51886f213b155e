#!/usr/bin/python3
"""webapp: the sandbox's web application for vm-tests/test_browser.sh
(Debian python3, standard library only).

Serves, on --bind:--port (default 127.0.0.1:8080):
  GET /          an HTML page, made with a fresh page id P, whose script opens
                 ws://<same host>/ws?p=P, writes the text it receives into
                 <span id=value>, and sends "ack:<text>" back.
  GET /ws?p=P    a WebSocket (RFC 6455): after the opening handshake the
                 server sends one text frame holding --token, waits for a
                 text frame from the page (it should be "ack:<token>"),
                 then sends a close frame (1000) and waits for the client's.
  GET /wait?p=P  answers 204 once the WebSocket of page P has received the
                 ack, or after --wait-secs (then 504). The page references it
                 from an <img>, so the page's load event (which headless
                 Chromium waits for before it dumps the DOM or takes a
                 screenshot) only fires after that page's WebSocket round
                 trip: synchronisation without sleeps.
Every WebSocket event appends one JSON line to --report (and stdout):
  {"event": "sent", "page": P, "token": ..., "peer": ...},
  {"event": "received", "page": P, "text": ...}, {"event": "closed", "page": P,
  "code": ...} or {"event": "error", "page": P, "detail": ...}.

The WebSocket part is the minimal subset of RFC 6455 a browser needs:
  - opening handshake (§4.2): GET with "Upgrade: websocket", "Connection:
    Upgrade", Sec-WebSocket-Version 13 and a Sec-WebSocket-Key; the answer's
    Sec-WebSocket-Accept is base64(SHA-1(key + the §1.3 GUID));
  - base framing (§5.2): FIN/opcode byte, mask bit + 7/16/64-bit length,
    4-byte masking key; client frames must be masked (§5.1), server frames
    are not; text (0x1), close (0x8), ping (0x9, answered with pong 0xA, §5.5.2),
    pong (0xA, ignored);
  - no fragmentation, binary frames, extensions or subprotocols: such frames
    are answered with close 1003, protocol errors with 1002 (§7.4.1);
    frames are capped at 64 KiB (larger: 1009).
"""
import argparse
import base64
import binascii
import hashlib
import html
import http.server
import json
import secrets
import socket
import struct
import sys
import threading
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_PAYLOAD = 64 * 1024  # bytes; larger frames are refused (close 1009)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>openshell-tunnel browser test</title>
<style>
 body {{ font-family: "DejaVu Sans", sans-serif; margin: 40px; background: #f4f6f8; }}
 h1 {{ font-size: 28px; }}
 #value {{ font-family: "DejaVu Sans Mono", monospace; font-size: 26px; background: #fff;
          border: 2px solid #2a7; padding: 6px 12px; }}
 #status {{ color: #555; font-size: 18px; }}
</style></head>
<body>
<h1>Sandbox web app at http://{host}/</h1>
<p>Value received over the WebSocket: <span id="value">(waiting)</span></p>
<p id="status">connecting</p>
<script>
const status = document.getElementById("status");
const ws = new WebSocket("ws://" + location.host + "/ws?p={page}");
ws.onopen = () => {{ status.textContent = "WebSocket open to " + location.host; }};
ws.onmessage = (e) => {{
  document.getElementById("value").textContent = e.data;
  status.textContent = "received over WebSocket from " + location.host;
  ws.send("ack:" + e.data);
}};
ws.onerror = () => {{ status.textContent = "WebSocket error"; }};
ws.onclose = (e) => {{ status.textContent += " (closed, code " + e.code + ")"; }};
</script>
<img id="sync" src="/wait?p={page}" alt="" width="1" height="1">
</body></html>
"""


class WsError(Exception):
    """A protocol violation by the client; .code is the RFC 6455 §7.4.1 close code."""

    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code


def accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 item 5.4)."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode("ascii")


def key_is_valid(key):
    """A Sec-WebSocket-Key must be base64 of 16 bytes (RFC 6455 §4.1 item 7)."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def encode_frame(opcode, payload):
    """One unfragmented, unmasked server frame (RFC 6455 §5.2)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def read_exact(rfile, n):
    data = rfile.read(n)
    if data is None or len(data) != n:
        raise EOFError("connection closed mid-frame")
    return data


def read_frame(rfile):
    """Reads one client frame; returns (opcode, unmasked payload). Raises WsError."""
    b0, b1 = read_exact(rfile, 2)
    fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
    masked, n = b1 & 0x80, b1 & 0x7F
    if rsv:
        raise WsError(1002, "RSV bits set without an extension")  # §5.2
    if not masked:
        raise WsError(1002, "unmasked client frame")  # §5.1
    if n == 126:
        (n,) = struct.unpack("!H", read_exact(rfile, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", read_exact(rfile, 8))
    if n > MAX_PAYLOAD:
        raise WsError(1009, f"frame of {n} bytes")
    if not fin or opcode == OP_CONT:
        raise WsError(1003, "fragmented messages are not supported")
    if opcode >= 0x8 and n > 125:
        raise WsError(1002, "control frame longer than 125 bytes")  # §5.5
    key = read_exact(rfile, 4)
    data = bytearray(read_exact(rfile, n))
    for i in range(n):
        data[i] ^= key[i % 4]  # §5.3
    return opcode, bytes(data)


class App:
    """Shared state: the token, the report file and one 'acked' event per page."""

    def __init__(self, token, report, wait_secs):
        self.token = token
        self.report_path = report
        self.wait_secs = wait_secs
        self.lock = threading.Lock()
        self.pages = {}  # page id -> threading.Event set when its ack arrived

    def new_page(self):
        page = secrets.token_hex(8)
        with self.lock:
            self.pages[page] = threading.Event()
        return page

    def page_event(self, page):
        """The page's event, or None for an id this server never handed out."""
        with self.lock:
            return self.pages.get(page)

    def report(self, **event):
        line = json.dumps(event)
        print(line, flush=True)
        if self.report_path:
            with self.lock, open(self.report_path, "a") as f:
                f.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "osh-webapp/1"
    app = None  # set in main()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def send_body(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        page = urllib.parse.parse_qs(url.query).get("p", [""])[0]
        if url.path == "/":
            body = PAGE.format(host=html.escape(self.headers.get("Host", "?")),
                               page=self.app.new_page()).encode()
            self.send_body(200, "text/html; charset=utf-8", body)
        elif url.path == "/ws":
            acked = self.app.page_event(page)
            if acked is None:
                self.send_body(404, "text/plain", b"unknown page\n")
            else:
                self.websocket(page, acked)
        elif url.path == "/wait":
            acked = self.app.page_event(page)
            if acked is None:
                self.send_body(404, "text/plain", b"unknown page\n")
            elif acked.wait(self.app.wait_secs):
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_body(504, "text/plain", b"no WebSocket ack\n")
        else:
            self.send_body(404, "text/plain", b"not found\n")

    def websocket(self, page, acked):
        h = self.headers
        key = h.get("Sec-WebSocket-Key", "")
        ok = (
            h.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in [t.strip().lower() for t in h.get("Connection", "").split(",")]
            and h.get("Sec-WebSocket-Version") == "13"
            and key_is_valid(key)
        )
        if not ok:  # §4.2.1: a bad handshake gets an HTTP error, not 101
            self.app.report(event="error", page=page, detail="bad handshake")
            self.send_response(400)
            self.send_header("Sec-WebSocket-Version", "13")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True  # the socket is the WebSocket's now

        self.wfile.write(encode_frame(OP_TEXT, self.app.token.encode()))
        self.wfile.flush()
        self.app.report(event="sent", page=page, token=self.app.token, peer=self.client_address[0])
        close_sent = False
        try:
            while True:
                opcode, data = read_frame(self.rfile)
                if opcode == OP_TEXT:
                    text = data.decode("utf-8")
                    self.app.report(event="received", page=page, text=text)
                    if text == "ack:" + self.app.token:
                        acked.set()
                    if not close_sent:
                        self.wfile.write(encode_frame(OP_CLOSE, struct.pack("!H", 1000) + b"done"))
                        self.wfile.flush()
                        close_sent = True
                elif opcode == OP_PING:
                    self.wfile.write(encode_frame(OP_PONG, data))
                    self.wfile.flush()
                elif opcode == OP_PONG:
                    pass
                elif opcode == OP_CLOSE:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    if not close_sent:  # §5.5.1: echo the close
                        self.wfile.write(encode_frame(OP_CLOSE, data[:2]))
                        self.wfile.flush()
                    self.app.report(event="closed", page=page, code=code)
                    return
                else:
                    raise WsError(1003, f"opcode {opcode:#x} not supported")
        except WsError as e:
            self.app.report(event="error", page=page, detail=str(e))
            self.wfile.write(encode_frame(OP_CLOSE, struct.pack("!H", e.code)))
            self.wfile.flush()
        except (EOFError, OSError, UnicodeDecodeError) as e:
            self.app.report(event="error", page=page, detail=f"{type(e).__name__}: {e}")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--token", required=True, help="the value the WebSocket sends")
    ap.add_argument("--report", default="", help="file to append JSON event lines to")
    ap.add_argument("--wait-secs", type=float, default=30.0, help="longest /wait hold, seconds")
    a = ap.parse_args()
    Handler.app = App(a.token, a.report, a.wait_secs)
    srv = Server((a.bind, a.port), Handler)
    print(f"webapp listening on {a.bind}:{a.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
