"""The reference relay: the ceiling for Python WebSocket fan-out (issue 7), run by the fan-out
benchmark under the same load as the bridge.

It subscribes to the same Chatwoot cable as the bridge, and for each event builds the
client frame once and writes the prepared bytes with one ``transport.write`` per matching
client (a client whose unsent bytes would pass 1 MiB is cut, the bridge's slow-consumer
rule). Filters: ``conversations=a:c,...`` and ``events=glob,...`` in the query string. No
normalisation, no event log, no auth, no limits: nothing the bridge must do and a ceiling
need not.

    python -m bench.relay --chatwoot http://127.0.0.1:3000 --token T --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import re
import sys
from urllib.parse import parse_qs, urlsplit

import aiohttp
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode
from websockets.utils import accept_key


BUFFER_LIMIT = 1024 * 1024
WELCOME = Frame(Opcode.TEXT, b'{"type":"welcome","protocol":1}').serialize(mask=False)


class Client(asyncio.Protocol):
    __slots__ = ("buf", "clients", "conversations", "events", "transport")

    def __init__(self, clients: set[Client]) -> None:
        self.clients = clients
        self.transport: asyncio.Transport | None = None
        self.buf: bytes | None = b""
        self.conversations: set[tuple[int, int]] | None = None
        self.events: re.Pattern[str] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.buf is None or self.transport is None:
            return  # live: client frames (pongs, close) are ignored
        self.buf += data
        head, sep, _ = self.buf.partition(b"\r\n\r\n")
        if not sep:
            if len(self.buf) > 8192:
                self.transport.abort()
            return
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        query = parse_qs(urlsplit(lines[0].split()[1]).query)
        if "conversations" in query:
            self.conversations = {
                (int(a), int(c))
                for ref in query["conversations"][0].split(",")
                for a, _, c in [ref.partition(":")]
            }
        if "events" in query:
            globs = query["events"][0].split(",")
            self.events = re.compile("|".join(fnmatch.translate(g) for g in globs))
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + accept_key(headers["sec-websocket-key"]).encode()
            + b"\r\n\r\n"
            + WELCOME
        )
        self.buf = None
        self.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.clients.discard(self)
        self.transport = None


def publish(clients: set[Client], event: str, account: int, conversation: int, text: str) -> None:
    """Encode once, then one write of the prepared bytes per matching client."""
    data = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    ref = (account, conversation)
    for client in clients:
        if client.conversations is not None and ref not in client.conversations:
            continue
        if client.events is not None and not client.events.match(event):
            continue
        transport = client.transport
        if transport is None:
            continue
        if transport.get_write_buffer_size() + len(data) > BUFFER_LIMIT:
            transport.abort()
            continue
        transport.write(data)


async def relay(chatwoot: str, token: str, port: int) -> None:
    clients: set[Client] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(clients), "127.0.0.1", port, backlog=4096)
    async with (
        aiohttp.ClientSession(headers={"api_access_token": token}) as http,
        http.get(chatwoot + "/api/v1/profile") as answer,
    ):
        profile = await answer.json()
    identifier = json.dumps(
        {
            "channel": "RoomChannel",
            "pubsub_token": profile["pubsub_token"],
            "account_id": profile["accounts"][0]["id"],
            "user_id": profile["id"],
        }
    )
    async with server, connect(chatwoot.replace("http", "ws", 1) + "/cable") as cable:
        await cable.send(json.dumps({"command": "subscribe", "identifier": identifier}))
        async for raw in cable:
            frame = json.loads(raw)
            message = frame.get("message")
            if frame.get("type") == "confirm_subscription":
                print("ready", flush=True)
            elif isinstance(message, dict) and "event" in message:
                data = message["data"]
                account, conversation = data.get("account_id"), data.get("conversation_id")
                text = json.dumps(
                    {
                        "type": "event",
                        "event": message["event"],
                        "account_id": account,
                        "conversation_id": conversation,
                        "data": data,
                    },
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
                publish(clients, message["event"], account, conversation, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chatwoot", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(relay(args.chatwoot, args.token, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
