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

With --cert/--key the server speaks wss (TLS) instead of ws.

One line per event goes to stderr: `connect`, `message <text>`, `drop`, `reject <status>`,
`close <code>` (plus `disconnect <code>` when a connection ends, for debugging). Binary messages are
logged as `message [binary N bytes]`; newlines in text messages are escaped as `\\n`; text longer than
200 characters is logged as `message <first 200 characters>... [N bytes]`.
"""

import argparse
import asyncio
import http
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
    parser.add_argument("--mode", required=True, choices=["echo", "drop", "reject", "close"])
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--status", type=int, default=503)
    parser.add_argument("--retry-after", dest="retry_after", default=None)
    parser.add_argument("--close-code", dest="close_code", type=int, default=1012)
    parser.add_argument("--cert", default=None)
    parser.add_argument("--key", default=None)
    args = parser.parse_args()
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.n < 0:
        parser.error("--n must be >= 0")
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


class Peer:
    def __init__(self, args):
        self.args = args
        self.connections = 0

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
