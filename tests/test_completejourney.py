"""The Complete Journey adapter on a 60-household slice of the real data.

The slice is converted once per module; checks read the written datasets back from disk and
compare them with the package's own Parquet files, so they test what a later stage would see.
Hand-checked rows were looked up in the raw files (household 1 and 22 are in the slice).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaprofile.datasets import completejourney as cj
from schemas.config import TaskConfig, load_config
from schemas.contracts import (CAMPAIGN_REGISTRY, CAMPAIGN_SEEDS, LABELS, RAW_POINTS,
                               RAW_PURCHASES, demographics_schema)

CONFIG = Path(__file__).resolve().parents[1] / "conf" / "completejourney.yaml"
HOUSEHOLDS = 60
NAIVE_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cj")
    config = load_config(CONFIG, overrides=[f"storage.root={root}"])
    messages: list[str] = []
    report = cj.convert(config, households=HOUSEHOLDS, progress=messages.append)
    return config, report, messages


def read_dataset(uri: str) -> pd.DataFrame:
    files = sorted(Path(uri).rglob("*.parquet"))
    assert files, f"no Parquet files under {uri}"
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def source_slice(name: str) -> pd.DataFrame:
    """The package's table restricted to the slice, read independently of the adapter."""
    table = pd.read_parquet(cj.data_directory() / f"{name}.parquet")
    ids = np.sort(pd.read_parquet(cj.data_directory() / "transactions.parquet",
                                  columns=["household_id"])["household_id"].unique())
    return table[table["household_id"].isin(ids[:HOUSEHOLDS])]


def test_config_validates_and_tasks_are_disjoint(converted):
    config, _, _ = converted
    assert config.name == "completejourney"
    assert (config.window.days, config.window.end) == (365, dt.date(2017, 9, 30))
    assert config.window.timezone == "America/New_York"
    assert config.raw.timestamp_timezone == "UTC"
    assert not config.pseudonymisation.enabled
    source = {t.name for t in config.source_tasks}
    target = {t.name for t in config.target_tasks}
    assert len(source) == 9 and len(target) >= 5
    assert not source & target
    assert all(t.label_period_start > config.window.end for t in config.target_tasks)
    points = config.modality("points")
    assert {c.point_type for c in points.channels} == {
        "loyalty_discount", "coupon_discount", "coupon_match_discount", "coupon_redemption"}


def test_row_accounting_is_exact_and_matches_inputs_and_outputs(converted):
    config, report, _ = converted
    flows = report["flows"]
    for name, flow in flows.items():
        assert flow["rows_in"] == flow["rows_mapped"] + sum(flow["rows_rejected"].values()), name
        assert all(n > 0 for n in flow["rows_rejected"].values()), name

    transactions = source_slice("transactions")
    purchases = flows["transactions.parquet->raw_purchases"]
    assert purchases["rows_in"] == len(transactions)
    assert purchases["rows_rejected"]["unknown_product"] > 0
    written = read_dataset(config.storage.uri("raw_purchases"))
    assert purchases["rows_out"] == len(written) == report["outputs"]["raw_purchases"]["rows"]
    assert 0 < purchases["rows_out"] < purchases["rows_mapped"]

    to_points = [f for f in flows.values() if f["output"] == "raw_points"]
    for column in cj.DISCOUNT_POINT_TYPES:
        flow = flows[f"transactions.parquet:{column}->raw_points"]
        assert flow["rows_in"] == len(transactions)
        assert flow["rows_mapped"] == int((transactions[column].round(2) != 0).sum())
    assert flows["coupon_redemptions.parquet->raw_points"]["rows_in"] == len(
        source_slice("coupon_redemptions"))
    points = read_dataset(config.storage.uri("raw_points"))
    assert sum(f["rows_out"] for f in to_points) == len(points) == report["outputs"][
        "raw_points"]["rows"]
    for flow in (purchases, *to_points):
        assert flow["rows_merged"] == flow["rows_mapped"] - flow["rows_out"] >= 0
    assert "rows_out" not in flows["demographics.parquet->demographics"]
    assert flows["demographics.parquet->demographics"]["rows_mapped"] == len(
        read_dataset(config.storage.uri("demographics"))) == len(source_slice("demographics"))


