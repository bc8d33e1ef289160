"""A new retailer, from its export to an exported segment, by config and commands alone.

The export has the layout of a public online retailer's line items (no category path, no
demographics, no label file). Every step is a `metaprofile` command on the shipped example
config, `conf/examples/online_retail.yaml`, as docs/onboarding.md lists them: import (logs,
campaign seeds and registry by SQL), check, encode, heatmaps (behaviour tasks), train (a
tiny network, a few steps), publish, embed, campaigns, score and export.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.spark]
EXAMPLE = ROOT / "conf" / "examples" / "online_retail.yaml"
ITEMS = [("85048", "15CM CHRISTMAS GLASS BALL 20 LIGHTS", "6.95"),
         ("22086", "PAPER CHAIN KIT 50'S CHRISTMAS", "2.95"),
         ("21523", "MUG CUP SET", "3.00"), ("22111", "TEA CUP AND SAUCER", "1.65"),
         ("22350", "CAT BOWL", "2.55"), ("22041", "RECORD FRAME 7\" SINGLE SIZE", "2.10"),
         ("79323P", "PINK CHERRY LIGHTS", "6.75"), ("22087", "PAPER BUNTING WHITE LACE", "2.95")]
CUSTOMERS = 48


def write_export(path: Path) -> int:
    """A month of invoices for CUSTOMERS customers (and some lines without one)."""
    rng = np.random.default_rng(11)
    rows = [["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price",
             "Customer ID", "Country"]]
    invoice = 489000
    for c in range(CUSTOMERS):
        for _ in range(int(rng.integers(3, 9))):
            invoice += 1
            day = dt.datetime(2010, 12, 1) + dt.timedelta(days=int(rng.integers(0, 31)),
                                                          hours=int(rng.integers(8, 19)))
            items = ITEMS if c % 3 else ITEMS[2:]  # a third never buys Christmas goods
            for i in rng.choice(len(items), size=int(rng.integers(1, 4)), replace=False):
                code, text, price = items[i]
                rows.append([str(invoice), code, text, str(int(rng.integers(1, 13))),
                             f"{day:%Y-%m-%d %H:%M:%S}", price, str(13000 + c),
                             "United Kingdom"])
    rows.append(["C489999", "22087", "PAPER BUNTING WHITE LACE", "-2", "2010-12-20 10:00:00",
                 "2.95", "13001", "United Kingdom"])
    rows.append(["489998", "22350", "CAT BOWL", "4", "2010-12-21 10:00:00", "2.55", "", "France"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return len(rows) - 1


def test_an_export_without_categories_or_labels_becomes_a_segment(spark, tmp_path, capsys,
                                                                  monkeypatch):
    from metaprofile.cli import main
    monkeypatch.chdir(tmp_path)  # the example's relative paths resolve here
    monkeypatch.setenv("METAPROFILE_PSEUDONYM_KEY", "an-onboarding-test-key-0123456789")
    lines = write_export(tmp_path / "exports" / "online_retail.csv")
    common = ["--config", str(EXAMPLE), "--set", "window.days=31",
              "--set", "window.end=2010-12-31", "--set", "tasks.behaviour.horizon_days=7",
              "--set", "tasks.behaviour.kinds=[new_buyer, active]",
              "--set", "lookalike.min_seeds=3", "--set", "lookalike.background_users=20",
              "--set", "lookalike.holdout=0.0"]
    root = tmp_path / ".work" / "data" / "online_retail"

    def run(*args):
        code = main([*args, *common])
        out, err = capsys.readouterr()
        assert code == 0, f"{args}: exit {code}\n{out}\n{err[-3000:]}"
        return out

    report = json.loads(run("import"))
    assert report["purchases"]["rows_in"] == lines
    assert report["purchases"]["rows_dropped"] == {"null_customer_id": 1}
    assert report["campaign_seeds"]["seeds"] > 3
    assert report["campaign_registry"]["rows_out"] == 1
    assert not [line for line in run("check").splitlines() if line.startswith("error")]
    run("encode", "--full")
    run("heatmaps")
    run("train", "--steps", "4", "--batch-size", "8", "--k-shot", "1", "--validate-every", "0",
        "--width", "0.125", "--embedding-dim", "8", "--relation-units", "8",
        "--pool-per-class", "4", "--log-every", "1", "--version", "v1",
        "--work-dir", str(tmp_path / "train"))
    run("publish", "--model", str(root / "models" / "v1"), "--force")
    run("embed")
    run("campaigns")
    run("score")
    run("export")

    segment_dir = root / "segments" / "ds=2010-12-31" / "campaign=christmas_buyers"
    manifest = json.loads((segment_dir / "_manifest.json").read_text())
    segment = pq.read_table(segment_dir / "segment.parquet").to_pylist()
    seeds = {r["user_id"] for r in pq.read_table(root / "campaign_seeds").to_pylist()}
    # Every customer is a seed (a Christmas buyer) or a candidate: the segment is the
    # candidates, up to the registry's 1,000, under the pseudonymisation key.
    assert manifest["counts"]["seeds"]["usable_positives"] == len(seeds) > 3
    held = (segment_dir / "control.csv").read_text().splitlines()[1:]
    assert manifest["counts"]["selected"] == len(segment) > 0
    assert manifest["counts"]["control"] == len(held)
    assert len(segment) + len(held) == CUSTOMERS - len(seeds)
    assert manifest["name"] == "Lookalike of the recent Christmas buyers"
    ids = {r["user_id"] for r in segment}
    assert not ids & {str(13000 + c) for c in range(CUSTOMERS)}  # pseudonyms, not raw ids
