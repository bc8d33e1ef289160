"""jobs/ingest.py: a retailer's own layout -> the raw contracts, by config alone.

The fixture is a line-item export in the layout of a public online retailer's data (invoice,
stock code, free-text description, quantity, a local date-time, unit price, customer id
with a space in its name, country): no category path, cancellations marked by the invoice
number, null customers, repeated line items.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ROOT, SYNTHETIC_CONFIG

from schemas.config import ConfigError, load_config, parse_config

pytestmark = pytest.mark.spark
HEADER = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price",
          "Customer ID", "Country"]
LINES = [
    ["489434", "85048", "15CM CHRISTMAS GLASS BALL 20 LIGHTS", "12", "2010-12-01 07:45:00",
     "6.95", "13085", "United Kingdom"],
    ["489434", "79323P", "PINK CHERRY LIGHTS", "12", "2010-12-01 07:45:00", "6.75", "13085",
     "United Kingdom"],
    ["489434", "22041", "RECORD FRAME 7\" SINGLE SIZE", "48", "2010-12-01 07:45:00", "2.10",
     "13085", "United Kingdom"],
    ["489434", "85048", "15CM CHRISTMAS GLASS BALL 20 LIGHTS", "12", "2010-12-01 07:45:00",
     "6.95", "13085", "United Kingdom"],  # the same line twice in one invoice
    ["C489449", "22087", "PAPER BUNTING WHITE LACE", "-12", "2010-12-01 10:33:00", "2.95",
     "16321", "Australia"],  # a cancellation
    ["489435", "22350", "CAT BOWL", "12", "2010-12-01 07:46:00", "2.55", "", "France"],
    ["489436", "21523", "MUG CUP SET", "4", "2010-13-01 09:00:00", "3.0", "13078", "France"],
    ["489437", "22111", "TEA CUP AND SAUCER", "2", "2010-12-02 23:30:00", "abc", "13078",
     "France"],  # a price that is not a number: landed, then quarantined by the encoder
    ["489438", "22112", "KITCHEN MUG", "1", "2010-12-03 09:15:00", "1.25", "13078", "France"],
]
EXAMPLE = ROOT / "conf" / "examples" / "online_retail.yaml"


def retailer_config(tmp_path, *overrides, lines=LINES):
    """The shipped example config, on a one-month window, over the fixture export."""
    export = tmp_path / "exports" / "online_retail.csv"
    export.parent.mkdir(parents=True, exist_ok=True)
    with open(export, "w", newline="") as fh:
        csv.writer(fh).writerows([HEADER, *lines])
    return load_config(EXAMPLE, base_dir=tmp_path, overrides=[
        f"storage.root={tmp_path / 'data'}", "window.days=31", "window.end=2010-12-31",
        "raw.max_reject_ratio=0.5", "pseudonymisation.enabled=false",
        "tasks.behaviour.horizon_days=7", *overrides])


def landed(config) -> list[dict]:
    root = Path(config.storage.uri("raw_purchases"))
    rows = []
    for part in sorted(root.glob("dt=*/*.parquet")):
        for row in pq.read_table(part).to_pylist():
            rows.append({**row, "dt": part.parent.name[3:]})
    return sorted(rows, key=lambda r: (r["event_time"], r["user_id"], r["genre"] or ""))


def test_a_line_item_export_lands_in_the_raw_contract_with_exact_accounting(spark, tmp_path):
    from jobs import encode, ingest
    config = retailer_config(tmp_path)
    report = ingest.run(spark, config)["purchases"]
    assert report["rows_in"] == 9
    assert report["rows_dropped"] == {"null_customer_id": 1, "unparseable_event_time": 1}
    assert (report["rows_out"], report["rows_merged"]) == (5, 2)
    rows = landed(config)
    assert [(r["user_id"], r["event_time"], r["genre"], r["amount"], r["quantity"], r["status"],
             r["dt"]) for r in rows] == [
        ("13085", "2010-12-01T07:45:00Z", "other", "181.8", "60", "purchase", "2010-12-01"),
        ("13085", "2010-12-01T07:45:00Z", "seasonal/christmas", "166.8", "24", "purchase",
         "2010-12-01"),
        ("16321", "2010-12-01T10:33:00Z", "other", "35.4", "12", "cancel", "2010-12-01"),
        ("13078", "2010-12-02T23:30:00Z", "home/kitchen", None, "2", "purchase", "2010-12-02"),
        ("13078", "2010-12-03T09:15:00Z", "home/kitchen", "1.25", "1", "purchase", "2010-12-03")]
    imported = json.loads((Path(config.storage.uri("raw_purchases")) / "_import.json").read_text())
    assert imported["rows_in"] == 9
    dropped = spark.read.parquet(report["dropped_rows_at"]).collect()
    assert sorted(r["reason"] for r in dropped) == ["null_customer_id", "unparseable_event_time"]
    assert json.loads(next(r["record"] for r in dropped if r["reason"] == "null_customer_id")
                      )["Description"] == "CAT BOWL"

    # The encoder takes it from there: the non-numeric price is quarantined with its reason.
    encoded = encode.run(spark, config, dt.date(2010, 12, 31), full=True)
    assert encoded["sources"]["purchases"] == {
        "rows_read": 5, "rows_encoded": 4, "rows_rejected": {"non_numeric_value": 1}}
    seasonal = config.modality("purchases").channel_index("seasonal_purchase_amount")
    cells = spark.read.parquet(config.storage.uri("events")).where(
        f"user_id = '13085' and channel = {seasonal}").collect()
    assert [(str(c["date"]), c["hour"], round(c["value"], 3)) for c in cells] == [
        ("2010-12-01", 7, 166.8)]


def test_a_genre_lookup_table_and_its_errors(spark, tmp_path):
    from jobs import ingest
    lookup = tmp_path / "exports" / "catalogue.csv"
    lookup.parent.mkdir(parents=True, exist_ok=True)
    lookup.write_text("code,category\n85048,seasonal/lights\n22112,home/kitchen\n")
    config = retailer_config(tmp_path, "import.purchases.merge_line_items=false",
                             "import.purchases.genre={lookup: {input: {uri: exports/catalogue.csv,"
                             " format: csv}, key: code, genre: category, match: StockCode}}")
    report = ingest.run(spark, config)["purchases"]
    assert report["rows_dropped"] == {"no_genre": 4, "null_customer_id": 1,
                                      "unparseable_event_time": 1}
    assert [r["genre"] for r in landed(config)] == ["seasonal/lights"] * 2 + ["home/kitchen"]

    lookup.write_text("code,category\n85048,a\n85048,b\n")
    with pytest.raises(ingest.IngestError, match=re.escape(
            "import.purchases.genre.lookup: key 'code' repeats (e.g. '85048')")):
        ingest.run(spark, config)


def test_a_bad_expression_names_the_field_and_the_columns(spark, tmp_path):
    from jobs import ingest
    config = retailer_config(tmp_path, "import.purchases.amount=Quantity * UnitPrice")
    with pytest.raises(ingest.IngestError) as raised:
        ingest.run(spark, config)
    message = str(raised.value)
    assert message.startswith("import.purchases.amount: cannot use 'Quantity * UnitPrice'")
    assert "Invoice, StockCode, Description, Quantity, InvoiceDate, Price, Customer ID" in message
    assert not Path(config.storage.uri("raw_purchases")).exists()


def test_the_mapping_is_validated_with_the_config():
    doc = yaml.safe_load(SYNTHETIC_CONFIG.read_text())
    doc["import"] = {"purchases": {"input": {"uri": "x.csv", "format": "xls"},
                                   "user_id": "id", "event_time": "t",
                                   "genre": {"rules": [{"column": "d", "genre": "g"}],
                                             "expression": "c"}},
                     "demographics": {"input": {"uri": "d.csv"}, "user_id": "id",
                                      "fields": {"shoe_size": "s"}}}
    with pytest.raises(ConfigError) as raised:
        parse_config(doc)
    problems = "\n".join(raised.value.problems)
    for expected in ("import.purchases.input.format: 'xls' is not one of csv, parquet, jsonl",
                     "import.purchases.amount: is required",
                     "import.purchases.genre: give exactly one of expression, lookup, rules",
                     "import.demographics.fields: shoe_size not among demographics' fields"):
        assert expected in problems, problems


LATER = [  # January 2011: the label period of the rule tasks below
    ["489500", "22112", "KITCHEN MUG", "2", "2011-01-05 10:00:00", "1.25", "13085", "UK"],
    ["489501", "85048", "CHRISTMAS BALL", "1", "2011-01-06 10:00:00", "6.95", "13085", "UK"],
    ["489502", "85049", "XMAS TREE", "1", "2011-01-07 10:00:00", "9.95", "13085", "UK"],
    ["489503", "22112", "KITCHEN MUG", "1", "2011-01-05 11:00:00", "1.25", "13078", "UK"],
    ["489504", "22041", "RECORD FRAME", "1", "2011-01-08 11:00:00", "2.10", "16321", "UK"],
    ["489505", "22041", "RECORD FRAME", "1", "2010-12-10 11:00:00", "2.10", "14000", "UK"],
    ["489506", "22041", "RECORD FRAME", "1", "2011-01-10 11:00:00", "2.10", "14000", "UK"],
]


def test_rule_tasks_label_new_buyers_and_frequent_buyers_from_the_logs(spark, tmp_path):
    """No label files: a new-buyer target task and a buys-at-least source task come from
    the imported log; a hand-made label file's other tasks are kept."""
    from jobs import ingest, tasks
    period = "label_period_start: 2011-01-01, label_period_end: 2011-01-31"
    config = retailer_config(
        tmp_path, f"tasks.target=[{{name: new_buyer_kitchen, {period}, rule: {{kind: new_buyer, "
                  "genre: home/kitchen}}]",
        f"tasks.source=[{{name: seasonal_twice, {period}, rule: {{kind: buys_at_least, "
        "genre: seasonal, times: 2}}]", lines=LINES + LATER)
    ingest.run(spark, config)
    hand_made = Path(config.storage.uri("source_labels"))
    hand_made.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["13085", "14000"], "task": ["vip", "seasonal_twice"],
                             "label": pa.array([1, 1], pa.int8())}), hand_made / "part-0.parquet")
    report = tasks.run(spark, config)
    assert report["target_labels"]["new_buyer_kitchen"]["positives"] == 1
    assert report["source_labels"]["seasonal_twice"] == {
        "positives": 1, "negatives": 2, "rule": {"kind": "buys_at_least", "genre": "seasonal",
                                                 "times": 2, "universe": "active"}}

    def labels(key):
        return sorted((r["task"], r["user_id"], r["label"]) for r in
                      pq.read_table(config.storage.uri(key)).to_pylist())
    # 13085 never bought kitchen goods in December: a new buyer. 13078 did (an earlier
    # buyer: unlabelled). 14000 bought none: negative. 16321 only cancelled in December:
    # outside the active universe.
    assert labels("target_labels") == [("new_buyer_kitchen", "13085", 1),
                                       ("new_buyer_kitchen", "14000", 0)]
    assert labels("source_labels") == [("seasonal_twice", "13078", 0),
                                       ("seasonal_twice", "13085", 1),
                                       ("seasonal_twice", "14000", 0), ("vip", "13085", 1)]