def test_outputs_match_the_contract_schemas(converted):
    config, _, _ = converted
    expected = {"raw_purchases": RAW_PURCHASES, "raw_points": RAW_POINTS,
                "demographics": demographics_schema(config), "source_labels": LABELS,
                "target_labels": LABELS, "campaign_seeds": CAMPAIGN_SEEDS,
                "campaign_registry": CAMPAIGN_REGISTRY}
    for key, schema in expected.items():
        root = Path(config.storage.uri(key))
        assert (root / "_SUCCESS").exists(), key
        for path in root.rglob("*.parquet"):
            actual = pq.read_schema(path)
            assert actual.equals(schema, check_metadata=True), f"{path}: {actual}"


def test_raw_logs_are_partitioned_by_utc_date_with_naive_timestamps(converted):
    config, _, _ = converted
    for key in ("raw_purchases", "raw_points"):
        root = Path(config.storage.uri(key))
        parts = sorted(root.rglob("*.parquet"))
        assert parts
        for path in parts:
            assert re.fullmatch(r"dt=\d{4}-\d{2}-\d{2}", path.parent.name) and \
                path.name == "part-00000.parquet", path
            times = pq.read_table(path, columns=["event_time"])["event_time"].to_pylist()
            assert all(NAIVE_ISO.match(t) for t in times), path
            assert {t[:10] for t in times} == {path.parent.name[3:]}, path


def test_hand_checked_basket_merges_line_items_of_a_genre_and_discounts(converted):
    # transactions.parquet: household 1, store 436, 2017-01-07 18:55:24 UTC (13:55 in New
    # York; event_time stays UTC), 35 lines. Three are GROCERY / BAG SNACKS: product 998678
    # (1 x 2.00), 1093165 (1 x 1.75) and 9527290 (1 x 2.00): one row of 5.75 for 3 items.
    config, _, _ = converted
    day = Path(config.storage.uri("raw_purchases"), "dt=2017-01-07", "part-00000.parquet")
    purchases = pq.read_table(day).to_pandas()
    basket = purchases[(purchases["user_id"] == "1")
                       & (purchases["event_time"] == "2017-01-07T18:55:24")]
    snacks = basket[basket["genre"] == "grocery/bag_snacks"]
    assert snacks[["amount", "quantity", "status"]].values.tolist() == [["5.75", "3", "purchase"]]
    # Product 12188046 is the basket's only DRUG GM / "SOAP - LIQUID & BAR" line, sales 1.15.
    soap = basket[basket["genre"] == "drug_gm/soap_-_liquid_&_bar"]
    assert soap[["amount", "quantity"]].values.tolist() == [["1.15", "1"]]
    # 34 lines map (product 5978656 is not in products.parquet) into 24 genres.
    assert len(basket) == 24

    points = pq.read_table(Path(config.storage.uri("raw_points"), "dt=2017-01-07",
                                "part-00000.parquet")).to_pandas()
    basket = points[(points["user_id"] == "1") & (points["event_time"] == "2017-01-07T18:55:24")]
    assert set(basket["service"]) == {"436"}
    # One row per discount type with the basket's total: retail_disc of 16 lines (14.18),
    # coupon_disc of 7 lines (5.30) and coupon_match_disc of 4 lines (1.30). The coupon
    # total includes the 1.50 of product 5978656: rejected as a purchase, its coupon
    # discount is still a card event.
    assert sorted(zip(basket["point_type"], basket["points"])) == [
        ("coupon_discount", "5.30"), ("coupon_match_discount", "1.30"),
        ("loyalty_discount", "14.18")]


def test_coupon_redemptions_land_at_local_noon_in_utc(converted):
    # coupon_redemptions.parquet: household 22 redeemed campaign 27 on 2017-02-18 (EST,
    # UTC-5) and campaign 4 on 2017-04-02 (EDT, UTC-4).
    config, _, _ = converted
    points = read_dataset(config.storage.uri("raw_points"))
    redeemed = points[(points["user_id"] == "22") & (points["point_type"] == "coupon_redemption")]
    assert ("2017-02-18T17:00:00", "campaign_27", "1.00") in set(
        zip(redeemed["event_time"], redeemed["service"], redeemed["points"]))
    # The three campaign 4 coupons of that day are one row worth 3 redemptions.
    same_day = redeemed[redeemed["event_time"] == "2017-04-02T16:00:00"]
    assert same_day[["service", "points"]].values.tolist() == [["campaign_4", "3.00"]]


