"""bench.inbound in small: its inputs go through the same door a real connection's do (the host's
front, one admitted player per connection), and every one is taken, none refused."""

from __future__ import annotations

from bench.inbound import bench_server


async def test_inbound_bench_admits_every_client_and_takes_every_input() -> None:
    per_input = await bench_server(clients=20, inputs=400, repeat=1)
    assert per_input > 0  # (bench_server asserts every client admitted, every input taken, no offence)
