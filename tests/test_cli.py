"""The one entry point: help that tells the truth, counts printed, errors that name the field."""
from __future__ import annotations

import json

import pytest

from metaprofile.cli import build_parser, main


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    commands = {"demo", "generate", "completejourney", "encode", "heatmaps", "train",
                "model-summary", "evaluate", "embed", "campaigns", "score", "export", "publish",
                "check", "config", "import", "tasks", "forget", "measure"}
    for command in commands:
        assert command in out
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(choices) == commands


@pytest.mark.parametrize("job", ["encode", "heatmaps", "embed", "campaigns", "score"])
def test_spark_jobs_take_their_own_options(job, capsys):
    with pytest.raises(SystemExit) as info:
        main([job, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: metaprofile {job}" in out and "--ds" in out and "--master" in out


def test_encode_refuses_full_with_snapshot_only(capsys):
    assert main(["encode", "--config", "conf/synthetic.yaml", "--full", "--snapshot-only"]) == 2
    assert "--full and --snapshot-only exclude each other" in capsys.readouterr().err


def test_generate_prints_counts(tmp_path, capsys):
    code = main(["generate", "--config", "conf/synthetic.yaml", "--users", "30", "--seed", "3",
                 "--set", "window.days=5",
                 "--set", f"storage.root={tmp_path}"])
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "_generation.json").read_text())
    assert f"synthetic data set: 30 users, days {report['days']['first']}" in out
    purchases = report["sources"]["purchases"]["rows_written"]
    assert f"raw purchases {purchases:>12,} rows" in out
    assert "source task married" in out


def test_config_validate_and_errors(tmp_path, capsys):
    assert main(["config", "validate", "--config", "conf/synthetic.yaml"]) == 0
    assert "valid (config 'synthetic'" in capsys.readouterr().out
    assert main(["config", "validate", "--config", "conf/synthetic.yaml",
                 "--set", "window.days=0"]) == 2
    err = capsys.readouterr().err
    assert "window.days: 0 is outside 1..3660" in err and "synthetic.yaml" in err
    assert main(["config", "show", "--config", "conf/synthetic.yaml",
                 "--set", "window.days=30"]) == 0
    assert "days: 30" in capsys.readouterr().out


@pytest.mark.slow
def test_completejourney_slice_prints_accounting(tmp_path, capsys):
    assert main(["completejourney", "--config", "conf/completejourney.yaml", "--households", "5",
                 "--set", f"storage.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "_completejourney.json").read_text())
    flow = report["import"]["purchases"]
    assert f"purchases          in {flow['rows_in']:>10,}  out {flow['rows_out']:>10,}" in out
    assert "target_labels new_buyer_turkey" in out
    family = report["tasks"]["source_labels"]  # the genre family: one line for all its tasks
    assert len(family) > 20 and f"source_labels {len(family):,} tasks: positives" in out
    assert "source_labels nb0_" not in out


def test_check_reports_every_input_and_fails_on_errors(tmp_path, capsys):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    base = ["--config", "conf/synthetic.yaml", "--set", "window.days=5", "--set", f"storage.root={tmp_path}"]
    assert main(["generate", "--users", "30", "--seed", "3", *base]) == 0
    capsys.readouterr()
    assert main(["check", *base]) == 0
    out = capsys.readouterr().out
    assert "0 error(s), 0 warning(s); the inputs can be encoded" in out
    for name in ("raw_purchases", "raw_points", "demographics", "source_labels", "opt_outs"):
        assert f"ok     {name}" in out

    shutil.rmtree(tmp_path / "raw_points" / "dt=2026-06-28")
    labels = next((tmp_path / "source_labels").glob("*.parquet"))
    table = pq.read_table(labels)
    pq.write_table(table.set_column(2, "label", pa.array([[v] for v in table["label"].to_pylist()])),
                   labels)
    shutil.rmtree(tmp_path / "target_labels")
    assert main(["check", *base]) == 1
    out = capsys.readouterr().out
    assert ("warn   raw_points         1 date(s) of the window have no partition (2026-06-28); "
            "raw.missing_partitions is warn") in out
    assert f"error  source_labels      {labels}: column 'label' has type list<" in out
    assert "warn   target_labels" in out and "not found (needed by evaluate)" in out
    assert "1 error(s), 2 warning(s)" in out
    assert main(["check", *base, "--set", "raw.missing_partitions=fail"]) == 1
    assert "error  raw_points         1 date(s) of the window" in capsys.readouterr().out
    assert main(["check", *base, "--set", "window.end=2026-02-30"]) == 2
    assert "window.end: expected a date" in capsys.readouterr().err


def test_check_points_a_new_retailer_to_the_import(tmp_path, capsys):
    config = ["--config", "conf/examples/online_retail.yaml", "--set", f"storage.root={tmp_path}",
              "--set", f"import.tables.online_retail.uri={tmp_path / 'export.csv'}"]
    assert main(["check", *config]) == 1
    out = capsys.readouterr().out
    assert f"error  import.tables.online_retail  {tmp_path / 'export.csv'}: not found (the " \
           "config's import.tables.online_retail.uri)" in out
    assert "no landing partition yet; run `metaprofile import` first" in out
    assert "warn   demographics" in out  # the example config names no demographic field
    (tmp_path / "export.csv").write_text("Invoice\n")
    assert main(["check", *config]) == 1
    assert f"ok     import.tables.online_retail  {tmp_path / 'export.csv'}: found" in \
        capsys.readouterr().out


def test_check_reads_the_first_event_times_of_the_newest_partition(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    base = ["--config", "conf/synthetic.yaml", "--set", "window.days=3", "--set", "window.end=2026-06-30",
            "--set", f"storage.root={tmp_path}"]
    part = tmp_path / "raw_purchases" / "dt=2026-06-30" / "part-0.parquet"
    part.parent.mkdir(parents=True)

    def land(times):
        pq.write_table(pa.table({c: ["1"] * len(times) for c in ("user_id", "genre", "amount",
                                                                 "quantity", "status")}
                                | {"event_time": times}), part)
        main(["check", *base])
        return capsys.readouterr().out

    out = land(["2026-06-30", "2026-06-30"])
    assert f"{part}: event_time holds dates alone (2 of the first 2, e.g. '2026-06-30')" in out
    assert "set raw.event_time_precision: day" in out
    main(["check", *base, "--set", "raw.event_time_precision=day"])
    assert "dates alone" not in capsys.readouterr().out
    out = land(["30/06/2026 10:00", "2026-06-30T10:00:00Z"])
    assert f"warn   raw_purchases      {part}: event_time: 1 of the first 2 values are no " \
           "ISO-8601 time (e.g. '30/06/2026 10:00')" in out
    assert "ISO-8601" not in land(["2026-06-30T10:00:00", "2026-06-30 11:00:00+02:00"])
