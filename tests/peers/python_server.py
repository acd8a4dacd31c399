#!/usr/bin/env python3
"""WebSocket peer for stream-tungstenite's interop tests, built on the Python `websockets` package.

Usage:
    python_server.py --mode MODE [--n N] [--status CODE] [--retry-after SECS]
                     [--close-code CODE] [--cert PEM --key PEM]

Binds 127.0.0.1 on an ephemeral port, prints exactly one line `PORT <number>` to stdout once listening,
then serves until killed or until its stdin reaches EOF (so an orphaned server dies with its test).

Modes (same behaviour as node_server.js):
    echo    echo every text and binary message back.
    drop    echo, but once N messages (--n, default 1) have been received and echoed on a connection,
            abort that TCP connection without a close handshake.
    reject  refuse every upgrade with HTTP status --status (default 503), plus `Retry-After: SECS`
            when --retry-after is given.
    close   after N messages received (--n, default 1; 0 = right after the handshake) send a Close
            frame with --close-code (default 1012) and reason "restart". Messages are not echoed.
    ack     (Python only) answer every text message <text> with `ack <text>`: the acknowledging peer of
            the delivery tests. Nothing else is sent.
    replay  (Python only) publish a numbered feed `{"seq": N}` (N from 1, --rate messages a second, from
            the moment the server starts) and keep the last --buffer of them. A connection whose first
            message, within 200 ms, is `{"op": "resume", "from": N}` gets everything after N that the
            buffer still holds, then the live feed; any other connection starts at the live feed. Logs
            `resume N first M` (M: the first position it sends; M > N + 1 is a gap) or `fresh first M`.

With --cert/--key the server speaks wss (TLS) instead of ws.

One line per event goes to stderr: `connect`, `message <text>`, `drop`, `reject <status>`,
`close <code>`, `resume N first M`, `fresh first M` (plus `disconnect <code>` when a connection ends, for debugging). Binary messages are
logged as `message [binary N bytes]`; newlines in text messages are escaped as `\\n`; text longer than
200 characters is logged as `message <first 200 characters>... [N bytes]`.
"""

import argparse
import asyncio
import http
import json
import logging
import os
import ssl
import sys
import threading

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MAX_SIZE = 64 * 1024 * 1024
LOG_LIMIT = 200  # longer text messages are logged truncated


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def describe(message):
    if isinstance(message, str):
        text = message
        if len(text) > LOG_LIMIT:
            text = f"{text[:LOG_LIMIT]}... [{len(message.encode())} bytes]"
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"[binary {len(message)} bytes]"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", required=True, choices=["echo", "drop", "reject", "close", "ack", "replay"])
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--status", type=int, default=503)
    parser.add_argument("--retry-after", dest="retry_after", default=None)
    parser.add_argument("--close-code", dest="close_code", type=int, default=1012)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--buffer", type=int, default=100_000)
    parser.add_argument("--cert", default=None)
    parser.add_argument("--key", default=None)
    args = parser.parse_args()
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.n < 0:
        parser.error("--n must be >= 0")
    if args.rate <= 0 or args.buffer <= 0:
        parser.error("--rate and --buffer must be > 0")
    return args


def watch_stdin():
    """Exits the whole process when stdin reaches EOF (the test that started us is gone)."""

    def run():
        try:
            while sys.stdin.buffer.read1(65536):
                pass
        except Exception:
            pass
        os._exit(0)

    threading.Thread(target=run, name="stdin-watch", daemon=True).start()


class Feed:
    """The replay mode's numbered feed: `--rate` positions a second from the start, the last `--buffer` kept."""

    def __init__(self, rate, buffer):
        self.rate = rate
        self.buffer = buffer
        self.head = 0  # the last position published
        self.changed = asyncio.Event()

    async def publish(self):
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            # Catch up with the clock (a late wake-up publishes several), then wait for the next one.
            due = int((loop.time() - start) * self.rate)
            if due > self.head:
                self.head = due
                self.changed.set()
                self.changed = asyncio.Event()
            await asyncio.sleep(1 / self.rate)

    def oldest(self):
        return max(1, self.head - self.buffer + 1)