def test_households_without_demographics_have_no_demographic_labels(converted):
    config, report, _ = converted
    labels = read_dataset(config.storage.uri("source_labels"))
    demographics = source_slice("demographics")
    with_demographics = set(demographics["household_id"].astype(str))
    universe = set(source_slice("transactions")["household_id"].astype(str))
    assert len(with_demographics) < len(universe)
    for task, rule in cj.SOURCE_TASK_RULES.items():
        users = set(labels.loc[labels["task"] == task, "user_id"])
        counts = report["tasks"]["source"][task]
        assert counts["positives"] + counts["negatives"] == len(users)
        if isinstance(rule, cj.DemographicRule):
            known = demographics.loc[demographics[rule.column].notna(), "household_id"]
            assert users == set(known.astype(str)), task
            assert counts["unlabelled"] >= len(universe) - len(with_demographics)
        else:
            assert users == universe and counts["unlabelled"] == 0, task
    married = labels[labels["task"] == "married"].set_index("user_id")["label"]
    expected = demographics.dropna(subset=["marital_status"]).set_index("household_id")
    assert all(married[str(h)] == int(v == "Married")
               for h, v in expected["marital_status"].items())


def test_target_positives_are_new_buyers_and_negatives_never_bought(converted):
    config, report, _ = converted
    purchases = read_dataset(config.storage.uri("raw_purchases"))
    purchases = purchases[purchases["status"] == "purchase"]
    local_day = (pd.to_datetime(purchases["event_time"]).dt.tz_localize("UTC")
                 .dt.tz_convert(config.window.timezone).dt.date)
    labels = read_dataset(config.storage.uri("target_labels"))
    for task in config.target_tasks:
        prefix = cj.TARGET_TASK_RULES[task.name].genre
        genre = purchases["genre"]
        bought = (genre == prefix) | genre.str.startswith(prefix + "/")
        before = set(purchases.loc[bought & (local_day <= config.window.end), "user_id"])
        during = set(purchases.loc[bought & (local_day >= task.label_period_start)
                                   & (local_day <= task.label_period_end), "user_id"])
        ever = set(purchases.loc[bought, "user_id"])
        rows = labels[labels["task"] == task.name]
        positives = set(rows.loc[rows["label"] == 1, "user_id"])
        negatives = set(rows.loc[rows["label"] == 0, "user_id"])
        assert positives, task.name
        assert positives == during - before, task.name
        assert not negatives & ever, task.name
        assert report["tasks"]["target"][task.name]["positives"] == len(positives)


def test_campaign_seeds_come_from_redemptions_up_to_window_end(converted):
    config, _, _ = converted
    seeds = read_dataset(config.storage.uri("campaign_seeds"))
    redemptions = source_slice("coupon_redemptions")
    in_window = redemptions[redemptions["redemption_date"] <= pd.Timestamp(config.window.end)]
    expected = set(zip(in_window["campaign_id"].astype(str), in_window["household_id"].astype(str)))
    positive = seeds[seeds["label"] == 1]
    assert set(zip(positive["campaign_id"], positive["user_id"])) == expected
    assert not seeds.duplicated(["campaign_id", "user_id"]).any()
    registry = read_dataset(config.storage.uri("campaign_registry"))
    active = set(registry.loc[registry["status"] == "active", "campaign_id"])
    assert active == set(positive["campaign_id"])


def to_cents(amounts: pd.Series) -> pd.Series:
    """Written decimal strings ('12.03') as integer cents, without going through floats."""
    parts = amounts.str.split(".", expand=True)
    return parts[0].astype(np.int64) * 100 + parts[1].astype(np.int64)


def expected_purchase_lines(config) -> pd.DataFrame:
    """The slice's transaction lines that map to purchases, computed straight from the
    package's files: the product has a department a channel covers, and the line is not
    quantity 0 with 0.00 money. Quantity is what the contract reads (0 -> empty -> 1)."""
    tx = source_slice("transactions")
    products = pd.read_parquet(cj.data_directory() / "products.parquet")
    tx = tx.merge(products[["product_id", "department", "product_category"]], how="inner",
                  on="product_id")
    name = (lambda s: s.fillna("").str.strip().str.lower()
            .str.replace(r"[\s/]+", "_", regex=True).str.strip("_"))
    department, category = name(tx["department"]), name(tx["product_category"])
    genre = department.where(category == "", department + "/" + category)
    modality = config.modality("purchases")
    cents = (tx["sales_value"].abs() * 100).round().astype(np.int64)
    keep = genre.map(modality.is_known_genre) & ~((tx["quantity"] == 0) & (cents == 0))
    quantity = tx["quantity"].abs()
    return pd.DataFrame({
        "user_id": tx["household_id"].astype(str), "time": tx["transaction_timestamp"],
        "genre": genre, "cents": cents, "quantity": quantity.where(quantity != 0, 1),
        "cancel": (tx["sales_value"] < 0) | (tx["quantity"] < 0)})[keep]