LAST_WEEK = [  # the window's last 7 days: the horizon of cut 0 below
    ["489600", "22112", "KITCHEN MUG", "1", "2010-12-28 10:00:00", "1.25", "13085", "UK"],
    ["489601", "85049", "XMAS TREE", "1", "2010-12-29 10:00:00", "9.95", "13078", "UK"],
    ["489602", "10001", "GARDEN HOSE", "1", "2010-12-02 10:00:00", "4.00", "15000", "UK"],
]


def test_a_genre_family_at_a_backtest_cut_is_suggested_and_labelled(spark, tmp_path):
    """--suggest-family writes new-buyer tasks per genre for the horizon up to each cut
    (leaving out genres a target task uses), and those tasks label inside the window: the
    window before their period decides who is new."""
    from jobs import ingest, tasks
    target = ("tasks.target=[{name: new_buyer_seasonal, label_period_start: 2011-01-01, "
              "label_period_end: 2011-01-31, rule: {kind: new_buyer, genre: seasonal}}]")
    config = retailer_config(tmp_path, target, lines=LINES + LAST_WEEK)
    ingest.run(spark, config)
    suggested = tmp_path / "family.yaml"
    report = tasks.suggest_family(spark, config, str(suggested), depth=2, min_positives=1)
    assert report["tasks"] == 1 and report["target_genres_left_out"] == ["seasonal/christmas"]
    entries = yaml.safe_load(suggested.read_text())
    assert entries == [{
        "name": "nb0_home_kitchen",
        "description": "new buyer of home/kitchen in the 7 days up to 2010-12-31 "
                       "(1 positives, 1 negatives; genre depth 2)",
        "label_period_start": "2010-12-25", "label_period_end": "2010-12-31",
        "rule": {"kind": "new_buyer", "genre": "home/kitchen", "universe": "all"}}]
    family = retailer_config(tmp_path, target, "tasks.behaviour.kinds=[]",
                             f"tasks.source={json.dumps(entries)}", lines=LINES + LAST_WEEK)
    tasks.run(spark, family, only=["nb0_home_kitchen"])
    # 13085 first buys kitchen goods on 28 December: new; 13078 bought some on 3 December
    # (unlabelled); 15000 never did (negative)
    assert sorted((r["user_id"], r["label"]) for r in pq.read_table(
        family.storage.uri("source_labels")).to_pylist()) == [("13085", 1), ("15000", 0)]


