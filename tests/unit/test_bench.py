"""The benchmark harness counts what it claims: owed deliveries, frames split anywhere,
latency samples, pongs to pings (a miscounting harness would report false figures)."""

import asyncio
import time

import pytest
from websockets.frames import Frame, Opcode

from bench import fanout, loadgen


def test_deliveries_owed_follow_the_client_filters():
    """Clients 0 and 4 filter on the event (all), 1 and 5 on one conversation, others none."""
    per_conversation = [3, 5, 0, 0, 0, 0, 0, 0, 0, 0]  # 8 events in conversations 1 and 2
    assert fanout.client_path(1) == "/ws?conversations=1:1&i=1"
    assert fanout.client_path(5) == "/ws?conversations=1:2&i=5"
    # 6 clients take all 8 events; client 1 gets conversation 1's 3, client 5 conversation 2's 5
    assert fanout.expected(8, per_conversation) == 6 * 8 + 3 + 5


def test_every_client_belongs_to_one_worker():
    """The sampler gets one client in ten; the bulk workers share the rest, none twice."""
    n = 1000
    owned = [i for w in range(1 + fanout.BULK_WORKERS) for i in fanout.mine(w, n)]
    assert sorted(owned) == list(range(n))
    assert fanout.mine(0, n) == list(range(0, n, loadgen.SAMPLE_EVERY))


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.paused = True

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def server_frame(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
async def test_frames_are_counted_however_the_bytes_are_split(chunk):
    """Markers split across reads are counted once; sampled send times become latencies;
    a ping is answered with a masked pong."""
    stats = loadgen.Stats()
    client = loadgen.Client(stats, True, b"GET / HTTP/1.1\r\n\r\n")
    transport = FakeTransport()
    client.connection_made(transport)
    sent = time.time() - 0.005
    stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    stream += server_frame('{"type":"welcome"}')
    for i in range(20):
        stream += server_frame(f'{{"content":"{loadgen.MARK.decode()}{sent:.6f}","n":{i}}}')
    stream += loadgen.PING
    for start in range(0, len(stream), chunk):
        client.data_received(stream[start : start + chunk])
    assert client.open.done()
    assert stats.frames == 20
    assert len(stats.latencies) == 20
    assert all(0.004 < latency < 5 for latency in stats.latencies)
    assert loadgen.PONG in transport.written


async def test_a_refused_upgrade_fails_the_client():
    """A 429 (or anything but 101) is an error the harness reports, not a silent client."""
    client = loadgen.Client(loadgen.Stats(), False, b"GET / HTTP/1.1\r\n\r\n")
    client.connection_made(FakeTransport())
    client.data_received(b"HTTP/1.1 429 Too Many Requests\r\n\r\n")
    with pytest.raises(ConnectionError, match="429"):
        await asyncio.wait_for(client.open, 1)
