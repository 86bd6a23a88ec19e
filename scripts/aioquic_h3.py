#!/usr/bin/env python3
"""HTTP/3 client and server written on the aioquic package (its H3Connection), the independent
HTTP/3 peers of `examples/interop.rs` in `tests/interop_aioquic.rs`:

    aioquic_h3.py server --listen 127.0.0.1:0 --cert cert.pem --key key.pem --root DIR
    aioquic_h3.py client --output DIR --ca ca.pem [--post FILE [--trailers]] [--cancel PATH]
                         [--sequential N] URL...

The server answers GET /path with DIR/path, POST /echo with the request body, GET /early with
whether the connection accepted 0-RTT (it keeps single-use session tickets), anything else
with 404; it prints "listening HOST PORT" when ready. The client fetches all URLs over one
connection in parallel (uploading FILE with POST when --post is given), writes
DIR/<last path segment>, prints "trailers NAME: VALUE" lines for response trailers, and exits
1 if any request fails or answers with a status other than 200.
"""

import argparse
import asyncio
import os
import sys
from urllib.parse import urlparse

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset


class H3Server(QuicConnectionProtocol):
    root = "."
    # Codes of request streams clients reset, served at GET /resets.
    resets = []
    # Requests to /wait received so far, served at GET /waiting.
    waiting = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._requests = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset):
            H3Server.resets.append(event.error_code)
            self._requests.pop(event.stream_id, None)
        for ev in self._h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                req = self._requests.setdefault(ev.stream_id, {"body": bytearray()})
                if "headers" in req:
                    req["trailers"] = dict(ev.headers)
                else:
                    req["headers"] = dict(ev.headers)
                if ev.stream_ended:
                    self._answer(ev.stream_id)
            elif isinstance(ev, DataReceived):
                req = self._requests.setdefault(ev.stream_id, {"body": bytearray()})
                req["body"] += ev.data
                if ev.stream_ended:
                    self._answer(ev.stream_id)

    def _answer(self, stream_id):
        req = self._requests.pop(stream_id)
        method = req["headers"].get(b":method", b"")
        path = req["headers"].get(b":path", b"/").decode()
        if path == "/wait":
            # Answered 300 ms later, so requests are in flight when a GOAWAY goes out.
            H3Server.waiting += 1
            asyncio.get_event_loop().call_later(0.3, self._respond, stream_id, b"200", b"waited", None)
            return
        if path == "/goaway":
            # aioquic has no API for GOAWAY (RFC 9114 §5.2); write the frame on our control
            # stream: requests below this one's successor are still served, later ones not.
            frame = encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id + 4))
            self._quic.send_stream_data(self._h3._local_control_stream_id, frame)
            self._respond(stream_id, b"200", b"goaway sent", None)
            return
        status, body = b"404", b"not found\n"
        trailers = None
        if method == b"POST" and path == "/echo":
            status, body = b"200", bytes(req["body"])
            if req.get("trailers"):
                trailers = list(req["trailers"].items())
        elif method == b"GET" and path == "/trailers":
            status, body = b"200", b"body"
            trailers = [(b"x-checksum", b"abc")]
        elif method == b"GET" and path == "/resets":
            status, body = b"200", ",".join(hex(c) for c in H3Server.resets).encode()
        elif method == b"GET" and path == "/early":
            # Whether this connection's TLS accepted 0-RTT data (RFC 9001 §4.6).
            status, body = b"200", f"early={self._quic.tls.early_data_accepted}".encode()
        elif method == b"GET" and path == "/waiting":
            status, body = b"200", str(H3Server.waiting).encode()
        elif method == b"GET":
            rel = os.path.normpath(path.lstrip("/"))
            full = os.path.join(self.root, rel)
            if not rel.startswith("..") and os.path.isfile(full):
                with open(full, "rb") as f:
                    status, body = b"200", f.read()
        self._respond(stream_id, status, body, trailers)

    def _respond(self, stream_id, status, body, trailers):
        headers = [(b":status", status), (b"content-length", str(len(body)).encode())]
        self._h3.send_headers(stream_id, headers)
        self._h3.send_data(stream_id, body, end_stream=trailers is None)
        if trailers is not None:
            self._h3.send_headers(stream_id, trailers, end_stream=True)
        self.transmit()


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._waiters = {}
        self._responses = {}

    async def cancel(self, authority, path):
        """Starts an upload and abandons it (RFC 9114 §4.1.1: H3_REQUEST_CANCELLED)."""
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        self._h3.send_headers(stream_id, headers)
        self._h3.send_data(stream_id, b"x" * 10000, end_stream=False)
        self.transmit()
        await asyncio.sleep(0.2)
        self._quic.reset_stream(stream_id, 0x10C)
        self._quic.stop_stream(stream_id, 0x10C)
        self.transmit()
        await asyncio.sleep(0.2)

    async def request(self, authority, path, body=None, trailers=None):
        stream_id = self._quic.get_next_available_stream_id()
        method = b"POST" if body is not None else b"GET"
        headers = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        self._h3.send_headers(stream_id, headers, end_stream=body is None)
        if body is not None:
            self._h3.send_data(stream_id, body, end_stream=trailers is None)
            if trailers is not None:
                self._h3.send_headers(stream_id, trailers, end_stream=True)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[stream_id] = waiter
        self._responses[stream_id] = {"body": bytearray(), "trailers": {}}
        self.transmit()
        return await waiter

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self._waiters:
            self._waiters.pop(event.stream_id).set_exception(
                RuntimeError(f"stream reset with code {event.error_code:#x}")
            )
            return
        for ev in self._h3.handle_event(event):
            resp = self._responses.get(getattr(ev, "stream_id", None))
            if resp is None:
                continue
            if isinstance(ev, HeadersReceived):
                if "headers" in resp:
                    resp["trailers"] = dict(ev.headers)
                else:
                    resp["headers"] = dict(ev.headers)
            elif isinstance(ev, DataReceived):
                resp["body"] += ev.data
            if getattr(ev, "stream_ended", False):
                self._waiters.pop(ev.stream_id).set_result(self._responses.pop(ev.stream_id))