def test_family_names_fit_the_config_rule_and_target_genres_are_left_out():
    from jobs.tasks import family_excluded, family_name
    from schemas.config_model import NAME_RE
    assert family_name(90, "Grocery/Baking Needs") == "nb90_grocery_baking_needs"
    long = family_name(0, "x" * 300)
    assert len(long) == 100 and NAME_RE.match(long) and long != family_name(0, "x" * 299)
    assert NAME_RE.match(family_name(0, "///"))
    assert family_excluded("meat/turkey", ["meat/turkey"])
    assert family_excluded("meat", ["meat/turkey"]) and family_excluded("meat/turkey/x",
                                                                         ["meat/turkey"])
    assert not family_excluded("meat/turkeys", ["meat/turkey"])


def test_a_family_of_tasks_is_summarised_in_one_warning_and_one_report_line():
    from jobs.tasks import listed, one_class_tasks
    from metaprofile.datasets.reports import task_lines
    counts = {f"nb0_g{i}": {"positives": i, "negatives": 30 - i} for i in range(31)}
    assert one_class_tasks(counts) == ["nb0_g0", "nb0_g30"]
    assert listed([f"t{i}" for i in range(10)], most=3) == "t0, t1, t2 and 7 more"
    assert listed(["a", "b"]) == "a, b"
    [line] = task_lines("source_labels", counts, "r.json")
    assert line == ("  source_labels 31 tasks: positives 0 .. 30 (median 15), 2 with one class; "
                    "each task's counts: tasks.source_labels in r.json")
    few = task_lines("target_labels", {"t": {"positives": 3, "negatives": 4}}, "r.json")
    assert few == ["  target_labels t" + " " * 29 + " +3 / -4"]


