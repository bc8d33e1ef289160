"""Generator invariants: determinism, planted structure, and exact bad-row counts."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from conftest import SYNTHETIC_CONFIG

from common import storage
from metaprofile.datasets.bad_rows import BAD_ROW_KINDS
from metaprofile.datasets.synthetic import GeneratorOptions, generate, utc_offsets
from schemas.config import load_config

OPTIONS = GeneratorOptions(users=400, seed=11, bad_row_fraction=0.003)


def make(tmp_path_factory, name: str, **changes):
    root = tmp_path_factory.mktemp(name)
    config = load_config(SYNTHETIC_CONFIG, overrides=[f"storage.root={root}"])
    options = GeneratorOptions(**{**OPTIONS.__dict__, **changes})
    return config, generate(config, options, progress=lambda _: None)


@pytest.fixture(scope="module")
def parquet_set(tmp_path_factory):
    return make(tmp_path_factory, "parquet")


def read(config, key: str):
    return pads.dataset(config.storage.uri(key), format="parquet",
                        partitioning="hive", exclude_invalid_files=True).to_table()


def test_same_seed_same_data_other_seed_other_data(tmp_path_factory, parquet_set):
    config, report = parquet_set
    again, report_again = make(tmp_path_factory, "again")
    other, _ = make(tmp_path_factory, "other", seed=12)
    for key in ("raw_purchases", "raw_points", "demographics", "source_labels", "target_labels",
                "campaign_seeds", "ground_truth"):
        assert read(config, key).equals(read(again, key)), key
    assert report["sources"] == report_again["sources"]
    assert not read(config, "raw_purchases").equals(read(other, "raw_purchases"))


def test_report_is_written_and_accounts_for_every_row(parquet_set):
    config, report = parquet_set
    assert storage.read_json(storage.join(config.storage.root, "_generation.json")) == \
        json.loads(json.dumps(report))
    assert report["days"] == {"first": "2025-07-01", "last": "2026-06-30", "count": 365}
    for source, c in report["sources"].items():
        expected = int(round(c["rows_generated"] * OPTIONS.bad_row_fraction))
        assert set(c["bad_rows"]) == set(BAD_ROW_KINDS[source]) - {"malformed_line"}
        assert all(n == expected for n in c["bad_rows"].values()), c
        assert c["rows_written"] == c["rows_generated"] + c["bad_rows"]["duplicate_row"]
        assert c["clean_rows"] == c["rows_generated"] - sum(c["bad_rows"].values()) \
            + c["bad_rows"]["duplicate_row"]
        assert read(config, f"raw_{source}").num_rows == c["rows_written"]
    # One partition per landing day, and the dataset marked complete.
    assert len(list(Path(config.storage.uri("raw_points")).glob("dt=*/part-00000.parquet"))) == 365
    assert storage.exists(storage.join(config.storage.uri("raw_points"), "_SUCCESS"))


def classify_rows(frame, value_col: str, config, source: str) -> dict[str, int]:
    """Recount each bad-row class from the data itself, independently of the generator.

    Duplicates are counted among rows with no other defect, as an encoder would after
    validation: two corrupted rows can coincide (say, one user's two identical point rows
    whose timestamps both became 1970-01-01) without being a planted duplicate.
    """
    parsed = pd.to_datetime(frame["event_time"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce",
                            utc=True)
    value = frame[value_col].fillna("")

    def non_numeric(v: str) -> bool:
        try:
            return not math.isfinite(float(v))
        except ValueError:
            return True

    masks = {
        "null_user_id": frame["user_id"].isna(),
        "unparseable_timestamp": parsed.isna(),
        "out_of_range_timestamp": (parsed.dt.year < 2020) | (parsed.dt.year >= 2030),
        "negative_value": value.str.startswith("-"),
        "non_numeric_value": value.map(lambda v: not v.startswith("-") and non_numeric(v)),
    }
    if source == "purchases":
        purchases = config.modality("purchases")
        masks["unknown_genre"] = frame["genre"].map(purchases.channels_for_genre).map(len) == 0
    else:
        masks["unknown_point_type"] = ~frame["point_type"].isin(
            ["standard_earned", "limited_earned", "used"])
    defective = np.logical_or.reduce([m.to_numpy(dtype=bool) for m in masks.values()])
    counts = {kind: int(mask.sum()) for kind, mask in masks.items()}
    counts["duplicate_row"] = int(frame[~defective].duplicated().sum())
    return counts


@pytest.mark.parametrize("source, value_col", [("purchases", "amount"), ("points", "points")])
def test_bad_rows_in_the_data_match_the_report(parquet_set, source, value_col):
    config, report = parquet_set
    frame = read(config, f"raw_{source}").to_pandas().drop(columns=["dt"])
    assert classify_rows(frame, value_col, config, source) == report["sources"][source]["bad_rows"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_formats_carry_malformed_lines(tmp_path_factory, fmt):
    config, report = make(tmp_path_factory, fmt, users=150, format=fmt)
    counts = report["sources"]["purchases"]
    assert counts["bad_rows"]["malformed_line"] == \
        int(round(counts["rows_generated"] * OPTIONS.bad_row_fraction)) > 0
    lines, malformed = 0, 0
    for path in sorted(Path(config.storage.uri("raw_purchases"))
                       .glob(f"dt=*/part-00000.{fmt}")):
        text = path.read_text().splitlines()
        body = text[1:] if fmt == "csv" else text
        lines += len(body)
        for line in body:
            if fmt == "csv":
                malformed += len(next(csv.reader(io.StringIO(line)))) != 6
            else:
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    malformed += 1
    assert lines == counts["rows_written"]
    assert malformed == counts["bad_rows"]["malformed_line"]


def test_planted_structure_is_present(parquet_set):
    config, _ = parquet_set
    truth = read(config, "ground_truth").to_pandas()
    purchases = read(config, "raw_purchases").to_pandas()
    clean = purchases[purchases["user_id"].notna() & purchases["genre"].str.match(
        r"^(fashion|beauty|household|food|electronics|sports|books|kids|travel|pets)/")]
    shares = (clean.assign(top=clean["genre"].str.split("/").str[0])
              .pivot_table(index="user_id", columns="top", values="status", aggfunc="count",
                           fill_value=0))
    shares = shares.div(shares.sum(axis=1), axis=0)
    types = truth.set_index("user_id")["type"].reindex(shares.index).to_numpy()
    x = shares.to_numpy()
    train = np.arange(len(x)) % 2 == 0
    centroids = {t: x[train & (types == t)].mean(axis=0) for t in np.unique(types[train])}
    labels = list(centroids)
    predicted = np.array([labels[int(np.argmin([np.sum((row - centroids[t]) ** 2)
                                                for t in labels]))] for row in x[~train]])
    accuracy = float(np.mean(predicted == types[~train]))
    assert accuracy > 0.45, f"type recovered from genre shares only {accuracy:.2f} of the time"


def test_local_hours_follow_the_type_profile_across_dst(parquet_set):
    config, _ = parquet_set
    world = storage.read_json(storage.join(config.storage.uri("ground_truth") + "_world",
                                           "world.json"))
    truth = read(config, "ground_truth").to_pandas().set_index("user_id")["type"]
    frame = read(config, "raw_purchases").to_pandas()
    parsed = pd.to_datetime(frame["event_time"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce",
                            utc=True)
    frame = frame[parsed.notna() & frame["user_id"].notna() & (frame["status"] == "purchase")]
    local = parsed[frame.index].dt.tz_convert(config.window.timezone)
    frame = frame.assign(hour=local.dt.hour.to_numpy(), type=frame["user_id"].map(truth))
    profiles = np.array(world["hour_profiles"])
    for t, group in frame.groupby("type"):
        observed = np.bincount(group["hour"], minlength=24) / len(group)
        own = np.corrcoef(observed, profiles[int(t)])[0, 1]
        assert own > 0.9, f"type {t}: local hours correlate {own:.2f} with the planted profile"


def test_labels_are_noisy_functions_of_the_latent_type(parquet_set):
    config, report = parquet_set
    truth = read(config, "ground_truth").to_pandas().set_index("user_id")
    source = read(config, "source_labels").to_pandas()
    for task, group in source.groupby("task"):
        p = truth.loc[group["user_id"], f"p_{task}"].to_numpy()
        y = group["label"].to_numpy()
        assert 0 < y.mean() < 1
        assert p[y == 1].mean() > p[y == 0].mean() + 0.1, task
        assert len(group) < OPTIONS.users  # partially labelled
    demographics = read(config, "demographics").to_pandas().set_index("user_id")
    both = demographics.join(truth["z0"]).dropna(subset=["age"])
    assert np.corrcoef(both["age"], both["z0"])[0, 1] > 0.5


def test_target_tasks_exclude_existing_customers(parquet_set):
    config, report = parquet_set
    target = read(config, "target_labels").to_pandas()
    seeds = read(config, "campaign_seeds").to_pandas()
    for task in report["labels"]["target"]:
        labelled = set(target.loc[target["task"] == task, "user_id"])
        seeded = set(seeds.loc[seeds["campaign_id"] == f"cmp_{task}", "user_id"])
        assert seeded and not labelled & seeded
        counts = report["labels"]["target"][task]
        assert counts["positives"] > 0 and counts["negatives"] > counts["positives"]
    registry = read(config, "campaign_registry").to_pandas()
    assert set(registry["campaign_id"]) == set(seeds["campaign_id"])


def test_utc_offsets_handle_dst_changes():
    spring = utc_offsets(dt.date(2026, 3, 29), "Europe/Berlin")
    assert spring[:3].tolist() == [3600, 3600, 3600] and spring[3] == 7200
    autumn = utc_offsets(dt.date(2026, 10, 25), "Europe/Berlin")
    assert autumn[2] == 7200 and autumn[3] == 3600  # 02:xx happens twice: first one wins
    assert set(utc_offsets(dt.date(2026, 7, 1), "Asia/Tokyo")) == {9 * 3600}


def test_options_are_validated(synthetic_config):
    with pytest.raises(ValueError, match="format 'xml'"):
        generate(synthetic_config, GeneratorOptions(format="xml"))
    with pytest.raises(ValueError, match="users must be at least 1"):
        generate(synthetic_config, GeneratorOptions(users=0))


def test_conversions_follow_the_ground_truth_and_ignore_who_was_reached():
    import datetime as dt

    import pyarrow as pa

    from metaprofile.datasets.synthetic import draw_conversions
    truth = pa.table({"user_id": [f"u{i}" for i in range(4000)],
                      "p_brand": [0.0] * 2000 + [0.5] * 2000})
    drawn = draw_conversions(truth, "brand", dt.date(2026, 7, 1), 30)
    users = drawn.column("user_id").to_pylist()
    assert all(int(u[1:]) >= 2000 for u in users) and 850 < len(users) < 1150
    days = drawn.column("time").to_pylist()
    assert min(days) >= dt.date(2026, 7, 1) and max(days) <= dt.date(2026, 7, 30)
    assert drawn.equals(draw_conversions(truth, "brand", dt.date(2026, 7, 1), 30))
    with pytest.raises(ValueError, match="no p_other"):
        draw_conversions(truth, "other", dt.date(2026, 7, 1), 30)
