"""bespoke.estimate: the duration and cost from the measured figures."""

from __future__ import annotations

import pytest

from bespoke import estimate
from bespoke.errors import BespokeError


def test_every_figure_names_its_card_date_and_source():
    for f in estimate.FIGURES:
        assert f.card and f.date.startswith("20") and "bench/RESULTS.md" in f.source
    assert {(f.card, f.profile) for f in estimate.FIGURES} >= {("H200", "fast"), ("H200", "exact"),
                                                                ("H100", "fast"), ("H100", "exact")}


def test_h200_fast_is_steps_times_rate_plus_startup_and_compile():
    e = estimate.estimate(10150, "fast", "NVIDIA H200", 1, compile_cached=True)
    f = estimate.find("NVIDIA H200", "fast")
    assert e.seconds == pytest.approx(10150 * f.seconds_per_step + f.startup_s + f.compile_s)
    cold = estimate.estimate(10150, "fast", "NVIDIA H200", 1)
    assert cold.seconds - e.seconds == pytest.approx(f.compile_cold_s - f.compile_s)
    text = "\n".join(e.lines())
    assert "10150 steps x 0.460 s/step" in text and "2026-11-29" in text and "calls 11-12" in text


def test_exact_has_no_compile_and_two_gpus_cost_more_per_step():
    one = estimate.estimate(5075, "exact", "NVIDIA H100 80GB HBM3", 1)
    two = estimate.estimate(5075, "exact", "NVIDIA H100 80GB HBM3", 2)
    assert one.overhead_s == estimate.find("H100", "exact").startup_s
    assert two.seconds_per_step > one.seconds_per_step


def test_unknown_card_says_so_and_waits_for_steps():
    e = estimate.estimate(1000, "exact", "NVIDIA A40", 1, price_per_hour=1.0)
    assert e.seconds is None and e.cost is None
    (line,) = e.lines()
    assert "no measured s/step for NVIDIA A40" in line and f"after {estimate.STEPS_TO_MEASURE} steps" in line


def test_no_gpu_assumes_the_target_card_and_says_so():
    e = estimate.estimate(100, "fast", None, 1, gpus_assumed=True, assume_card="NVIDIA H200")
    assert e.figure is not None and "assumed" in e.lines()[0]


def test_cost_is_hours_times_price():
    e = estimate.estimate(3600, "exact", "H200", 1, price_per_hour=3.0)
    assert e.cost == pytest.approx(e.seconds / 3600 * 3.0)
    assert any(line.startswith("cost:") for line in e.lines())


@pytest.mark.parametrize("bad", ["abc", "-1", "nan", "inf", "-inf", " NaN ", "1e300", "10001"])
def test_bad_price_is_one_line(bad):
    with pytest.raises(BespokeError, match="price per hour"):
        estimate.parse_price(bad)
    assert estimate.parse_price("2.5") == 2.5 and estimate.parse_price(None) is None


def test_duration_format():
    assert estimate.fmt_duration(59) == "0 min 59 s"
    assert estimate.fmt_duration(3 * 3600 + 65) == "3 h 01 min"