def test_raw_logs_have_no_exact_duplicates_and_merging_keeps_totals(converted):
    config, report, _ = converted
    flows = report["flows"]
    purchases = read_dataset(config.storage.uri("raw_purchases"))
    points = read_dataset(config.storage.uri("raw_points"))
    assert not purchases.duplicated().any()
    assert not points.duplicated().any()
    # Not even equal keys: the measures of every such group are in one row.
    assert not purchases.duplicated(["user_id", "event_time", "genre", "status"]).any()
    assert not points.duplicated(["user_id", "event_time", "point_type", "service"]).any()

    lines = expected_purchase_lines(config)
    flow = flows["transactions.parquet->raw_purchases"]
    assert flow["rows_mapped"] == len(lines)
    assert flow["rows_out"] == len(purchases) == len(
        lines.drop_duplicates(["user_id", "time", "genre", "cancel"]))
    assert flow["rows_merged"] == flow["rows_mapped"] - flow["rows_out"] > 0
    written = purchases.assign(cents=to_cents(purchases["amount"]),
                               quantity=purchases["quantity"].replace("", "1").astype(np.int64))
    expected = lines.groupby("user_id")[["cents", "quantity"]].sum().sort_index()
    actual = written.groupby("user_id")[["cents", "quantity"]].sum().sort_index()
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    assert len(actual) == HOUSEHOLDS

    # Points: per household and point type, the cents of every discount and one 1.00 per
    # redemption, however many rows they were merged from.
    tx = source_slice("transactions")
    discounts = [pd.DataFrame({"user_id": tx["household_id"].astype(str), "point_type": kind,
                               "cents": (tx[column].abs() * 100).round().astype(np.int64)})
                 for column, kind in cj.DISCOUNT_POINT_TYPES.items()]
    redemptions = source_slice("coupon_redemptions")
    discounts.append(pd.DataFrame({"user_id": redemptions["household_id"].astype(str),
                                   "point_type": "coupon_redemption", "cents": 100}))
    expected = (pd.concat(discounts).query("cents != 0")
                .groupby(["user_id", "point_type"])["cents"].sum().sort_index())
    actual = (points.assign(cents=to_cents(points["points"]))
              .groupby(["user_id", "point_type"])["cents"].sum().sort_index())
    pd.testing.assert_series_equal(actual, expected, check_dtype=False)
    for name, flow in flows.items():
        if flow["output"] == "raw_points":
            assert flow["rows_merged"] == flow["rows_mapped"] - flow["rows_out"] >= 0, name
    assert flows["transactions.parquet:retail_disc->raw_points"]["rows_merged"] > 0


def test_merging_sums_measures_and_reads_an_empty_quantity_as_one():
    # Rows 0-2 are one household, second, genre and status: 1 x 0.50, 2 x 0.25 and a
    # quantity-0 line of 0.10 (read as 1); row 3 is a lone quantity-0 line, kept empty;
    # row 4 differs by status and stays apart.
    config = load_config(CONFIG)
    tx = pd.DataFrame({
        "household_id": [7] * 5,
        "product_id": [1, 1, 1, 2, 1],
        "quantity": [1, 2, 0, 0, -1],
        "sales_value": [0.5, 0.25, 0.1, 0.3, -0.5],
        "transaction_timestamp": pd.to_datetime(["2017-05-01 10:00:00"] * 5),
    })
    genres = pd.Series(["grocery/soup", "grocery/bread"], index=[1, 2])
    purchases, flow = cj.map_purchases(tx, genres, config.modality("purchases"))
    merged = cj.merge_purchases(purchases)
    flow = flow.merged_into(len(merged))
    assert (flow.rows_mapped, flow.rows_out, flow.rows_merged) == (5, 3, 2)
    assert flow.as_dict()["rows_merged"] == 2
    table = cj.purchases_table(cj.chronological(merged, "household_id", "genre",
                                                "status")).to_pylist()
    assert [(r["genre"], r["amount"], r["quantity"], r["status"]) for r in table] == [
        ("grocery/bread", "0.30", "", "purchase"), ("grocery/soup", "0.50", "1", "cancel"),
        ("grocery/soup", "0.85", "4", "purchase")]
    points = pd.DataFrame({"household_id": [7, 7, 7], "point_type": "loyalty_discount",
                           "utc": pd.to_datetime(["2017-05-01 10:00:00"] * 3),
                           "cents": [49, 49, 30], "service": ["436", "436", "437"]})
    rows = cj.points_table(cj.merge_points(points)).to_pylist()
    assert sorted((r["service"], r["points"]) for r in rows) == [("436", "0.98"), ("437", "0.30")]


