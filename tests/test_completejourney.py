"""The Complete Journey, landed by conf/completejourney.yaml alone, on a 25-household slice.

``metaprofile completejourney`` copies the package's tables and then runs ``metaprofile
import`` and ``metaprofile tasks``; no Python maps a column. The slice is landed once per
module; checks read the datasets back from disk and compare them with the package's own
Parquet files, and with what the bespoke converter that this mapping replaced wrote.
Hand-checked rows were looked up in the raw files (households 1 and 22 are in the slice).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.tasks import family_excluded
from metaprofile.datasets import completejourney as cj
from schemas.config import load_config, source_cut
from schemas.contracts import (
    CAMPAIGN_REGISTRY,
    CAMPAIGN_SEEDS,
    LABELS,
    RAW_POINTS,
    RAW_PURCHASES,
    demographics_schema,
)

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[1] / "conf" / "completejourney.yaml"
HOUSEHOLDS = 25
UTC_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

# What the bespoke converter (metaprofile/datasets/completejourney.py up to commit 8fb4017,
# 794 lines of pandas) wrote for this slice: rows and the sha256 prefix of the sorted rows
# as JSON (`digest` below). On the full data set the mapping gives its digests too: source
# labels 8,507 rows 84b0c47b93014a12, target labels 14,027 3a105cb73d9f6ad2, campaign seeds
# 3,936 1ce5662f17e91a37, registry 27 ba07cf75b868b681, demographics 801 2dfdf45ba498f048
# (measured 2026-12-01; docs/completejourney.md).
CONVERTER = {"source_labels": (108, "56c3ad30a3de46f5"),
             "target_labels": (147, "a31f7337403122a3"),
             "campaign_seeds": (51, "01b9fb22ab9bcb85"),
             "campaign_registry": (27, "92c19bc7b78e82ba"),
             "demographics": (11, "95c577aba57a1bdd")}
# The events that the converter's raw logs of this slice encode to, on a 31-day window.
CONVERTER_EVENTS = (666, "4a6e4fd41b094204")
# The converter's source tasks: eight copies of demographic inputs and the campaign task.
# The shipped config replaced them with a genre family (docs/evaluation.md); the mapping
# still lands the converter's labels from these rules.
SURVEY_TASKS = json.dumps([
    {"name": "age_55_plus", "rule": {"kind": "attribute", "condition": "age IN ('55-64', '65+')"}},
    {"name": "age_under_35",
     "rule": {"kind": "attribute", "condition": "age IN ('19-24', '25-34')"}},
    {"name": "income_75k_plus", "rule": {"kind": "attribute", "condition": (
        "income IN ('75-99K', '100-124K', '125-149K', '150-174K', '175-199K', '200-249K', "
        "'250K+')")}},
    {"name": "homeowner", "rule": {"kind": "attribute", "condition": (
        "home_ownership IN ('Homeowner', 'Probable Homeowner')")}},
    {"name": "married", "rule": {"kind": "attribute", "condition": "marital_status = 'Married'"}},
    {"name": "has_kids", "rule": {"kind": "attribute", "condition": "kids_count >= 1"}},
    {"name": "household_size_3_plus",
     "rule": {"kind": "attribute", "condition": "household_size >= 3"}},
    {"name": "single_adult", "rule": {"kind": "attribute", "condition": (
        "household_comp IN ('1 Adult No Kids', '1 Adult Kids')")}}])


def digest(rows: list) -> tuple[int, str]:
    lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def landed(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("cj")
    config = load_config(CONFIG, overrides=[f"storage.root={root}"])
    messages: list[str] = []
    report = cj.land(config, households=HOUSEHOLDS, spark=spark, progress=messages.append)
    return config, report, messages


@pytest.fixture(scope="module")
def survey(spark, landed, tmp_path_factory):
    """The converter's source tasks labelled by their rules over the landed slice, into a
    folder of their own: (config, tasks report)."""
    from jobs import tasks
    config, _, _ = landed
    campaign = next(t for t in config.source_tasks if t.rule.kind == "query")
    query = json.dumps({"name": campaign.name, "rule": {"kind": "query",
                                                       "query": campaign.rule.query}})
    survey = load_config(CONFIG, overrides=[
        f"storage.root={config.storage.root}", "tasks.behaviour.horizon_days=0",
        f"storage.source_labels={tmp_path_factory.mktemp('survey') / 'source_labels'}",
        f"tasks.source={SURVEY_TASKS[:-1]}, {query}]"])
    return survey, tasks.run(spark, survey, only=[t.name for t in survey.source_tasks])


def read_dataset(uri: str) -> pd.DataFrame:
    files = sorted(Path(uri).rglob("*.parquet"))
    assert files, f"no Parquet files under {uri}"
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def source_slice(name: str) -> pd.DataFrame:
    """The package's table restricted to the slice, read independently of the command."""
    table = pd.read_parquet(cj.data_directory() / f"{name}.parquet")
    ids = sorted(pd.read_parquet(cj.data_directory() / "transactions.parquet",
                                 columns=["household_id"])["household_id"].unique())
    return table[table["household_id"].isin(ids[:HOUSEHOLDS])]