async def run_server(args):
    host, port = args.listen.rsplit(":", 1)
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(args.cert, args.key)
    H3Server.root = args.root
    # Session tickets, single use: a resumed client may send 0-RTT data, which aioquic
    # accepts when it finds the ticket here.
    tickets = {}
    server = await serve(
        host,
        int(port),
        configuration=config,
        create_protocol=H3Server,
        session_ticket_fetcher=lambda key: tickets.pop(key, None),
        session_ticket_handler=lambda ticket: tickets.__setitem__(ticket.ticket, ticket),
    )
    h, p = server._transport.get_extra_info("socket").getsockname()[:2]
    print(f"listening {h} {p}", flush=True)
    await asyncio.Future()


async def run_client(args):
    urls = [urlparse(u) for u in args.urls]
    host, port = urls[0].hostname, urls[0].port or 443
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    if args.ca:
        config.load_verify_locations(args.ca)
    config.server_name = host
    # Large downloads: let aioquic's windows grow past its small defaults.
    config.max_data = 64 << 20
    config.max_stream_data = 32 << 20
    body = None
    if args.post:
        with open(args.post, "rb") as f:
            body = f.read()
    os.makedirs(args.output, exist_ok=True)
    failed = 0
    trailers = [(b"x-request-trailer", b"from-aioquic")] if args.trailers else None
    async with connect(host, port, configuration=config, create_protocol=H3Client) as client:
        if args.cancel:
            await client.cancel(f"{host}:{port}", args.cancel)
        results = await asyncio.gather(
            *(client.request(f"{host}:{port}", u.path or "/", body, trailers) for u in urls),
            return_exceptions=True,
        )
        for u, r in zip(urls, results):
            if isinstance(r, Exception):
                print(f"{u.path}: {r}", file=sys.stderr)
                failed += 1
                continue
            status = r["headers"].get(b":status")
            if status != b"200":
                print(f"{u.path}: status {status}", file=sys.stderr)
                failed += 1
                continue
            for k, v in r["trailers"].items():
                print(f"trailers {k.decode()}: {v.decode()}")
            name = u.path.rsplit("/", 1)[-1]
            with open(os.path.join(args.output, name), "wb") as f:
                f.write(r["body"])
        first = urls[0]
        expected = None
        for i in range(args.sequential):
            r = await client.request(f"{host}:{port}", first.path or "/", None)
            status = r["headers"].get(b":status")
            if expected is None:
                expected = bytes(r["body"])
            if status != b"200" or bytes(r["body"]) != expected:
                print(f"sequential request {i}: status {status}", file=sys.stderr)
                failed += 1
                break
        if args.sequential:
            print(f"sequential {args.sequential} done")
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", default="127.0.0.1:0")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--root", required=True)
    c = sub.add_parser("client")
    c.add_argument("--output", required=True)
    c.add_argument("--ca")
    c.add_argument("--post")
    c.add_argument("--trailers", action="store_true", help="send request trailers with --post")
    c.add_argument("--cancel", metavar="PATH", help="first start and cancel an upload to PATH")
    c.add_argument(
        "--sequential",
        type=int,
        default=0,
        help="then GET the first URL this many more times, one after another",
    )
    c.add_argument("urls", nargs="+")
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(run_server(args))
    else:
        sys.exit(asyncio.run(asyncio.wait_for(run_client(args), 120)))


if __name__ == "__main__":
    main()
