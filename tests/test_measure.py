"""metaprofile measure (jobs/measure.py): a segment's conversions against its control group
and the population, with 95 % intervals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from jobs.measure import cost, mean_value, measurement, rate, ratio, read_conversions


def test_rates_carry_the_wilson_interval():
    r = rate(5, 20)  # the textbook case: 0.25, Wilson 95 % [0.112, 0.469]
    assert r["rate"] == 0.25 and round(r["low"], 3) == 0.112 and round(r["high"], 3) == 0.469
    assert rate(0, 0)["rate"] is None
    zero = rate(0, 50)
    assert zero["rate"] == 0.0 and zero["low"] == 0.0 and 0.05 < zero["high"] < 0.09


def test_a_ratio_is_the_relative_risk_with_katz_interval():
    exposed, baseline = rate(30, 200), rate(20, 400)
    r = ratio(exposed, baseline)
    se = math.sqrt(1 / 30 - 1 / 200 + 1 / 20 - 1 / 400)
    assert r["ratio"] == pytest.approx(3.0)
    assert r["low"] == pytest.approx(3.0 * math.exp(-1.959964 * se), rel=1e-4)
    assert r["high"] == pytest.approx(3.0 * math.exp(1.959964 * se), rel=1e-4)
    assert r["method"] == "katz"
    assert ratio(exposed, rate(0, 400))["ratio"] is None  # no baseline converter


def test_a_ratio_of_a_tiny_group_gets_an_interval_no_narrower_than_its_rate_allows():
    population = rate(500, 10_000)  # 5 %
    one = ratio(rate(1, 1), population)  # one control member, who converted
    assert one["ratio"] == pytest.approx(20.0) and one["method"] == "wilson_bounds"
    wilson = rate(1, 1, math.sqrt(0.95))
    assert one["low"] == pytest.approx(wilson["low"] / rate(500, 10_000, math.sqrt(0.95))["high"])
    assert one["low"] < 10.0  # Katz would claim about [19.1, 20.9]
    none = ratio(rate(0, 3), population)
    assert none["ratio"] == 0.0 and none["low"] == 0.0 and none["high"] > 10


def test_cost_per_incremental_acquisition_follows_the_incrementality():
    treated = rate(100, 1000)
    c = cost(5000.0, treated, {"ratio": 2.0, "low": 1.5, "high": 3.0})
    assert c["per_acquisition"] == 50.0
    assert c["per_incremental_acquisition"] == pytest.approx(100.0)  # 50 of 100 incremental
    assert c["per_incremental_low"] == pytest.approx(75.0)  # incrementality 3
    assert c["per_incremental_high"] == pytest.approx(150.0)  # incrementality 1.5
    none = cost(5000.0, treated, {"ratio": 0.9, "low": 0.5, "high": 1.2})
    assert none["per_incremental_acquisition"] is None and none["per_incremental_high"] is None


def test_value_per_member_and_the_whole_measurement():
    v = mean_value(np.array([0.0, 0.0, 10.0, 30.0]))
    assert v["mean"] == 10.0 and v["low"] < 10.0 < v["high"]
    members = {"treated": ["a", "b", "c", "d"], "control": ["e", "f"],
               "population": list("abcdefghij")}
    converted = {"treated": np.array([1, 1, 0, 0], bool), "control": np.array([1, 0], bool),
                 "population": np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0], bool)}
    value = {g: converted[g] * 5.0 for g in converted}
    m = measurement(members, converted, value, spend=None)
    assert m["groups"]["population"]["rate"] == pytest.approx(0.3)
    assert m["segment_lift"]["ratio"] == pytest.approx(0.5 / 0.3)
    assert m["incrementality"]["ratio"] == pytest.approx(1.0)
    assert m["value_per_member"]["treated"]["mean"] == 2.5 and "cost" not in m


def test_conversions_are_counted_per_user_in_the_window_and_bad_rows_are_accounted(tmp_path):
    import datetime as dt
    path = tmp_path / "conversions.csv"
    path.write_text("user_id,time,value\n"
                    "u1,2026-07-02T10:00:00,10\n"
                    " u1 ,2026-07-05,5\n"          # the same user, trimmed: one converter
                    "u2,2026-06-30,99\n"          # before --since
                    "u3,2026-08-02,1\n"           # after --until
                    ",2026-07-03,1\n"             # no user
                    "u4,not a date,1\n"           # no time
                    "u5,2026-07-03,lots\n"        # a value that is no number
                    "u6,2026-07-03,\n")           # no value: counts, worth 0
    per_user, counts = read_conversions(str(path), None, dt.date(2026, 7, 1),
                                        dt.date(2026, 7, 31))
    assert per_user == {"u1": 15.0, "u6": 0.0}
    assert counts == {"rows": 8, "no_user": 1, "no_time": 1, "bad_value": 1,
                      "before_since": 1, "after_until": 1, "counted": 3}
    from jobs.measure import MeasureError
    (tmp_path / "wrong.csv").write_text("customer,when\n1,2026-07-01\n")
    with pytest.raises(MeasureError, match="no column user_id, time .*write user_id, time"):
        read_conversions(str(tmp_path / "wrong.csv"), None, dt.date(2026, 7, 1), None)