def test_config_validates_and_every_task_has_a_rule(landed):
    config, _, _ = landed
    assert config.name == "completejourney"
    assert (config.window.days, config.window.end) == (365, dt.date(2017, 9, 30))
    assert config.window.timezone == "America/New_York"
    source = {t.name for t in config.source_tasks}
    target = {t.name for t in config.target_tasks}
    assert len(source) == 490 and len(target) == 8 and not source & target
    assert all(t.rule is not None for t in (*config.source_tasks, *config.target_tasks))
    assert {t.rule.kind for t in config.source_tasks} == {"new_buyer", "query"}
    cuts = [source_cut(t, config.window.end) for t in config.source_tasks]
    assert sorted(set(cuts), key=str) == [0, 90, None]  # the family at two cuts, the query
    targets = [t.rule.genre for t in config.target_tasks]
    assert not any(family_excluded(t.rule.genre, targets) for t in config.source_tasks
                   if t.rule.kind == "new_buyer")
    assert {dict(config.imports.tables)[n].uri for n in ("transactions", "campaigns")} == {
        f"{config.storage.root}/source/transactions.parquet",
        f"{config.storage.root}/source/campaigns.parquet"}


def test_the_mapping_lands_exactly_what_the_bespoke_converter_wrote(spark, landed, survey,
                                                                   tmp_path):
    from jobs import encode
    from jobs.encoding.validation import partition_dates
    config, _, _ = landed
    # Reading nanosecond Parquet needs a session setting; the jobs leave it as they found it.
    assert spark.conf.get("spark.sql.legacy.parquet.nanosAsLong", "false") == "false"
    for key, expected in CONVERTER.items():
        source = survey[0] if key == "source_labels" else config  # the converter's tasks
        assert digest(pq.read_table(source.storage.uri(key)).to_pylist()) == expected, key
    # The raw logs differ in form (the import writes 'Z' times and trims decimals) but must
    # encode to the same events.
    short = load_config(CONFIG, overrides=[f"storage.root={config.storage.root}",
                                           "window.days=31", "tasks.behaviour.horizon_days=0",
                                           "tasks.behaviour.cut_days=[0]",
                                           f"tasks.source={SURVEY_TASKS}",
                                           *(f"storage.{k}={tmp_path / k}" for k in
                                             ("events", "snapshots", "rejects", "manifests"))])
    report = encode.run(spark, short, short.window.end, full=True, snapshot=False)
    for source, counts in report["sources"].items():  # every landed row of the month counted
        days = partition_dates(short, short.window.end, full=True)
        assert counts["rows_read"] == spark.read.parquet(short.storage.uri(f"raw_{source}")) \
            .where(f"dt between '{days[0]}' and '{days[-1]}'").count() > 0
        assert counts["rows_read"] == counts["rows_encoded"] + sum(
            counts["rows_rejected"].values())
    events = spark.read.parquet(short.storage.uri("events")).select(
        "user_id", "modality", "date", "hour", "channel", "value").collect()
    assert digest([list(r) for r in events]) == CONVERTER_EVENTS


def test_row_accounting_is_exact_and_matches_the_inputs(landed):
    config, report, _ = landed
    imported = report["import"]
    transactions = source_slice("transactions")
    assert report["tables"]["transactions"] == len(transactions)
    assert report["tables"]["products"] == pq.read_metadata(
        cj.data_directory() / "products.parquet").num_rows  # not cut: it has no household
    for log in ("purchases", "points"):
        flow = imported[log]
        assert flow["rows_in"] == flow["rows_out"] + flow["rows_merged"] + sum(
            flow["rows_dropped"].values()), log
        assert flow["rows_out"] == len(read_dataset(config.storage.uri(f"raw_{log}")))
        assert flow["rows_merged"] > 0
    assert imported["purchases"]["rows_in"] == len(transactions)
    assert [p["rows_in"] for p in imported["points"]["parts"]] == [len(transactions)] * 3 + [
        len(source_slice("coupon_redemptions"))]
    for part, column in zip(imported["points"]["parts"],
                            ("retail_disc", "coupon_disc", "coupon_match_disc")):
        assert part["rows_in"] - part["rows_dropped"]["zero_discount"] == int(
            (transactions[column].round(2) != 0).sum())
    dropped = pq.read_table(imported["purchases"]["dropped_rows_at"]).to_pandas()
    assert dropped["reason"].value_counts().to_dict() == imported["purchases"]["rows_dropped"]
    assert json.loads(dropped["record"].iloc[0])["quantity"] == 0
    assert imported["demographics"]["rows_out"] == len(source_slice("demographics"))
    assert imported["campaign_seeds"]["rows_in"] == imported["campaign_seeds"]["rows_out"] == (
        imported["campaign_seeds"]["seeds"] + imported["campaign_seeds"]["negatives"])