def test_a_daily_export_in_its_own_date_format_lands_at_the_configured_hour(spark, tmp_path):
    """raw.event_time_precision: day with an event_time_format that has no hour (or an ISO
    date): each date is placed at raw.day_hour in the event-time zone."""
    from jobs import ingest
    export = tmp_path / "exports" / "daily.csv"
    export.parent.mkdir(parents=True)
    export.write_text("customer,day,total\n7,30/11/2010,12.5\n8,2010-12-01,3\n9,31/02/2010,1\n")
    config = retailer_config(
        tmp_path, "raw.event_time_precision=day", "raw.day_hour=9",
        "import.purchases={input: {uri: exports/daily.csv}, user_id: customer, event_time: day, "
        "event_time_format: dd/MM/yyyy, event_time_zone: America/New_York, amount: total, "
        "genre: {expression: \"'other'\"}}")
    report = ingest.run(spark, config, only=["purchases"])["purchases"]
    assert report["rows_dropped"] == {"unparseable_event_time": 1}  # no 31 February
    assert [(r["user_id"], r["event_time"]) for r in landed(config)] == [
        ("7", "2010-11-30T14:00:00Z"), ("8", "2010-12-01T14:00:00Z")]


def test_a_typed_parquet_export_with_nanosecond_timestamps(spark, tmp_path):
    """pandas writes nanosecond timestamps, which Spark cannot read as such: the import
    reads them as their count and lands the instant (a naive one in event_time_zone)."""
    from jobs import ingest
    export = tmp_path / "exports" / "orders.parquet"
    export.parent.mkdir(parents=True)
    pq.write_table(pa.table({
        "customer": pa.array([7, 8], pa.int64()),
        "at": pa.array([dt.datetime(2010, 12, 1, 8, 30, 15, 123456)] * 2, pa.timestamp("ns")),
        "total": [12.5, 3.0]}), export)
    config = retailer_config(
        tmp_path, "import.purchases={input: {uri: exports/orders.parquet, format: parquet}, "
                  "user_id: customer, event_time: at, event_time_zone: Europe/Berlin, "
                  "amount: total, genre: {expression: \"'other'\"}}")
    assert ingest.run(spark, config)["purchases"]["rows_out"] == 2
    assert [(r["user_id"], r["event_time"], r["amount"], r["quantity"], r["status"])
            for r in landed(config)] == [("7", "2010-12-01T07:30:15Z", "12.5", "1", "purchase"),
                                         ("8", "2010-12-01T07:30:15Z", "3", "1", "purchase")]


