#!/usr/bin/env python3
"""hq-interop (HTTP/0.9 over QUIC) client and server written on the aioquic package.

They are the independent peers of `examples/interop.rs` in `tests/interop_aioquic.rs`:

    aioquic_hq.py server --listen 127.0.0.1:4433 --cert cert.pem --key key.pem --root DIR [--retry]
    aioquic_hq.py client --output DIR --ca ca.pem [--zero-rtt [--expect-0rtt-rejected]]
                         [--key-update] [--chacha20]
                         [--v2] [--rebind-after BYTES] [--datagrams N] URL...

The server prints "listening HOST PORT" on stdout once it is ready; it keeps single-use
session tickets, so clients can resume and send 0-RTT. The client fetches all URLs over one
connection in parallel, writes DIR/<last path segment>, and exits 1 on any failure. With
--zero-rtt it fetches the first URL on a first connection, then the others on a second one
that resumes the session and sends its requests in 0-RTT, prints "resumed: BOOL" and
"0-RTT accepted: BOOL", and fails unless both are true (with --expect-0rtt-rejected: unless
the server rejected 0-RTT; the URLs after the first may then name another port, a server
that does not know the ticket). With --key-update it requests a
1-RTT key update (RFC 9001 §6) before the downloads and prints "key phase: N". With
--chacha20 TLS offers only ChaCha20-Poly1305; the client prints "cipher suite: NAME". With
--v2 the client starts in QUIC v1 and lists v2 first in its version information (compatible
version negotiation, RFC 9368); it prints "version: 0x........" (the version in use). The
server supports v1 and v2 and honours the client's preference (aioquic's default).
The server echoes RFC 9221 datagrams; with --datagrams N the client first sends N
1000-byte datagrams, resending missing ones for up to 5 s, and prints "datagrams echoed: K/N".
With --rebind-after BYTES the client moves to a new UDP socket (a new port) once BYTES have
arrived, closes the old one, switches to a new connection ID (RFC 9000 §9.5) and prints
"rebound to PORT".
"""

import argparse
import asyncio
import os
import socket
import sys
from urllib.parse import urlparse

from aioquic import tls
from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.quic.events import DatagramFrameReceived, StreamDataReceived, StreamReset

ALPN = "hq-interop"
NOT_FOUND = 0x10


class HqServer(QuicConnectionProtocol):
    root = "."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._requests = {}

    def quic_event_received(self, event):
        if isinstance(event, DatagramFrameReceived):
            # RFC 9221 datagrams are echoed.
            self._quic.send_datagram_frame(event.data)
            self.transmit()
        elif isinstance(event, StreamDataReceived):
            buf = self._requests.setdefault(event.stream_id, bytearray())
            buf += event.data
            if event.end_stream:
                self._answer(event.stream_id, bytes(self._requests.pop(event.stream_id)))

    def _answer(self, stream_id, request):
        line = request.decode("ascii", "replace").strip()
        path = line[4:].split()[0] if line.startswith("GET ") and len(line) > 4 else ""
        rel = os.path.normpath(path.lstrip("/"))
        full = os.path.join(self.root, rel)
        if rel.startswith("..") or not os.path.isfile(full):
            self._quic.reset_stream(stream_id, NOT_FOUND)
        else:
            with open(full, "rb") as f:
                self._quic.send_stream_data(stream_id, f.read(), end_stream=True)
        self.transmit()


class HqClient(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._waiters = {}
        self._bodies = {}
        self.received = 0
        self.datagrams = set()

    async def get(self, path):
        stream_id = self._quic.get_next_available_stream_id()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[stream_id] = waiter
        self._bodies[stream_id] = bytearray()
        self._quic.send_stream_data(stream_id, f"GET {path}\r\n".encode(), end_stream=True)
        self.transmit()
        return await waiter

    def quic_event_received(self, event):
        if isinstance(event, DatagramFrameReceived):
            self.datagrams.add(bytes(event.data))
        elif isinstance(event, StreamDataReceived) and event.stream_id in self._waiters:
            self.received += len(event.data)
            self._bodies[event.stream_id] += event.data
            if event.end_stream:
                body = bytes(self._bodies.pop(event.stream_id))
                self._waiters.pop(event.stream_id).set_result(body)
        elif isinstance(event, StreamReset) and event.stream_id in self._waiters:
            self._waiters.pop(event.stream_id).set_exception(
                RuntimeError(f"stream reset with code {event.error_code:#x}")
            )


async def run_server(args):
    host, port = args.listen.rsplit(":", 1)
    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], max_datagram_frame_size=65536)
    config.load_cert_chain(args.cert, args.key)
    HqServer.root = args.root
    tickets = {}
    server = await serve(
        host,
        int(port),
        configuration=config,
        create_protocol=HqServer,
        session_ticket_fetcher=lambda key: tickets.pop(key, None),
        session_ticket_handler=lambda ticket: tickets.__setitem__(ticket.ticket, ticket),
        retry=args.retry,
    )
    sock = server._transport.get_extra_info("socket")
    h, p = sock.getsockname()[:2]
    print(f"listening {h} {p}", flush=True)
    await asyncio.Future()


async def fetch_all(client, urls, output):
    """Fetches `urls` in parallel on `client`; returns the number of failures."""
    failed = 0
    results = await asyncio.gather(*(client.get(u.path or "/") for u in urls), return_exceptions=True)
    for u, r in zip(urls, results):
        if isinstance(r, Exception):
            print(f"{u.path}: {r}", file=sys.stderr)
            failed += 1
            continue
        name = u.path.rsplit("/", 1)[-1]
        with open(os.path.join(output, name), "wb") as f:
            f.write(r)
    return failed