def test_outputs_have_the_contract_columns_and_types(landed):
    config, _, _ = landed
    expected = {"raw_purchases": RAW_PURCHASES, "raw_points": RAW_POINTS,
                "demographics": demographics_schema(config), "source_labels": LABELS,
                "target_labels": LABELS, "campaign_seeds": CAMPAIGN_SEEDS,
                "campaign_registry": CAMPAIGN_REGISTRY}
    for key, schema in expected.items():
        root = Path(config.storage.uri(key))
        assert (root / "_SUCCESS").exists(), key
        for path in root.rglob("*.parquet"):
            actual = pq.read_schema(path)
            assert [(f.name, f.type) for f in actual] == [(f.name, f.type) for f in schema], path


def test_raw_logs_are_partitioned_by_utc_date_with_utc_timestamps(landed):
    config, _, _ = landed
    for key in ("raw_purchases", "raw_points"):
        parts = sorted(Path(config.storage.uri(key)).rglob("*.parquet"))
        assert parts
        for path in parts:
            assert re.fullmatch(r"dt=\d{4}-\d{2}-\d{2}", path.parent.name), path
            times = pq.read_table(path, columns=["event_time"])["event_time"].to_pylist()
            assert all(UTC_ISO.match(t) for t in times), path
            assert {t[:10] for t in times} == {path.parent.name[3:]}, path


def test_hand_checked_basket_merges_line_items_of_a_genre_and_discounts(landed):
    # transactions.parquet: household 1, store 436, 2017-01-07 18:55:24 UTC (13:55 in New
    # York; event_time stays UTC), 35 lines. Three are GROCERY / BAG SNACKS: product 998678
    # (1 x 2.00), 1093165 (1 x 1.75) and 9527290 (1 x 2.00): one row of 5.75 for 3 items.
    config, _, _ = landed
    purchases = read_dataset(f"{config.storage.uri('raw_purchases')}/dt=2017-01-07")
    basket = purchases[(purchases["user_id"] == "1")
                       & (purchases["event_time"] == "2017-01-07T18:55:24Z")]
    snacks = basket[basket["genre"] == "grocery/bag_snacks"]
    assert snacks[["amount", "quantity", "status"]].values.tolist() == [["5.75", "3", "purchase"]]
    # Product 12188046 is the basket's only DRUG GM / "SOAP - LIQUID & BAR" line, sales 1.15:
    # the genre keeps '-' and '&' and turns spaces into '_'.
    soap = basket[basket["genre"] == "drug_gm/soap_-_liquid_&_bar"]
    assert soap[["amount", "quantity"]].values.tolist() == [["1.15", "1"]]
    assert len(basket) == 24  # the converter's 24 rows too

    points = read_dataset(f"{config.storage.uri('raw_points')}/dt=2017-01-07")
    basket = points[(points["user_id"] == "1") & (points["event_time"] == "2017-01-07T18:55:24Z")]
    assert set(basket["service"]) == {"436"}
    # One row per discount type with the basket's total: retail_disc of 16 lines (14.18),
    # coupon_disc of 7 lines (5.30) and coupon_match_disc of 4 lines (1.30).
    assert sorted(zip(basket["point_type"], basket["points"])) == [
        ("coupon_discount", "5.3"), ("coupon_match_discount", "1.3"),
        ("loyalty_discount", "14.18")]


def test_coupon_redemptions_land_at_local_noon_in_utc(landed):
    # coupon_redemptions.parquet: household 22 redeemed campaign 27 on 2017-02-18 (EST,
    # UTC-5) and three coupons of campaign 4 on 2017-04-02 (EDT, UTC-4): one row worth 3.
    config, _, _ = landed
    points = read_dataset(config.storage.uri("raw_points"))
    redeemed = points[(points["user_id"] == "22") & (points["point_type"] == "coupon_redemption")]
    rows = set(zip(redeemed["event_time"], redeemed["service"], redeemed["points"]))
    assert ("2017-02-18T17:00:00Z", "campaign_27", "1") in rows
    assert ("2017-04-02T16:00:00Z", "campaign_4", "3") in rows


