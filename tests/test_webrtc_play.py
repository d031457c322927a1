"""Playing over WebRTC data channels: through coturn in relay-only mode under 5 % packet loss, and a
relay worker killed with SIGKILL while its clients play."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from netcode.client import ArbiterClient
from netcode.client_session import Snapshot
from netcode.prediction import ShipPredictor, TickClock
from tests.rtcutil import coturn, loopback_ice, rtc_server
from tests.serverutil import url, wait_for
from tests.udp_loss_proxy import UdpLossProxy


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback_ice(monkeypatch)


async def test_relay_only_through_coturn_under_loss_plays_and_prediction_converges() -> None:
    with coturn() as turn:
        async with rtc_server(turn) as server:
            loop = asyncio.get_running_loop()
            # Every datagram between the client and coturn crosses a proxy that loses 5 % each way.
            proxy = await UdpLossProxy.start(("127.0.0.1", turn.port), loss=0.05, seed=7)
            try:
                c = await ArbiterClient.connect(url(server), name="ada")
                ice = await c.request_turn()
                assert ice and ice[0]["username"].endswith(":ada")
                lossy = [{**ice[0], "urls": [f"turn:127.0.0.1:{proxy.port}?transport=udp"]}]
                rtc = await c.start_webrtc(lossy, relay_only=True, timeout=20.0)
                assert rtc.up, rtc.down_reason
                # Relay-only: the client's only candidates are coturn's relayed addresses.
                local = rtc.pc.sctp.transport.transport.iceGatherer.getLocalCandidates()  # type: ignore[union-attr]
                assert local and all(cand.type == "relay" for cand in local)

                w = c.welcome
                assert w is not None
                pred, clock = ShipPredictor(w.spec["move"], w.tick_rate), TickClock(w.tick_rate)

                def on_snapshot(snap: Snapshot) -> None:
                    clock.observe(snap.tick, loop.time())
                    me = snap.entities[snap.entities["id"] == c.player]
                    if me.size:
                        pred.on_snapshot(snap.tick, snap.ack_seq, float(me["x"][0]), float(me["y"][0]),
                                         float(me["vx"][0]), float(me["vy"][0]))  # fmt: skip

                c.on_snapshot = on_snapshot
                await wait_for(lambda: pred.initialized, 10)
                fast0 = rtc.fast_in
                thrust = [(0.8, 0.0), (0.0, 0.8), (-0.6, -0.6), (0.5, -0.5)]
                for i in range(66):  # 3 s of inputs at 20 Hz over the lossy unreliable channel, then stop
                    dx, dy = thrust[(i // 15) % len(thrust)] if i < 60 else (0.0, 0.0)
                    seq = c.send_input(dx, dy)
                    pred.send(seq, dx, dy, clock.input_tick(loop.time(), c.session.rtt or 0.05))
                    await asyncio.sleep(0.05)
                last_seq = c.session.seq
                # Inputs acknowledged (all but lost ones, which later inputs supersede) ...
                await wait_for(lambda: c.session.last_ack_seq >= last_seq - 3, 10)
                # ... snapshots arrived on the data channel, not the WebSocket ...
                assert rtc.fast_in - fast0 >= 30
                # ... and once inputs stop, the prediction converges to the server's state.
                snaps = pred.snapshots
                await wait_for(lambda: pred.snapshots >= snaps + 20, 10)
                assert pred.last_error < 1e-3, pred.stats()
                assert proxy.dropped > 0  # the loss was real
                assert server.stats_dict()["webrtc"]["peers_up"] == 1
                await c.close()
            finally:
                proxy.close()


async def test_worker_killed_clients_fall_back_to_websocket_and_tick_goes_on() -> None:
    async with rtc_server(rtc={"restart_delay": 0.2}) as server:
        clients = [await ArbiterClient.connect(url(server), name=f"p{i}") for i in range(2)]
        for c in clients:
            rtc = await c.start_webrtc()
            assert rtc.up, rtc.down_reason
        worker = server.rtc.links[0]  # type: ignore[union-attr]
        assert worker.proc is not None
        pid = worker.proc.pid
        tick0 = server.campaign.tick_count
        snaps0 = [c.snapshots for c in clients]
        os.kill(pid, signal.SIGKILL)
        # Each client is told why and keeps playing over its WebSocket.
        for c in clients:
            await wait_for(lambda c=c: bool(c.rtc_states) and c.rtc_states[-1].state == "down", 5)
            assert "relay worker" in c.rtc_states[-1].reason
            assert c.is_open
        for c in clients:
            seq = c.send_input(0.3, 0.1)
            await wait_for(lambda c=c, seq=seq: c.session.last_ack_seq >= seq, 5)
        await wait_for(lambda: all(c.snapshots > s + 10 for c, s in zip(clients, snaps0, strict=True)), 5)
        assert server.campaign.tick_count > tick0
        stats = server.stats_dict()["webrtc"]
        assert stats["worker_deaths"] == 1 and stats["fallbacks"] == 2
        # The worker is restarted; a client may move back to WebRTC.
        await wait_for(lambda: worker.alive and worker.proc is not None and worker.proc.pid != pid, 10)
        await wait_for(lambda: bool(worker.stats), 10)
        rtc = await clients[0].start_webrtc()
        assert rtc.up, rtc.down_reason
        for c in clients:
            await c.close()


async def test_stalled_worker_is_killed_and_clients_fall_back() -> None:
    async with rtc_server(rtc={"stall_timeout": 0.5, "restart_delay": 30.0}) as server:
        c = await ArbiterClient.connect(url(server), name="ada")
        assert (await c.start_webrtc()).up
        worker = server.rtc.links[0]  # type: ignore[union-attr]
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGSTOP)  # hung: alive, but no heartbeat, reads nothing
        try:
            await wait_for(lambda: bool(c.rtc_states) and c.rtc_states[-1].state == "down", 5)
            assert c.rtc_states[-1].reason == "relay worker stalled"
            snaps = c.snapshots
            await wait_for(lambda: c.snapshots > snaps + 5, 5)  # on WebSocket again
            assert server.stats_dict()["webrtc"]["worker_kills"] == 1
        finally:
            if worker.proc.poll() is None:
                os.kill(worker.proc.pid, signal.SIGKILL)
        await c.close()


async def test_ice_that_cannot_connect_leaves_the_client_on_websocket() -> None:
    # A TURN server that allocates relays but may not relay to the game server's address (coturn's
    # default refusal of loopback peers): a relay-only client can never connect, like one behind a
    # firewall whose TURN path is blocked.
    with coturn(loopback_peers=False) as turn:
        async with rtc_server(turn, rtc={"ice_timeout": 2.0}) as server:
            c = await ArbiterClient.connect(url(server), name="ada")
            rtc = await c.start_webrtc(await c.request_turn(), relay_only=True, timeout=15.0)
            assert not rtc.up
            assert c.rtc_states and c.rtc_states[-1].state == "down"
            assert "did not connect" in rtc.down_reason or "failed" in rtc.down_reason, rtc.down_reason
            seq, snaps = c.send_input(0.2, 0.2), c.snapshots
            await wait_for(lambda: c.session.last_ack_seq >= seq and c.snapshots > snaps + 5, 5)
            assert server.stats_dict()["webrtc"]["peers"] == 0
            await c.close()
