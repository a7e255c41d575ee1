"""Active speaker detection on synthetic audio-level sequences."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from sfu.speaker import ActiveSpeakers, level_from_dbov
from signaling.messages import validate_server_message

PTIME_S = 0.02
SILENCE = 127
#: sent-time -> -dBov of the packet sent then, or None for no packet
Source = Callable[[float, random.Random], int | None]
Emitted = list[tuple[float, list[dict[str, Any]]]]


def tone(rng: random.Random) -> int:
    return 10 + rng.randint(-3, 3)


def simulate(sources: dict[str, Source], end_s: float, *, update_every_s: float = 0.5,
             phase_s: float = 0.0, jitter_s: float = 0.0, seed: int = 1,
             speakers: ActiveSpeakers | None = None) -> Emitted:
    """Feed packets (20 ms apart, arriving up to ``jitter_s`` late) and periodic updates."""
    sp = speakers if speakers is not None else ActiveSpeakers(0.5)
    rng = random.Random(seed)
    events: list[tuple[float, int, str, int]] = []
    for sid, source in sources.items():
        for k in range(round(end_s / PTIME_S)):
            sent = k * PTIME_S
            dbov = source(sent, rng)
            if dbov is not None:
                events.append((sent + rng.uniform(0.0, jitter_s), 0, sid, dbov))
    tick = 0
    while phase_s + tick * update_every_s < end_s:
        events.append((phase_s + tick * update_every_s, 1, "", 0))
        tick += 1
    events.sort()
    emitted: Emitted = []
    for at, kind, sid, dbov in events:
        if kind == 0:
            sp.observe(sid, dbov, at)
        elif (out := sp.update(at)) is not None:
            emitted.append((at, out))
    return emitted


def active_at(emitted: Emitted, t: float) -> set[str]:
    """The active set a client knows at ``t`` (from the last message up to then)."""
    known: set[str] = set()
    for at, speakers in emitted:
        if at > t:
            break
        known = {s["participant_sid"] for s in speakers if s["active"]}
    return known


def changes(emitted: Emitted) -> list[tuple[float, set[str]]]:
    """The messages that changed the active set, with the new set."""
    out: list[tuple[float, set[str]]] = []
    previous: set[str] = set()
    for at, speakers in emitted:
        current = {s["participant_sid"] for s in speakers if s["active"]}
        if current != previous:
            out.append((at, current))
        previous = current
    return out


def alternating(first_on: bool, period_s: float = 2.0) -> Source:
    def source(t: float, rng: random.Random) -> int:
        on = int(t // period_s) % 2 == 0
        return tone(rng) if on == first_on else SILENCE
    return source


@pytest.mark.parametrize(("dbov", "level"), [
    (0, 1.0), (10, 0.875), (40, 0.5), (50, 0.375), (60, 0.25), (80, 0.0), (127, 0.0),
    (0x80 | 10, 0.875),  # the raw extension byte with the V bit set
])
def test_level_scale(dbov: int, level: float) -> None:
    assert level_from_dbov(dbov) == pytest.approx(level)


@pytest.mark.parametrize(("update_every_s", "phase_s", "jitter_s"), [
    (0.5, 0.0, 0.0), (0.5, 0.25, 0.03), (0.5, 0.49, 0.06), (0.1, 0.03, 0.03),
])
def test_alternating_tones_follow_within_a_second_without_flapping(
        update_every_s: float, phase_s: float, jitter_s: float) -> None:
    emitted = simulate({"PA_a": alternating(True), "PA_b": alternating(False)}, 12.0,
                       update_every_s=update_every_s, phase_s=phase_s, jitter_s=jitter_s)
    for change in (0.0, 2.0, 4.0, 6.0, 8.0, 10.0):
        expected = {"PA_a"} if int(change // 2) % 2 == 0 else {"PA_b"}
        assert active_at(emitted, change + 1.0) == expected, (change, emitted)
        # steady tone: no change until the next one (at most a level catching up)
        assert not [at for at, _ in changes(emitted) if change + 1.0 < at < change + 2.0]
        assert len([at for at, _ in emitted if change + 1.0 < at < change + 2.0]) <= 1
    # each message: active loudest first, then the ones that stopped (once)
    for _, speakers in emitted:
        flags = [s["active"] for s in speakers]
        assert flags == sorted(flags, reverse=True)
        active_levels = [s["level"] for s in speakers if s["active"]]
        assert active_levels == sorted(active_levels, reverse=True)
        validate_server_message({"type": "speakers_changed", "speakers": speakers})
    tone_levels = [s["level"] for _, sp in emitted for s in sp if s["active"]]
    assert 0.8 <= max(tone_levels) <= 0.95, emitted  # a -10 dBov tone


def test_rate_limited_to_one_message_per_interval() -> None:
    # A starts at 0, B at 0.3 s, C at 0.35 s; updates every 50 ms
    def starting(at: float) -> Source:
        return lambda t, rng: tone(rng) if t >= at else SILENCE
    emitted = simulate({"PA_a": starting(0.0), "PA_b": starting(0.3), "PA_c": starting(0.35)},
                       3.0, update_every_s=0.05)
    times = [at for at, _ in emitted]
    assert all(b - a >= 0.5 - 1e-9 for a, b in zip(times, times[1:], strict=False)), times
    assert active_at(emitted, times[0]) == {"PA_a"}
    assert times[0] < 0.3
    # B and C became active while the first message's interval ran: one message for both
    assert times[1] == pytest.approx(times[0] + 0.5)
    assert active_at(emitted, times[1]) == {"PA_a", "PA_b", "PA_c"}
    assert len(emitted) == 2


def test_single_loud_click_does_not_activate() -> None:
    def clicks(t: float, rng: random.Random) -> int | None:
        k = round(t / PTIME_S)
        if k == 50:  # one full-scale packet at 1 s
            return 0
        if 100 <= k < 105:  # 100 ms of full scale at 2 s
            return 0
        if 150 <= k < 250:  # muted for 2 s: no packets...
            return None
        if k == 250:  # ...then a click
            return 0
        return SILENCE
    assert simulate({"PA_a": clicks}, 8.0, update_every_s=0.05, jitter_s=0.02) == []


def test_noise_at_the_threshold_does_not_flap() -> None:
    def noise(t: float, rng: random.Random) -> int:
        return rng.randint(44, 56)  # -50 dBov +- 6 dB
    emitted = simulate({"PA_a": noise}, 30.0, update_every_s=0.1, jitter_s=0.03)
    assert len(changes(emitted)) <= 1, emitted


def test_noise_between_the_thresholds_never_activates() -> None:
    emitted = simulate({"PA_a": lambda t, rng: rng.randint(52, 58)}, 30.0,
                       update_every_s=0.1, jitter_s=0.03)
    assert emitted == []


def test_dtx_silence_stops_a_speaker() -> None:
    # tone for 2 s, then Opus DTX: one silence packet per 400 ms
    def dtx(t: float, rng: random.Random) -> int | None:
        if t < 2.0:
            return tone(rng)
        return SILENCE if round(t / PTIME_S) % 20 == 0 else None
    emitted = simulate({"PA_a": dtx}, 5.0, phase_s=0.1)
    assert active_at(emitted, 1.0) == {"PA_a"}
    assert active_at(emitted, 3.0) == set()
    [(_, stopped)] = [(at, sp) for at, sp in emitted if at > 2.0]
    assert [(s["participant_sid"], s["active"]) for s in stopped] == [("PA_a", False)]
    assert stopped[0]["level"] < 0.1


@pytest.mark.parametrize("update_every_s", [0.5, 0.1])
def test_muted_speaker_decays_to_silence_and_comes_back(update_every_s: float) -> None:
    # tone, no packets at all from 2 s to 4 s, tone again
    def muted(t: float, rng: random.Random) -> int | None:
        return None if 2.0 <= t < 4.0 else tone(rng)
    emitted = simulate({"PA_a": muted}, 6.0, update_every_s=update_every_s, phase_s=0.05)
    assert active_at(emitted, 1.0) == {"PA_a"}
    assert active_at(emitted, 3.0) == set()
    assert active_at(emitted, 5.0) == {"PA_a"}
    assert [active for _, active in changes(emitted)] == [{"PA_a"}, set(), {"PA_a"}]


def test_stopped_speaker_reported_once_and_loudest_first() -> None:
    sp = ActiveSpeakers(0.5)
    t = 0.0
    for _ in range(50):  # 1 s: A loud, B quieter
        sp.observe("PA_a", 10, t)
        sp.observe("PA_b", 30, t)
        t += PTIME_S
    first = sp.update(t)
    assert first is not None
    assert [(s["participant_sid"], s["active"]) for s in first] == [("PA_a", True),
                                                                    ("PA_b", True)]
    assert first[0]["level"] == pytest.approx(0.875, abs=0.01)
    assert first[1]["level"] == pytest.approx(0.625, abs=0.01)
    assert sp.snapshot() == first
    for _ in range(50):  # B goes silent
        sp.observe("PA_a", 10, t)
        sp.observe("PA_b", SILENCE, t)
        t += PTIME_S
    second = sp.update(t)
    assert second == [{"participant_sid": "PA_a", "level": pytest.approx(0.875, abs=0.01),
                       "active": True},
                      {"participant_sid": "PA_b", "level": 0.0, "active": False}]
    for _ in range(5):
        t += 0.5
        for _ in range(25):
            sp.observe("PA_a", 10, t)
            sp.observe("PA_b", SILENCE, t)
            t += PTIME_S
        assert sp.update(t) is None


def test_level_change_of_an_active_speaker_is_reported() -> None:
    sp = ActiveSpeakers(0.5)
    t = 0.0
    for dbov, expect in ((30, 0.625), (30, None), (10, 0.875), (12, None)):
        for _ in range(25):
            sp.observe("PA_a", dbov, t)
            t += PTIME_S
        out = sp.update(t)
        if expect is None:
            assert out is None
        else:
            assert out is not None
            assert out[0]["level"] == pytest.approx(expect, abs=0.01)


def test_removed_speaker_reported_stopped_once() -> None:
    sp = ActiveSpeakers(0.5)
    t = 0.0
    for _ in range(50):
        sp.observe("PA_a", 10, t)
        sp.observe("PA_b", 20, t)
        t += PTIME_S
    assert sp.update(t) is not None
    sp.remove("PA_a")
    sp.remove("PA_unknown")
    for _ in range(25):
        sp.observe("PA_b", 20, t)
        t += PTIME_S
    assert sp.update(t) == [{"participant_sid": "PA_b", "level": 0.75, "active": True},
                            {"participant_sid": "PA_a", "level": 0.0, "active": False}]
    for _ in range(25):
        sp.observe("PA_b", 20, t)
        t += PTIME_S
    assert sp.update(t) is None
    assert sp.snapshot() == [{"participant_sid": "PA_b", "level": 0.75, "active": True}]
    sp.observe("PA_a", 10, t)  # a removed participant may come back
    for _ in range(25):
        sp.observe("PA_b", 20, t)
        t += PTIME_S
    assert sp.update(t) is None  # one packet is not speech


def test_out_of_order_now_is_harmless() -> None:
    sp = ActiveSpeakers(0.5)
    sp.observe("PA_a", 10, 1.0)
    sp.observe("PA_a", 10, 0.5)
    assert sp.update(1.0) is None


@pytest.mark.parametrize("kwargs", [
    {"update_interval_s": 0}, {"activate_dbov": 60, "deactivate_dbov": 50},
    {"deactivate_dbov": 90}, {"smoothing_s": 0}, {"hold_s": 0.01}, {"hangover_s": -1},
    {"level_step": 0},
])
def test_bad_settings_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ActiveSpeakers(**kwargs)