def mailing_tables(tmp_path) -> list[str]:
    """A mailing list (campaign, customer, answered) and a campaign table as named
    import.tables, with the overrides that add them to the example config."""
    pq.write_table(pa.table({
        "campaign": ["xmas", "xmas", "xmas", "xmas", "spring", None],
        "customer": [13085, 13078, 13078, 14000, 16321, 14000],
        "answered": [True, False, False, None, True, True],
        "sent": [dt.date(2010, 12, 1)] * 4 + [dt.date(2011, 3, 1), dt.date(2010, 12, 1)]}),
        tmp_path / "mailings.parquet")
    pq.write_table(pa.table({"campaign": ["xmas", "spring", "xmas"],
                             "title": ["Christmas lights", "Spring", "Christmas again"],
                             "size": [500, 80, 9]}), tmp_path / "campaigns.parquet")
    return [f"import.tables.mailings={{uri: {tmp_path / 'mailings.parquet'}, format: parquet}}",
            f"import.tables.campaign_list={{uri: {tmp_path / 'campaigns.parquet'}, "
            "format: parquet}"]


def test_campaign_seeds_and_registry_land_from_queries_with_accounting(spark, tmp_path):
    """The seeds and the registry are SQL over named tables; rows that break the contract
    are dropped by reason and kept aside, and ${window.end} is the window's last day."""
    from jobs import ingest
    seeds = ("SELECT campaign AS campaign_id, customer AS user_id, CASE WHEN answered THEN 1 "
             "WHEN NOT answered THEN 0 ELSE 7 END AS label FROM mailings "
             "WHERE sent <= DATE '${window.end}'")
    registry = ("SELECT campaign AS campaign_id, title AS name, CASE WHEN campaign IN "
                "(SELECT campaign_id FROM campaign_seeds WHERE label = 1) THEN 'Active' "
                "ELSE 'archived' END AS status, size AS segment_size FROM campaign_list")
    config = retailer_config(tmp_path, *mailing_tables(tmp_path),
                             f"import.campaign_seeds.query=\"{seeds}\"",
                             f"import.campaign_registry.query=\"{registry}\"")
    report = ingest.run(spark, config, only=["campaign_seeds", "campaign_registry"])
    # 5 rows sent by 2010-12-31: 13078 twice (one kept), 14000 with no answer (label 7),
    # and a row with no campaign; 'spring' is sent after the window.
    assert report["campaign_seeds"] == {
        "query": "import.campaign_seeds.query", "rows_in": 5, "rows_out": 2,
        "rows_dropped": {"bad_label": 1, "null_campaign_id": 1, "repeated_seed": 1},
        "dropped_rows_at": f"{config.storage.root}/import_dropped/campaign_seeds",
        "seeds": 1, "negatives": 1}
    assert sorted((r["campaign_id"], r["user_id"], r["label"]) for r in pq.read_table(
        config.storage.uri("campaign_seeds")).to_pylist()) == [("xmas", "13078", 0),
                                                               ("xmas", "13085", 1)]
    dropped = pq.read_table(report["campaign_seeds"]["dropped_rows_at"]).to_pylist()
    assert sorted(r["reason"] for r in dropped) == ["bad_label", "null_campaign_id",
                                                    "repeated_seed"]
    # 'xmas' twice: the row whose JSON sorts first ("Christmas again") is kept.
    assert report["campaign_registry"]["rows_dropped"] == {"repeated_campaign_id": 1}
    rows = sorted(pq.read_table(config.storage.uri("campaign_registry")).to_pylist(),
                  key=lambda r: r["campaign_id"])
    assert [(r["campaign_id"], r["status"], r["segment_size"], r["score_threshold"],
             r["exclude_campaigns"]) for r in rows] == [("spring", "archived", 80, None, []),
                                                        ("xmas", "active", 9, None, [])]
    # A query without a required column names the field and the contract.
    bad = retailer_config(tmp_path, *mailing_tables(tmp_path),
                          "import.campaign_seeds.query=SELECT customer AS user_id FROM mailings")
    with pytest.raises(ingest.IngestError, match=r"import\.campaign_seeds\.query: the query "
                                                 r"returns user_id; it must return campaign_id, "
                                                 r"label"):
        ingest.run(spark, bad, only=["campaign_seeds"])
    unknown = retailer_config(tmp_path, "import.campaign_seeds.query=SELECT * FROM mailers")
    with pytest.raises(ingest.IngestError, match=r"import\.campaign_seeds\.query: .*mailers"):
        ingest.run(spark, unknown, only=["campaign_seeds"])


