"""WebRTC in real Chromium (Debian's, driven by Playwright, fake microphone): two /play pages move to
data channels through coturn in relay-only mode and play (visible in RTCPeerConnection.getStats()),
and one page's microphone, push-to-talk held, is heard by the other (its inbound audio's
bytesReceived grows). Skipped without Chromium, failed instead under ARBITER_REQUIRE_SERVICES=1."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, Page

from engine.webrtc.relay import WebRtcConfig
from tests.browserutil import ThreadServer, thread_server, wait_until
from tests.rtcutil import TURN_SECRET, coturn

STATS = """async () => {
    const report = await window.arbiter.client.rtc.pc.getStats();
    const out = {channels: {}, audioIn: 0, audioOut: 0, localTypes: [], pair: null};
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
        if (s.type === "data-channel")
            out.channels[s.label] = {state: s.state, in: s.messagesReceived, out: s.messagesSent};
        if (s.type === "inbound-rtp" && s.kind === "audio") out.audioIn += s.bytesReceived || 0;
        if (s.type === "outbound-rtp" && s.kind === "audio") out.audioOut += s.bytesSent || 0;
        if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
            const local = byId.get(s.localCandidateId);
            out.pair = {local: local && local.candidateType, bytesReceived: s.bytesReceived};
        }
        if (s.type === "local-candidate") out.localTypes.push(s.candidateType);
    });
    return out;
}"""


def stats(page: Page) -> dict[str, Any]:
    out: dict[str, Any] = page.evaluate(STATS)
    return out


def open_pages(browser: Browser, srv: ThreadServer, names: list[str], query: str) -> list[Page]:
    pages = []
    for name in names:
        ctx = browser.new_context(bypass_csp=True, viewport={"width": 640, "height": 400}, permissions=["microphone"])
        page = ctx.new_page()
        page.goto(f"{srv.http}/play?name={name}&auto=1&relay=1{query}")
        pages.append(page)
    for page in pages:
        page.wait_for_function("window.arbiter?.client?.rtc?.up === true", timeout=30000)
    return pages


def rtc_config(turn_url: str) -> WebRtcConfig:
    return WebRtcConfig(workers=1, host_ips=("127.0.0.1",), turn_urls=(turn_url,), turn_secret=TURN_SECRET)


def test_two_pages_play_over_data_channels_through_turn(browser: Browser) -> None:
    with coturn() as turn, thread_server(game="wander", game_config={"npcs": 30}, aoi_radius=0,
                                         webrtc=rtc_config(turn.url)) as srv:  # fmt: skip
        a, b = open_pages(browser, srv, ["ada", "bob"], "")
        ids = [int(p.evaluate("() => window.arbiter.client.player")) for p in (a, b)]
        # Both see each other, in snapshots that now come over the unordered data channel.
        for page, other in ((a, ids[1]), (b, ids[0])):
            page.wait_for_function(f"window.arbiter.client.latest.ids.includes({other})", timeout=10000)
        frames = [int(p.evaluate("() => window.arbiter.client.rtc.framesIn")) for p in (a, b)]
        # A key moves ada's ship on the server: the input travelled on the data channel.
        x0 = srv.call(lambda: srv.server.campaign.player_value(ids[0], "x"))
        a.keyboard.down("ArrowRight")
        wait_until(lambda: srv.call(lambda: srv.server.campaign.player_value(ids[0], "x")) > x0 + 1.0)  # type: ignore[operator]
        a.keyboard.up("ArrowRight")
        for page, f0 in zip((a, b), frames, strict=True):
            page.wait_for_function(f"window.arbiter.client.rtc.framesIn > {f0 + 20}", timeout=10000)
            s = stats(page)
            assert s["pair"] is not None and s["pair"]["local"] == "relay", s  # through coturn, relay only
            assert set(s["localTypes"]) == {"relay"}, s
            fast, reliable = s["channels"]["arbiter-u"], s["channels"]["arbiter-r"]
            assert fast["state"] == "open" and fast["in"] > 10 and fast["out"] > 0, s
            assert reliable["state"] == "open", s
            assert "webrtc" in page.inner_text("#hud-transport")
        worker = srv.call(lambda: dict(srv.server.rtc.links[0].stats))  # type: ignore[union-attr]
        assert worker["inputs"] > 20 and worker["fast_out"] > 20, worker  # (counters of the last heartbeat)


def test_a_pages_microphone_is_heard_by_the_other(browser: Browser) -> None:
    with coturn() as turn, thread_server(game="wander", game_config={"npcs": 30}, aoi_radius=0,
                                         webrtc=rtc_config(turn.url)) as srv:  # fmt: skip
        speaker, listener = open_pages(browser, srv, ["alice", "carol"], "&voice=1")
        assert stats(listener)["audioIn"] == 0
        speaker.keyboard.down("KeyT")  # push-to-talk
        speaker_id = int(speaker.evaluate("() => window.arbiter.client.player"))
        listener.wait_for_function(f"window.arbiter.client.voiceSlots.includes({speaker_id})", timeout=10000)
        wait_until(lambda: stats(listener)["audioIn"] > 4000, timeout=15)
        first = stats(listener)["audioIn"]
        wait_until(lambda: stats(listener)["audioIn"] > first + 2000, timeout=10)  # and it keeps coming
        assert "talking" in speaker.inner_text("#hud-voice")
        speaker.keyboard.up("KeyT")
        listener.wait_for_function("window.arbiter.client.voiceSlots.every((e) => e === 0)", timeout=10000)