async def exchange_datagrams(client, n):
    """Sends `n` 1000-byte datagrams (RFC 9221), resending missing ones, until all come back
    echoed or 5 s pass; returns how many did."""
    wanted = {bytes([i]) * 1000 for i in range(n)}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline and not wanted <= client.datagrams:
        for d in wanted - client.datagrams:
            client._quic.send_datagram_frame(d)
        client.transmit()
        await asyncio.sleep(0.2)
    return len(wanted & client.datagrams)


async def rebind_after(client, after):
    """Once `after` bytes have arrived, moves `client` to a new UDP socket (RFC 9000 §9)."""
    while client.received < after:
        await asyncio.sleep(0.001)
    # The same kind of socket aioquic's connect() makes: IPv6, dual-stack.
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0, 0, 0))
    # The protocol object now sends through the new socket (connection_made); the old one
    # closes, so the transfer only goes on if the server follows.
    old = client._transport
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: client, sock=sock)
    old.close()
    client._quic.change_connection_id()
    client.transmit()
    print(f"rebound to {sock.getsockname()[1]}", file=sys.stderr)


async def run_client(args):
    urls = [urlparse(u) for u in args.urls]
    host, port = urls[0].hostname, urls[0].port or 443
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], max_datagram_frame_size=65536)
    if args.v2:
        # Compatible version negotiation (RFC 9368): a v1 first flight preferring v2.
        config.supported_versions = [QuicProtocolVersion.VERSION_2, QuicProtocolVersion.VERSION_1]
        config.original_version = QuicProtocolVersion.VERSION_1
    if args.chacha20:
        config.cipher_suites = [tls.CipherSuite.CHACHA20_POLY1305_SHA256]
    if args.ca:
        config.load_verify_locations(args.ca)
    config.server_name = host
    os.makedirs(args.output, exist_ok=True)
    failed = 0
    if args.zero_rtt:
        if len(urls) < 2:
            print("--zero-rtt needs two URLs or more", file=sys.stderr)
            return 2
        tickets = []
        async with connect(
            host, port, configuration=config, create_protocol=HqClient,
            session_ticket_handler=tickets.append,
        ) as client:
            failed += await fetch_all(client, urls[:1], args.output)
            # The ticket follows the handshake.
            for _ in range(50):
                if tickets:
                    break
                await asyncio.sleep(0.02)
        if not tickets:
            print("no session ticket received", file=sys.stderr)
            return 1
        config.session_ticket = tickets[-1]
        urls = urls[1:]
        # The URLs after the first may name another port: a server that does not know the
        # ticket.
        port = urls[0].port or port
        # wait_connected=False: the requests go before the handshake completes, in 0-RTT.
        async with connect(
            host, port, configuration=config, create_protocol=HqClient, wait_connected=False
        ) as client:
            failed += await fetch_all(client, urls, args.output)
            resumed = client._quic.tls.session_resumed
            accepted = client._quic.tls.early_data_accepted
            print(f"resumed: {resumed}", file=sys.stderr)
            print(f"0-RTT accepted: {accepted}", file=sys.stderr)
            if args.expect_0rtt_rejected:
                # The early requests were sent again in 1-RTT and must have succeeded.
                if accepted:
                    failed += 1
            elif not (resumed and accepted):
                failed += 1
        return 1 if failed else 0
    async with connect(host, port, configuration=config, create_protocol=HqClient) as client:
        # Whether the server made us follow a Retry (RFC 9000 §8.1.2), and the TLS suite.
        print(f"retried: {bool(client._quic._retry_count)}", file=sys.stderr)
        await client.wait_connected()
        if args.datagrams:
            echoed = await exchange_datagrams(client, args.datagrams)
            print(f"datagrams echoed: {echoed}/{args.datagrams}", file=sys.stderr)
            if echoed < args.datagrams:
                failed += 1
        print(f"cipher suite: {client._quic.tls.key_schedule.cipher_suite.name}", file=sys.stderr)
        print(f"version: {client._quic._version:#010x}", file=sys.stderr)
        if args.key_update:
            await client.wait_connected()
            client._quic.request_key_update()
            client.transmit()
        rebind = None
        if args.rebind_after is not None:
            rebind = asyncio.ensure_future(rebind_after(client, args.rebind_after))
        failed += await fetch_all(client, urls, args.output)
        if rebind is not None:
            if not rebind.done():
                rebind.cancel()
                print("--rebind-after: the downloads ended first", file=sys.stderr)
                failed += 1
            else:
                rebind.result()
        if args.key_update:
            print(f"key phase: {client._quic._cryptos[tls.Epoch.ONE_RTT].send.key_phase}", file=sys.stderr)
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", default="127.0.0.1:0")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--root", required=True)
    s.add_argument("--retry", action="store_true", help="validate addresses with Retry")
    c = sub.add_parser("client")
    c.add_argument("--output", required=True)
    c.add_argument("--ca")
    c.add_argument("--zero-rtt", action="store_true")
    c.add_argument("--expect-0rtt-rejected", action="store_true",
                   help="with --zero-rtt: succeed only if the server rejects 0-RTT")
    c.add_argument("--key-update", action="store_true")
    c.add_argument("--chacha20", action="store_true", help="offer only TLS_CHACHA20_POLY1305_SHA256")
    c.add_argument("--v2", action="store_true", help="start in QUIC v1, prefer v2 (RFC 9368)")
    c.add_argument("--rebind-after", type=int, help="move to a new UDP port after BYTES")
    c.add_argument("--datagrams", type=int, default=0, help="exchange N echoed datagrams first")
    c.add_argument("urls", nargs="+")
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(run_server(args))
    else:
        sys.exit(asyncio.run(asyncio.wait_for(run_client(args), 60)))


if __name__ == "__main__":
    main()