def test_attribute_tasks_label_only_households_with_the_field(survey):
    config, report = survey
    labels = read_dataset(config.storage.uri("source_labels"))
    demographics = source_slice("demographics")
    universe = set(source_slice("transactions")["household_id"].astype(str))
    assert len(demographics) < len(universe)
    for task in config.source_tasks:
        users = set(labels.loc[labels["task"] == task.name, "user_id"])
        counts = report["source_labels"][task.name]
        assert counts["positives"] + counts["negatives"] == len(users)
        if task.rule.kind == "attribute":
            assert users <= set(demographics["household_id"].astype(str)), task.name
        else:
            assert users == universe, task.name
    married = labels[labels["task"] == "married"].set_index("user_id")["label"]
    expected = demographics.dropna(subset=["marital_status"]).set_index("household_id")
    assert {h: married[str(h)] for h in expected.index} == {
        h: int(v == "Married") for h, v in expected["marital_status"].items()}
    kids = labels[labels["task"] == "has_kids"].set_index("user_id")["label"]
    assert {h: kids[str(h)] for h in demographics["household_id"]} == {
        h: int(v != "0") for h, v in zip(demographics["household_id"], demographics["kids_count"])}


def test_target_positives_are_new_buyers_and_negatives_never_bought(landed):
    config, report, _ = landed
    purchases = read_dataset(config.storage.uri("raw_purchases"))
    purchases = purchases[purchases["status"] == "purchase"]
    local_day = (pd.to_datetime(purchases["event_time"]).dt.tz_convert(config.window.timezone)
                 .dt.date)
    labels = read_dataset(config.storage.uri("target_labels"))
    for task in config.target_tasks:
        prefix, genre = task.rule.genre, purchases["genre"]
        bought = (genre == prefix) | genre.str.startswith(prefix + "/")
        before = set(purchases.loc[bought & (local_day <= config.window.end), "user_id"])
        during = set(purchases.loc[bought & (local_day >= task.label_period_start)
                                   & (local_day <= task.label_period_end), "user_id"])
        ever = set(purchases.loc[bought, "user_id"])
        rows = labels[labels["task"] == task.name]
        positives = set(rows.loc[rows["label"] == 1, "user_id"])
        assert positives == during - before, task.name
        assert not set(rows.loc[rows["label"] == 0, "user_id"]) & ever, task.name
        assert report["tasks"]["target_labels"][task.name]["positives"] == len(positives)
    assert sum(report["tasks"]["target_labels"][t.name]["positives"]
               for t in config.target_tasks) > 0


def test_campaign_seeds_and_registry_come_from_redemptions_and_mailings(landed):
    config, _, _ = landed
    seeds = read_dataset(config.storage.uri("campaign_seeds"))
    redemptions = source_slice("coupon_redemptions")
    in_window = redemptions[redemptions["redemption_date"] <= pd.Timestamp(config.window.end)]
    expected = set(zip(in_window["campaign_id"].astype(str), in_window["household_id"].astype(str)))
    positive = seeds[seeds["label"] == 1]
    assert set(zip(positive["campaign_id"], positive["user_id"])) == expected
    assert not seeds.duplicated(["campaign_id", "user_id"]).any()
    registry = read_dataset(config.storage.uri("campaign_registry")).set_index("campaign_id")
    assert set(registry.index[registry["status"] == "active"]) == set(positive["campaign_id"])
    sent = source_slice("campaigns").drop_duplicates().groupby("campaign_id").size()
    assert {c: registry.loc[str(c), "segment_size"] for c in sent.index} == sent.to_dict()
    assert registry.loc["1", "name"].startswith("Type ") and "(20" in registry.loc["1", "name"]
    assert all(list(v) == [] for v in registry["exclude_campaigns"])


def test_fetching_names_the_table_the_package_lacks(tmp_path):
    config = load_config(CONFIG, overrides=[
        f"storage.root={tmp_path}",
        f"import.tables.loyalty_cards={{uri: {tmp_path / 'cards.parquet'}, format: parquet}}"])
    with pytest.raises(ValueError, match=r"import\.tables\.loyalty_cards: the package has no "
                                         r"loyalty_cards\.parquet \(it has .*transactions"):
        cj.fetch_tables(config, households=1)
    with pytest.raises(ValueError, match="households must be a positive number"):
        cj.select_households(cj.data_directory(), 0)


def test_progress_is_reported(landed):
    config, report, messages = landed
    assert messages[0].startswith("copied transactions (") and "(25 households)" in messages[0]
    assert any(m.startswith("imported in ") for m in messages)
    assert json.loads(Path(config.storage.root, "_completejourney.json").read_text())[
        "households"] == HOUSEHOLDS
