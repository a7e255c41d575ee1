"""Connection quality: the E-model formula, smoothing, hysteresis, lost, aggregation."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sfu.quality import (
    EXCELLENT,
    GOOD,
    LOST,
    POOR,
    LinkStats,
    QualityScorer,
    combine_streams,
    effective_latency_ms,
    mos,
    mos_from_r,
    participant_stats,
    quality_for,
    r_factor,
)

CLEAN = (0.0, 0.005, 0.02)  # loss, jitter 5 ms, RTT 20 ms: 30 ms effective latency


def feed(scorer: QualityScorer, loss: float, seconds: int, start: float,
         jitter_s: float = 0.005, rtt_s: float = 0.02) -> list[str]:
    """One report per second; the class after each."""
    return [scorer.update(loss, jitter_s, rtt_s, start + i)[1] for i in range(1, seconds + 1)]


@pytest.mark.parametrize(("r", "expected"), [
    (-5.0, 1.0), (0.0, 1.0), (60.0, 3.1), (100.0, 4.5), (120.0, 4.5),
    (93.2, 1 + 0.035 * 93.2 + 7e-6 * 93.2 * 33.2 * 6.8),
])
def test_mos_from_r(r: float, expected: float) -> None:
    assert mos_from_r(r) == pytest.approx(expected)


@pytest.mark.parametrize(("jitter_s", "rtt_s", "latency_ms", "r"), [
    (0.005, 0.02, 30.0, 93.2 - 30 / 40),
    (0.0, None, 10.0, 93.2 - 10 / 40),
    (0.02, 0.2, 150.0, 93.2 - 150 / 40),
    (0.05, 0.4, 310.0, 93.2 - (310 - 120) / 10),  # past 160 ms the delay costs more
    (-1.0, math.nan, 10.0, 93.2 - 10 / 40),  # nonsense inputs are clamped
])
def test_delay_impairment(jitter_s: float, rtt_s: float | None, latency_ms: float,
                          r: float) -> None:
    assert effective_latency_ms(jitter_s, rtt_s) == pytest.approx(latency_ms)
    assert r_factor(0.0, jitter_s, rtt_s) == pytest.approx(r)


@pytest.mark.parametrize(("loss", "jitter_s", "rtt_s", "score", "quality"), [
    (0.0, 0.005, 0.02, 4.39, EXCELLENT),
    (0.01, 0.005, 0.02, 4.29, EXCELLENT),
    (0.02, 0.005, 0.02, 4.15, EXCELLENT),
    (0.03, 0.005, 0.02, 3.98, GOOD),
    (0.05, 0.005, 0.02, 3.59, GOOD),
    (0.10, 0.005, 0.02, 2.44, POOR),
    (0.0, 0.02, 0.1, 4.36, EXCELLENT),  # a typical internet path
    (0.0, 0.02, 0.5, 3.83, GOOD),  # half a second of RTT
    (0.0, 0.05, 0.8, 2.80, POOR),
    (0.5, 0.005, 0.02, 1.0, POOR),  # R clamped at 0
    (1.5, 0.005, 0.02, 1.0, POOR),  # a loss fraction above 1 is clamped
    (-0.2, 0.005, 0.02, 4.39, EXCELLENT),
])
def test_formula_at_known_points(loss: float, jitter_s: float, rtt_s: float, score: float,
                                 quality: str) -> None:
    value = mos(loss, jitter_s, rtt_s)
    assert value == pytest.approx(score, abs=0.005)
    assert quality_for(value) == quality
    assert 1.0 <= value <= 4.5


@pytest.mark.parametrize(("loss", "quality"), [
    (0.0, EXCELLENT), (0.01, EXCELLENT), (0.03, GOOD), (0.05, GOOD), (0.10, POOR),
])
def test_steady_loss_settles_on_its_class(loss: float, quality: str) -> None:
    scorer = QualityScorer()
    assert feed(scorer, loss, 10, 0.0)[-1] == quality
    assert 1.0 <= scorer.score <= 4.5


def test_ten_percent_loss_goes_poor_within_three_reports_then_recovers() -> None:
    scorer = QualityScorer()
    assert feed(scorer, 0.0, 5, 0.0) == [EXCELLENT] * 5
    assert feed(scorer, 0.10, 4, 5.0) == [EXCELLENT, GOOD, POOR, POOR]
    assert scorer.score < 3.5
    feed(scorer, 0.10, 10, 9.0)
    # loss stops: good after two reports, excellent after four
    assert feed(scorer, 0.0, 5, 19.0) == [POOR, GOOD, GOOD, EXCELLENT, EXCELLENT]


@pytest.mark.parametrize("bad", [(1.0, 0.005, 0.02), (0.3, 0.2, 2.0), (0.0, 0.5, 0.02)])
def test_a_single_bad_report_does_not_flip(bad: tuple[float, float, float]) -> None:
    scorer = QualityScorer()
    assert scorer.update(*bad, now=1.0) == (4.4, EXCELLENT)  # even as the first report
    feed(scorer, 0.0, 5, 1.0)
    for t in (10.0, 20.0, 30.0):
        score, quality = scorer.update(*bad, now=t)
        assert quality == EXCELLENT
        assert score > 4.3
        assert feed(scorer, 0.0, 9, t) == [EXCELLENT] * 9


def test_hysteresis_keeps_a_hovering_score_steady() -> None:
    # loss alternating around the excellent/good boundary (MOS 4.12 / 4.08)
    for start_loss in (0.0, 0.05):
        scorer = QualityScorer()
        first = feed(scorer, start_loss, 10, 0.0)[-1]
        seen = set()
        for i in range(30):
            loss = 0.0215 if i % 2 else 0.0245
            seen.add(scorer.update(loss, 0.005, 0.02, 11.0 + i)[1])
        assert seen == {EXCELLENT if first == EXCELLENT else GOOD}
    # and around the good/poor boundary (MOS 3.53 / 3.47)
    scorer = QualityScorer()
    feed(scorer, 0.05, 10, 0.0)
    qualities = {scorer.update(0.053 if i % 2 else 0.056, 0.005, 0.02, 11.0 + i)[1]
                 for i in range(30)}
    assert qualities == {GOOD}


def test_lost_after_three_silent_seconds_and_back() -> None:
    scorer = QualityScorer()
    feed(scorer, 0.0, 5, 0.0)
    assert scorer.update(0.0, 0.0, 0.0, 6.0, receiving=False) == (scorer.score, EXCELLENT)
    assert scorer.score > 4.35
    assert scorer.update(0.0, 0.0, 0.0, 7.0, receiving=False)[1] == EXCELLENT
    assert scorer.update(0.0, 0.0, 0.0, 8.0, receiving=False) == (1.0, LOST)
    assert scorer.update(0.0, 0.0, 0.0, 9.0, receiving=False) == (1.0, LOST)
    # packets again: a fresh start, so the outage's loss in the first report is ignored
    assert scorer.update(0.2, 0.005, 0.02, 10.0) == (4.4, EXCELLENT)
    assert feed(scorer, 0.0, 3, 10.0) == [EXCELLENT] * 3
    # but a connection that stays bad shows within three reports
    for t in (14.0, 15.0, 16.0):
        scorer.update(0.0, 0.0, 0.0, t, receiving=False)
    assert scorer.quality == LOST
    assert feed(scorer, 0.2, 3, 16.0) == [EXCELLENT, POOR, POOR]


def test_lost_without_ever_receiving() -> None:
    scorer = QualityScorer()
    assert [scorer.update(0.0, 0.0, None, t, receiving=False)[1]
            for t in (1.0, 2.0, 3.0, 4.0)] == [EXCELLENT, EXCELLENT, EXCELLENT, LOST]


def test_irregular_reports_are_weighted_by_time() -> None:
    quick, slow = QualityScorer(), QualityScorer()
    for scorer in (quick, slow):
        feed(scorer, 0.0, 3, 0.0)
    for t in (3.1, 3.2, 3.3):  # three reports in 0.3 s move less than three in 3 s
        quick.update(0.10, 0.005, 0.02, t)
    for t in (4.0, 5.0, 6.0):
        slow.update(0.10, 0.005, 0.02, t)
    assert quick.score > slow.score
    assert quick.quality == EXCELLENT


def test_combine_streams() -> None:
    assert combine_streams([]) is None
    audio = LinkStats(loss_fraction=0.10, jitter_s=0.004, rtt_s=0.05, packets=50)
    video = LinkStats(loss_fraction=0.0, jitter_s=0.012, rtt_s=None, packets=450)
    both = combine_streams([audio, video])
    assert both is not None
    assert both.loss_fraction == pytest.approx(0.01)
    assert (both.jitter_s, both.rtt_s, both.packets) == (0.012, 0.05, 500)
    # without packet counts: a plain mean
    unknown = combine_streams([LinkStats(0.2, 0.01), LinkStats(0.0, 0.02)])
    assert unknown is not None
    assert unknown.loss_fraction == pytest.approx(0.1)
    assert (unknown.jitter_s, unknown.rtt_s, unknown.packets) == (0.02, None, 0)


def test_participant_stats_is_the_worse_direction() -> None:
    up = [LinkStats(loss_fraction=0.08, jitter_s=0.01, rtt_s=None, packets=100)]
    down = [LinkStats(loss_fraction=0.01, jitter_s=0.01, rtt_s=0.08, packets=100)]
    worst = participant_stats(up, down)
    assert worst == LinkStats(loss_fraction=0.08, jitter_s=0.01, rtt_s=0.08, packets=100)
    # a direction with a long RTT can be the worse one without loss
    near = [LinkStats(loss_fraction=0.08, jitter_s=0.01, rtt_s=0.02, packets=100)]
    far = [LinkStats(loss_fraction=0.0, jitter_s=0.01, rtt_s=1.5, packets=100)]
    assert participant_stats(near, far) == far[0]
    # the downlink borrows the uplink's RTT
    both = participant_stats([LinkStats(0.0, 0.01, 0.3)], [LinkStats(0.0, 0.01)])
    assert both is not None and both.rtt_s == 0.3
    # one direction only: itself; none: None
    assert participant_stats([], down) == down[0]
    assert participant_stats(up, []) == up[0]
    assert participant_stats([], []) is None


def test_participant_stats_feed_the_scorer() -> None:
    scorer = QualityScorer()
    for t in range(1, 6):
        stats = participant_stats([LinkStats(0.12, 0.01, None, 50)],
                                  [LinkStats(0.0, 0.01, 0.05, 500)])
        assert stats is not None
        score, quality = scorer.update(stats.loss_fraction, stats.jitter_s, stats.rtt_s, t)
    assert quality == POOR


@pytest.mark.parametrize("kwargs", [
    {"smoothing_s": 0}, {"lost_after_s": 0}, {"loss_weight": -1},
    {"good_mos": 4.2, "excellent_mos": 4.1}, {"excellent_mos": 4.6}, {"hysteresis_mos": -0.1},
])
def test_bad_settings_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        QualityScorer(**kwargs)