def test_purchase_mapping_rules_on_edge_rows():
    # Rows: 0 a return by value, 1 a return by quantity, 2 float noise for zero with no
    # item, 3 money but quantity 0, 4 a department no channel covers, 5 a product missing
    # from the catalogue.
    config = load_config(CONFIG)
    tx = pd.DataFrame({
        "household_id": [7] * 6,
        "product_id": [1, 1, 1, 1, 2, 3],
        "quantity": [-2, -1, 0, 0, 1, 1],
        "sales_value": [-3.5, 1.25, 1.7763568394002505e-15, 0.01, 2.0, 1.0],
        "transaction_timestamp": pd.to_datetime(["2017-05-01 10:00:00"] * 6),
    })
    genres = pd.Series(["grocery/soup", "restaurant"], index=[1, 2])
    purchases, flow = cj.map_purchases(tx, genres, config.modality("purchases"))
    assert (flow.rows_in, flow.rows_mapped) == (6, 3)
    assert flow.rows_rejected == {"empty_line_item": 1, "unknown_genre": 1, "unknown_product": 1}
    table = cj.purchases_table(purchases).to_pylist()
    assert [(r["genre"], r["amount"], r["quantity"], r["status"]) for r in table] == [
        ("grocery/soup", "3.50", "2", "cancel"), ("grocery/soup", "1.25", "1", "cancel"),
        ("grocery/soup", "0.01", "", "purchase")]


def test_names_and_demographics_are_normalised():
    names = pd.Series(["CHRISTMAS  SEASONAL", "CNTRL/STORE SUP", "FROZEN PIE/DESSERTS", None])
    assert cj.normalise_name(names).tolist() == [
        "christmas_seasonal", "cntrl_store_sup", "frozen_pie_desserts", ""]
    config = load_config(CONFIG)
    frame = pd.DataFrame({"household_id": [2, 1], "household_size": ["5+", "1"],
                          "kids_count": ["3+", None], "age": ["65+", "19-24"],
                          "income": [None, "250K+"], "home_ownership": ["Renter", None],
                          "marital_status": ["Married", None],
                          "household_comp": ["2 Adults Kids", "1 Adult No Kids"]})
    table, _ = cj.map_demographics(frame, config.demographics, demographics_schema(config), "x")
    rows = {r["user_id"]: r for r in table.to_pylist()}
    assert (rows["2"]["household_size"], rows["2"]["kids_count"]) == (5.0, 3.0)
    assert rows["1"]["kids_count"] is None and rows["1"]["income"] == "250K+"
    with pytest.raises(ValueError, match="'age'.*'70\\+'"):
        cj.map_demographics(frame.assign(age=["70+", "65+"]), config.demographics,
                            demographics_schema(config), "demographics.parquet")


def test_missing_column_and_unknown_task_fail_clearly(tmp_path):
    pq.write_table(pa.table({"household_id": [1], "store_id": [2]}),
                   tmp_path / "transactions.parquet")
    with pytest.raises(ValueError, match=r"transactions\.parquet: missing column\(s\) product_id"):
        cj.read_source(tmp_path, "transactions", cj.TRANSACTION_COLUMNS)
    config = load_config(CONFIG, overrides=[f"storage.root={tmp_path}"])
    unknown = dataclasses.replace(config, source_tasks=(*config.source_tasks,
                                                        TaskConfig("owns_a_boat")))
    with pytest.raises(ValueError, match="tasks.source 'owns_a_boat'"):
        cj.convert(unknown, households=1)
    assert not (tmp_path / "raw_purchases").exists()


def test_progress_is_reported(converted):
    _, report, messages = converted
    assert messages[0].startswith("reading ") and f"{HOUSEHOLDS} households" in messages[0]
    assert report["households"]["in_transactions"] == HOUSEHOLDS