class Peer:
    def __init__(self, args):
        self.args = args
        self.connections = 0
        self.feed = Feed(args.rate, args.buffer) if args.mode == "replay" else None

    async def handler(self, ws):
        self.connections += 1
        log("connect")
        try:
            if self.args.mode == "echo":
                await self.echo(ws)
            elif self.args.mode == "drop":
                await self.drop(ws)
            elif self.args.mode == "close":
                await self.close(ws)
            elif self.args.mode == "ack":
                await self.ack(ws)
            elif self.args.mode == "replay":
                await self.replay(ws)
        except ConnectionClosed:
            pass
        finally:
            code = ws.close_code if ws.close_code is not None else 1006
            log(f"disconnect {code}")

    async def echo(self, ws):
        async for message in ws:
            log(f"message {describe(message)}")
            await ws.send(message)

    async def drop(self, ws):
        received = 0
        async for message in ws:
            log(f"message {describe(message)}")
            received += 1
            await ws.send(message)
            if self.args.n > 0 and received >= self.args.n:
                # Let the echo reach the socket before pulling the plug (abort() discards buffered data).
                transport = ws.transport
                for _ in range(100):
                    if transport.get_write_buffer_size() == 0:
                        break
                    await asyncio.sleep(0.01)
                log("drop")
                transport.abort()
                return

    async def ack(self, ws):
        async for message in ws:
            log(f"message {describe(message)}")
            if isinstance(message, str):
                await ws.send(f"ack {message}")

    async def replay(self, ws):
        feed = self.feed
        cursor = None  # the last position sent on this connection
        try:
            first = await asyncio.wait_for(ws.recv(), 0.2)
            request = json.loads(first) if isinstance(first, str) else None
            if isinstance(request, dict) and request.get("op") == "resume":
                start = max(int(request["from"]) + 1, feed.oldest())
                log(f"resume {int(request['from'])} first {start}")
                cursor = start - 1
        except (asyncio.TimeoutError, ValueError, KeyError, TypeError):
            pass
        if cursor is None:
            cursor = feed.head
            log(f"fresh first {cursor + 1}")
        while True:
            changed = feed.changed
            if cursor < feed.oldest() - 1:
                cursor = feed.oldest() - 1  # a slow reader fell out of the buffer: it sees a gap
            while cursor < feed.head:
                cursor += 1
                await ws.send(json.dumps({"seq": cursor}))
            await changed.wait()

    async def close(self, ws):
        received = 0
        if self.args.n > 0:
            async for message in ws:
                log(f"message {describe(message)}")
                received += 1
                if received >= self.args.n:
                    break
        log(f"close {self.args.close_code}")
        await ws.close(self.args.close_code, "restart")

    def process_request(self, connection, request):
        if self.args.mode != "reject":
            return None
        status = http.HTTPStatus(self.args.status)
        response = connection.respond(status, f"rejected: {status.value} {status.phrase}\n")
        if self.args.retry_after is not None:
            response.headers["Retry-After"] = str(self.args.retry_after)
        log(f"reject {status.value}")
        return response


async def main():
    args = parse_args()
    watch_stdin()

    ssl_context = None
    if args.cert is not None:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(args.cert, args.key)

    # Keep the library's own logging (handshake failures and the like) on stderr, one prefixed line each.
    logger = logging.getLogger("peer.websockets")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("log %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False

    peer = Peer(args)
    if peer.feed is not None:
        asyncio.get_running_loop().create_task(peer.feed.publish())
    async with serve(
        peer.handler,
        "127.0.0.1",
        0,
        ssl=ssl_context,
        process_request=peer.process_request,
        max_size=MAX_SIZE,
        compression=None,  # like ws's server default (perMessageDeflate: false)
        ping_interval=None,  # no keepalive pings, like ws: behaviour is the same whatever a test's timing
        logger=logger,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
