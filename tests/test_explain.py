"""Why a segment (common/explain.py): the head's top features and the reach curve."""
from __future__ import annotations

import numpy as np
import pytest

from common.explain import feature_names, reach_curve, top_features, why_png


def test_feature_names_use_the_configs_channel_names():
    names = feature_names(2, ["purchases/channel_1", "purchases/hour_03", "points/channel_9",
                              "demo/age"], {"purchases": ["beauty", "grocery"],
                                            "points": ["earn"]})
    assert names == ["embedding[0]", "embedding[1]", "purchases/grocery", "purchases/hour_03",
                     "points/channel_9", "demo/age"]  # channel 9 of points is unknown


def test_top_features_are_the_largest_standardised_weights():
    rng = np.random.default_rng(0)
    background = rng.normal(size=(500, 4)) * np.array([1.0, 10.0, 0.1, 1.0])
    names = ["embedding[0]", "a", "b", "c"]
    probe = {"kind": "probe", "weights": [0.0, 0.1, 5.0, -2.0]}
    # per standard deviation: a 0.1 x 10 = 1, b 5 x 0.1 = 0.5, c -2 x 1 = -2
    top = top_features(probe, background, names, embedding_dim=1, k=2)
    assert [t["feature"] for t in top] == ["c", "a"]
    assert top[0]["weight"] == pytest.approx(-2.0, rel=0.1)
    centroid = {"kind": "centroid", "centroid": [0.2, -1.5, 0.7]}
    assert [t["feature"] for t in top_features(centroid, background, names, 1)] == ["b", "c",
                                                                                    "a"]
    assert top_features({"kind": "prototype"}, background, names, 1) == []


def test_the_reach_curve_reads_the_histogram_and_the_held_out_scores():
    histogram = np.zeros(10, int)
    histogram[0], histogram[5], histogram[9] = 900, 90, 10  # 1,000 users
    curve = reach_curve(histogram, [0.95, 0.55, 0.05, 0.96], prevalence=0.01,
                        reaches=(0.01, 0.1, 0.5))
    first, second, third = curve
    assert (first["reach"], first["cutoff_score"], first["recall"]) == (0.01, 0.9, 0.5)
    assert first["lift"] == pytest.approx(50.0) and first["estimated_precision"] == 0.5
    assert (second["reach"], second["recall"]) == (0.1, 0.75)
    assert (third["reach"], third["cutoff_score"], third["recall"]) == (1.0, 0.0, 1.0)
    assert reach_curve(np.zeros(10), [], 0.01) == []
    assert reach_curve(histogram, [], 0.01)[0]["recall"] is None


def test_why_png_draws_with_and_without_held_out_seeds():
    curve = reach_curve([900, 0, 0, 0, 0, 90, 0, 0, 0, 10], [0.95], 0.01)
    for args in ((curve, [{"feature": "a", "weight": 1.0}], 0.01), ([], [], None)):
        assert why_png("cmp", *args)[:8] == b"\x89PNG\r\n\x1a\n"