def test_attribute_and_query_rules_label_from_demographics_and_tables(spark, tmp_path):
    """Source tasks without label files or label periods: an attribute of the demographics
    (null: unlabelled) and a query over a named table; their mistakes name the field."""
    from jobs import ingest, tasks
    demographics = tmp_path / "customers.csv"
    demographics.write_text("id,birth_year,segment\n13085,1950,gold\n13078,,silver\n"
                            "14000,1990,\n")
    query = ("SELECT customer AS user_id, max(CASE WHEN answered THEN 1 ELSE 0 END) AS label "
             "FROM mailings WHERE campaign IS NOT NULL GROUP BY customer")
    config = retailer_config(
        tmp_path, *mailing_tables(tmp_path),
        "demographics={numeric: [birth_year], categorical: [{name: segment, "
        "vocabulary: [gold, silver]}]}",
        f"import.demographics={{input: {{uri: {demographics}}}, user_id: id, "
        "fields: {birth_year: birth_year, segment: segment}}",
        "tasks.source=[{name: born_before_1960, rule: {kind: attribute, condition: "
        "'birth_year < 1960'}}, {name: answers_mail, rule: {kind: query, query: \"" + query
        + "\"}}]")
    ingest.run(spark, config, only=["demographics"])
    report = tasks.run(spark, config)
    assert report["source_labels"]["born_before_1960"] == {
        "positives": 1, "negatives": 1,
        "rule": {"kind": "attribute", "condition": "birth_year < 1960"}}
    labels = sorted((r["task"], r["user_id"], r["label"]) for r in
                    pq.read_table(config.storage.uri("source_labels")).to_pylist())
    assert labels == [("answers_mail", "13078", 0), ("answers_mail", "13085", 1),
                      ("answers_mail", "14000", 0), ("answers_mail", "16321", 1),
                      ("born_before_1960", "13085", 1), ("born_before_1960", "14000", 0)]
    typo = retailer_config(tmp_path, *mailing_tables(tmp_path),
                           "demographics={numeric: [birth_year]}",
                           "tasks.source=[{name: old, rule: {kind: attribute, condition: "
                           "'birth_yr < 1960'}}]")
    with pytest.raises(tasks.TasksError, match=r"tasks\.source\[0\]\.rule\.condition: cannot "
                                               r"use 'birth_yr < 1960'.*fields are birth_year"):
        tasks.run(spark, typo)
    twice = retailer_config(tmp_path, *mailing_tables(tmp_path),
                            "tasks.source=[{name: mailed, rule: {kind: query, query: "
                            "'SELECT customer AS user_id, 1 AS label FROM mailings'}}]")
    with pytest.raises(tasks.TasksError, match=r"tasks\.source\[0\]\.rule\.query returns more "
                                               r"than one row for user '13078', '14000'"):
        tasks.run(spark, twice)


def test_query_and_attribute_rules_are_validated_with_the_config(tmp_path):
    with pytest.raises(ConfigError) as err:
        retailer_config(tmp_path, "tasks.source=[{name: a, rule: {kind: attribute, genre: x}},"
                                  " {name: b, rule: {kind: query, query: 'SELECT ${ds}'}}]",
                        "import.tables.campaign_seeds={uri: x.csv}")
    text = str(err.value)
    assert "tasks.source[0].rule.genre: does not apply to kind attribute" in text
    assert "tasks.source[0].rule.condition: is required" in text
    assert "tasks.source[1].rule.query: ${ds} is not a known placeholder" in text
    assert "import.tables.campaign_seeds: a table name is a SQL identifier" in text
