"""A corpus of hostile inputs: every raw input, in every format it is accepted in.

The raw logs (purchases, points) are landed as CSV, JSON lines and Parquet and encoded; the
side inputs (demographics, labels: the heatmaps job; seeds, registry, opt-outs: the
campaigns job) are Parquet, the one format they are read in.

Each case lands one bad file (beside clean rows where the case is about rows) and runs the
real job that reads it. The case passes when the job either

* **quarantines**: every row of the input is accounted for (read = encoded + rejected, read
  = the rows in the file), and the bad rows carry their reason; or
* **refuses**: a :class:`~common.errors.PipelineError` (the runner prints it as one line,
  exit 1) whose first line names the file and the column, and says what to do.

Anything else (a Java or Python traceback, a silent drop) fails the case. The cases and
their outcomes are listed in ``docs/reliability.md``; the count is printed at the end.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SYNTHETIC_CONFIG as SYNTHETIC_CONFIG_PATH
from test_encode import config_for, point, purchase

from common.errors import PipelineError
from jobs import encode

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DS = "2026-06-30"
DAY = dt.date(2026, 6, 30)
T = "2026-06-30T08:00:00Z"
COLUMNS = {"purchases": ["user_id", "event_time", "genre", "amount", "quantity", "status"],
           "points": ["user_id", "event_time", "point_type", "points", "service"]}
RESULTS: list[tuple[str, str, str]] = []  # (case, format, outcome), for the summary


@dataclass
class Case:
    name: str
    rows: list[dict] = field(default_factory=list)  # what lands (before the format's quirks)
    columns: list[str] | None = None  # the file's header/columns (default: the contract's)
    formats: tuple[str, ...] = ("csv", "jsonl", "parquet")
    source: str = "purchases"
    raw_bytes: Callable[[str], bytes] | None = None  # the file's bytes, for byte-level cases
    expect: str = "quarantine"  # or "refuse", or "refuse:<fmt>,<fmt>" for some formats
    reasons: dict[str, int] = field(default_factory=dict)  # expected rejects by reason
    mentions: tuple[str, ...] = ()  # words the refusal must contain
    encoded: int | None = None  # rows expected to be encoded (default: rows - rejects)


GOOD = [purchase("u1", T), purchase("u2", "2026-06-30T09:30:00+09:00", amount="20")]


def _csv(columns, rows, newline="\n", bom=False) -> bytes:
    import csv
    import io
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return (("\ufeff" if bom else "") + out.getvalue()).encode("utf-8")


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


CASES = [
    Case("extra column", GOOD, columns=COLUMNS["purchases"] + ["coupon"]),
    Case("missing column", GOOD, columns=[c for c in COLUMNS["purchases"] if c != "amount"],
         expect="refuse:csv,parquet", mentions=("amount", "missing"),
         reasons={"non_numeric_value": 2}),
    Case("renamed column", [{**r, "price": r["amount"]} for r in GOOD],
         columns=["user_id", "event_time", "genre", "price", "quantity", "status"],
         expect="refuse:csv,parquet", mentions=("amount", "price"),
         reasons={"non_numeric_value": 2}),
    Case("text where a number belongs", GOOD + [purchase("u3", T, amount="ten")],
         reasons={"non_numeric_value": 1}),
    Case("empty file (header only / no rows)", []),
    Case("zero-byte file beside a good one", GOOD, raw_bytes=lambda fmt: b""),
    Case("non-UTF-8 bytes", GOOD, formats=("csv", "jsonl"),
         raw_bytes=lambda fmt: {"csv": _csv(COLUMNS["purchases"], GOOD),
                                "jsonl": _jsonl(GOOD)}[fmt] + (
             b"u3,2026-06-30T08:00:00Z,fashion/\xff\xfe,10,1,purchase\n" if fmt == "csv"
             else b'{"user_id":"u3","event_time":"2026-06-30T08:00:00Z","genre":'
                  b'"fashion/\xff","amount":"10","quantity":"1","status":"purchase"}\n'),
         reasons={"malformed_line": 1}),
    Case("byte-order mark", GOOD, formats=("csv",),
         raw_bytes=lambda fmt: _csv(COLUMNS["purchases"], GOOD, bom=True)),
    Case("CRLF line endings", GOOD, formats=("csv",),
         raw_bytes=lambda fmt: _csv(COLUMNS["purchases"], GOOD, newline="\r\n")),
    Case("1e308, NaN, inf, -inf and -0", GOOD + [
        purchase("u3", T, amount="1e308"), purchase("u3", T, amount="NaN"),
        purchase("u3", T, amount="inf"), purchase("u3", T, amount="-inf"),
        purchase("u4", T, amount="-0")],
        reasons={"value_too_large": 1, "non_numeric_value": 3}),
    Case("timestamps with and without an offset, and far-future ones", [
        purchase("u1", "2026-06-30T08:00:00Z"), purchase("u2", "2026-06-30T08:00:00+05:30"),
        purchase("u3", "2026-06-30T08:00:00"), purchase("u4", "9999-12-31T23:59:59Z"),
        purchase("u5", "2999-01-01T00:00:00+01:00"), purchase("u6", "30/06/2026 08:00")],
        reasons={"out_of_range_timestamp": 2, "unparseable_timestamp": 1}),
    Case("ids with whitespace and non-ASCII characters", [
        purchase(" u1 ", T), purchase("u1", T), purchase("ユーザー1", T),
        purchase("u\u00e9", T), purchase("\t", T)],
        reasons={"null_user_id": 1}),
    Case("points: missing column", [point("u1", T)], source="points",
         columns=["user_id", "event_time", "point_type", "service"],
         expect="refuse:csv,parquet", mentions=("points", "missing"),
         reasons={"non_numeric_value": 1}),
]
PARAMS = [pytest.param(case, fmt, id=f"{fmt}-{case.name}") for case in CASES
          for fmt in case.formats]


def land(config, case: Case, fmt: str) -> Path:
    """Write the case's file into the landing partition (and clean rows for the other
    source); return the file."""
    ext = {"csv": "csv", "jsonl": "json", "parquet": "parquet"}[fmt]
    for source in ("purchases", "points"):
        folder = Path(config.storage.uri(f"raw_{source}")) / f"dt={DS}"
        folder.mkdir(parents=True, exist_ok=True)
    other = "points" if case.source == "purchases" else "purchases"
    clean = [point("u1", T)] if other == "points" else GOOD
    write(Path(config.storage.uri(f"raw_{other}")) / f"dt={DS}" / f"part-0.{ext}", fmt,
          COLUMNS[other], clean)
    path = Path(config.storage.uri(f"raw_{case.source}")) / f"dt={DS}" / f"part-0.{ext}"
    columns = case.columns or COLUMNS[case.source]
    if case.raw_bytes is not None:
        data = case.raw_bytes(fmt)
        if case.name.startswith("zero-byte"):  # the good rows, and a zero-byte file beside
            write(path, fmt, columns, case.rows)
            path = path.with_name(f"part-1.{ext}")
        path.write_bytes(data)
        return path
    write(path, fmt, columns, case.rows)
    return path


def write(path: Path, fmt: str, columns: list[str], rows: list[dict]) -> None:
    if fmt == "csv":
        path.write_bytes(_csv(columns, rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({c: r.get(c) for c in columns}) + "\n"
                                for r in rows))
    else:
        schema = pa.schema([(c, pa.string()) for c in columns])
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows],
                                            schema=schema), path)


def expected(case: Case, fmt: str) -> str:
    if case.expect.startswith("refuse:"):
        return "refuse" if fmt in case.expect.split(":", 1)[1].split(",") else "quarantine"
    return case.expect


@pytest.mark.parametrize(("case", "fmt"), PARAMS)
def test_a_hostile_raw_file_is_quarantined_or_refused_clearly(spark, tmp_path, case, fmt):
    config = config_for(tmp_path, window__end=DS, window__days=5, raw__format=fmt,
                        raw__max_reject_ratio=1.0)
    path = land(config, case, fmt)
    try:
        report = encode.run(spark, config, DAY, snapshot=False)
    except PipelineError as exc:
        message = str(exc)
        RESULTS.append((case.name, fmt, "refused: " + message.splitlines()[0][:160]))
        assert expected(case, fmt) == "refuse", f"refused unexpectedly: {message}"
        assert path.name in message or str(path.parent) in message, message
        for word in case.mentions:
            assert word in message, message
        return
    got = report["sources"][case.source]
    rejected = got["rows_rejected"]
    RESULTS.append((case.name, fmt, f"quarantined: {json.dumps(rejected)}; "
                                    f"{got['rows_encoded']} of {got['rows_read']} encoded"))
    assert expected(case, fmt) == "quarantine", f"accepted, expected a refusal: {got}"
    assert got["rows_read"] == len(case.rows) + (1 if case.name == "non-UTF-8 bytes" else 0)
    assert got["rows_read"] == got["rows_encoded"] + sum(rejected.values())
    assert rejected == case.reasons, got


@pytest.fixture(scope="module", autouse=True)
def summary():
    """Writes the outcome of every case that ran to ``$METAPROFILE_WORK_DIR/hostile-inputs.json``
    (the count and outcomes go in docs/reliability.md)."""
    yield
    out = Path(os.environ["METAPROFILE_WORK_DIR"]) / "hostile-inputs.json"
    out.write_text(json.dumps([{"case": n, "format": f, "outcome": o} for n, f, o in RESULTS],
                              indent=1, ensure_ascii=False))


# --------------------------------------------------------------------------- side inputs

SIDE_DS = dt.date(2026, 6, 30)


@dataclass
class SideCase:
    name: str
    input: str  # the storage key of the side input
    table: Callable[[], pa.Table] | None  # the file's content (None: a zero-byte file)
    expect: str = "quarantine"  # or "refuse"
    mentions: tuple[str, ...] = ()
    check: Callable[[dict], None] = lambda report: None  # on the job's report
    beside: bool = False  # the file goes beside the original instead of replacing it


def _demographics(rows, columns=("user_id", "age", "household_size", "gender", "region"),
                  types=None):
    types = {"user_id": pa.string(), "age": pa.float64(), "household_size": pa.float64(),
             "gender": pa.string(), "region": pa.string(), **(types or {})}
    return pa.Table.from_pylist([dict(zip(columns, r)) for r in rows],
                                schema=pa.schema([(c, types.get(c, pa.string()))
                                                  for c in columns]))


def _demographics_counts(report) -> dict:
    return report["manifest"]["inputs"]["demographics"]


SIDE_CASES = [
    SideCase("demographics: missing column", "demographics", lambda: _demographics(
        [("u1", 2.0, "female", "north")], ("user_id", "household_size", "gender", "region")),
        expect="refuse", mentions=("'age'", "missing", "demographics section")),
    SideCase("demographics: extra column", "demographics", lambda: _demographics(
        [("u1", 30.0, 2.0, "female", "north", "x")],
        ("user_id", "age", "household_size", "gender", "region", "loyalty_tier"))),
    SideCase("demographics: a column of an unexpected type", "demographics",
             lambda: _demographics([("u1", "forty", 2.0, "female", "north")],
                                   types={"age": pa.string()}),
             expect="refuse", mentions=("'age'", "string")),
    SideCase("demographics: empty file", "demographics", lambda: _demographics([]),
             check=lambda r: _demographics_counts(r)["rows"] == 0 or pytest.fail(str(r))),
    SideCase("demographics: zero-byte file beside the real one", "demographics", None,
             beside=True,
             check=lambda r: _demographics_counts(r)["rows"] == 4 or pytest.fail(str(r))),
    SideCase("demographics: 1e308, NaN, inf and -0", "demographics", lambda: _demographics([
        ("u1", 1e308, 2.0, "female", "north"), ("u2", float("nan"), 1.0, "male", "east"),
        ("u3", float("inf"), -0.0, "male", None)]),
        check=lambda r: _demographics_counts(r)["unusable_values"] == {"age": 3}
        or pytest.fail(str(_demographics_counts(r)))),
    SideCase("demographics: ids with whitespace and non-ASCII characters", "demographics",
             lambda: _demographics([(" u1\t", 30.0, 2.0, "female", "north"),
                                    ("ユーザー", 40.0, 1.0, "male", "east"),
                                    ("  ", 50.0, 1.0, "male", "east")]),
             check=lambda r: _demographics_counts(r)["rows_without_user_id"] == 1
             or pytest.fail(str(_demographics_counts(r)))),
    SideCase("labels: missing column", "source_labels",
             lambda: pa.table({"user_id": ["u1"], "task": ["married"]}),
             expect="refuse", mentions=("'label'", "missing")),
    SideCase("labels: a column of an unexpected type", "source_labels",
             lambda: pa.table({"user_id": ["u1"], "task": ["married"], "label": ["yes"]}),
             expect="refuse", mentions=("'label'", "string")),
    SideCase("labels: tasks the config does not name (a path, a forged log line)",
             "source_labels", lambda: pa.table(
                 {"user_id": ["u1", "u1", "u2"],
                  "task": ["no_such_task", "../x\nINFO forged", "no_such_task"],
                  "label": pa.array([1, 0, 1], pa.int8())}),
             check=lambda r: r["summary"]["rows_by_problem"] == {"unknown_task": 3}
             or pytest.fail(str(r["summary"]))),
]


@pytest.fixture(scope="module")
def heat_world(spark, tmp_path_factory):
    from test_heatmaps import tiny_config, write_inputs
    config = tiny_config(tmp_path_factory.mktemp("hostile-side"))
    write_inputs(config)
    return config


def _place(config, case) -> Path:
    """Put the case's file in the input's folder, every other input as it was."""
    for key in ("demographics", "source_labels", "campaign_seeds", "campaign_registry",
                "opt_outs"):
        original = Path(config.storage.uri(key))
        backup = original.with_name(original.name + ".orig")
        if original.exists() and not backup.exists():
            shutil.copytree(original, backup)
        if backup.exists():
            shutil.rmtree(original, ignore_errors=True)
            shutil.copytree(backup, original)
    folder = Path(config.storage.uri(case.input))
    path = folder / ("part-9.parquet" if case.beside else "part-0.parquet")
    if case.table is None:
        path.write_bytes(b"")
    else:
        pq.write_table(case.table(), path)
    return path


def _side_outcome(case, path, run) -> None:
    try:
        report = run()
    except PipelineError as exc:
        message = str(exc)
        RESULTS.append((case.name, "parquet", "refused: " + " ".join(message.split())[:200]))
        assert case.expect == "refuse", f"refused unexpectedly: {message}"
        assert str(path) in message, message
        for word in case.mentions:
            assert word in message, message
        return
    RESULTS.append((case.name, "parquet", "accepted: " + json.dumps(report.get("summary", ""))))
    assert case.expect == "quarantine", f"accepted, expected a refusal: {report}"
    case.check(report)


@pytest.mark.parametrize("case", SIDE_CASES, ids=[c.name for c in SIDE_CASES])
def test_a_hostile_side_input_is_quarantined_or_refused_clearly(heat_world, spark, case):
    from jobs import heatmaps
    path = _place(heat_world, case)

    def run():
        report = heatmaps.run(spark, heat_world, SIDE_DS, partitions=1)
        uri = f"{heat_world.storage.uri('heatmaps')}/ds={SIDE_DS}/_manifest.json"
        manifest = json.loads(Path(uri).read_text())
        return {**report, "manifest": manifest,
                "summary": manifest["inputs"][{"demographics": "demographics"}.get(
                    case.input, "labels")]}
    _side_outcome(case, path, run)


def _seeds(rows):
    from schemas.contracts import CAMPAIGN_SEEDS
    return pa.Table.from_pylist([dict(zip(CAMPAIGN_SEEDS.names, r)) for r in rows],
                                schema=CAMPAIGN_SEEDS)


def _registry_excluding_itself():
    from test_lookalike import REGISTRY

    from schemas.contracts import CAMPAIGN_REGISTRY
    rows = [{"campaign_id": c, "name": c.upper(), "status": st, "segment_size": size,
             "score_threshold": thr, "exclude_campaigns": ex + (["cmp_top"] if c == "cmp_top"
                                                                else [])}
            for c, st, size, thr, ex in REGISTRY]
    return pa.Table.from_pylist(rows, schema=CAMPAIGN_REGISTRY)


def _verdict(report, campaign):
    return report["campaigns"][campaign]


CAMPAIGN_CASES = [
    SideCase("seeds: a seed list for an unknown campaign", "campaign_seeds",
             lambda: _seeds([("cmp_top", f"u0{i}", 1) for i in range(4)]
                            + [("cmp_nobody", "u01", 1), ("cmp_nobody", "u02", 1)]),
             check=lambda r: r["seeds_for_unknown_campaigns"] == {"cmp_nobody": 2}
             or pytest.fail(str(r["seeds_for_unknown_campaigns"]))),
    SideCase("seeds: ids with whitespace", "campaign_seeds",
             lambda: _seeds([("cmp_top", f" u0{i}\t", 1) for i in range(4)]),
             check=lambda r: _verdict(r, "cmp_top")["seeds"]["unknown"] == 0
             or pytest.fail(str(_verdict(r, "cmp_top")))),
    SideCase("seeds: missing column", "campaign_seeds",
             lambda: pa.table({"campaign_id": ["cmp_top"], "user_id": ["u01"]}),
             expect="refuse", mentions=("'label'", "missing")),
    SideCase("registry: a row that excludes itself", "campaign_registry",
             _registry_excluding_itself,
             check=lambda r: "itself" in " ".join(_verdict(r, "cmp_top")["problems"])
             or pytest.fail(str(_verdict(r, "cmp_top")))),
    SideCase("registry: a column of an unexpected type", "campaign_registry",
             lambda: pa.table({"campaign_id": ["cmp_top"], "name": ["x"], "status": ["active"],
                               "segment_size": ["five"],
                               "score_threshold": pa.array([None], pa.float64()),
                               "exclude_campaigns": pa.array([[]], pa.list_(pa.string()))}),
             expect="refuse", mentions=("'segment_size'", "string")),
    SideCase("opt-outs: empty file", "opt_outs", lambda: pa.table(
        {"user_id": pa.array([], pa.string())})),
    SideCase("opt-outs: zero-byte file beside the real one", "opt_outs", None, beside=True,
             check=lambda r: _verdict(r, "cmp_top")["seeds"]["opted_out"] == 1
             or pytest.fail(str(_verdict(r, "cmp_top")))),
    SideCase("opt-outs: ids with whitespace", "opt_outs",
             lambda: pa.table({"user_id": [" u06 ", "u07\r"]}),
             check=lambda r: _verdict(r, "cmp_top")["seeds"]["opted_out"] == 1
             or pytest.fail(str(_verdict(r, "cmp_top")))),
    SideCase("opt-outs: ids the pipeline never saw, one a path", "opt_outs",
             lambda: pa.table({"user_id": ["never_seen", "../../x", "u06"]}),
             check=lambda r: (_verdict(r, "cmp_top")["seeds"]["opted_out"] == 1
                              and _verdict(r, "cmp_top")["status"] == "ok")
             or pytest.fail(str(_verdict(r, "cmp_top")))),
]


@pytest.fixture(scope="module")
def campaign_world(spark, tmp_path_factory):
    from test_lookalike import DAYS, tiny_model, write_world

    from common import registry
    from schemas.config import load_config
    tmp = tmp_path_factory.mktemp("hostile-campaigns")
    config = load_config(SYNTHETIC_CONFIG_PATH, overrides=[
        f"storage.root={tmp / 'data'}", f"window.days={DAYS}", "lookalike.min_seeds=2",
        "lookalike.holdout=0.0"])
    write_world(config)
    registry.publish(config, tiny_model(config, config.storage.uri("models")))
    from jobs import embed
    embed.run(spark, config, SIDE_DS)
    return config


@pytest.mark.parametrize("case", CAMPAIGN_CASES, ids=[c.name for c in CAMPAIGN_CASES])
def test_a_hostile_campaign_input_is_quarantined_or_refused_clearly(campaign_world, spark,
                                                                     case):
    from jobs import campaigns
    path = _place(campaign_world, case)
    _side_outcome(case, path, lambda: campaigns.run(spark, campaign_world, SIDE_DS))


# --------------------------------------------------------------------------- identifiers

# Campaign ids become folder names (supports/, scores/, segments/ and Spark's partition
# folders): every one of these breaks the identifier rule (schemas/identifiers.py).
HOSTILE_IDS = {
    "separator": "cmp/evil",
    "parent folder": "../../escaped",
    "parent folder alone": "..",
    "current folder": ".",
    "backslash": "cmp\\evil",
    "hidden name": ".hidden",
    "Spark metadata name": "_SUCCESS",
    "option-like": "--help",
    "partition key separator": "ds=2026-06-30",
    "newline forging a log line": "cmp\nINFO campaign cmp_top: ok",
    "carriage return": "cmp\rx",
    "NUL": "cmp\x00x",
    "terminal escape": "cmp\x1b[31mred",
    "space": "cmp top",
    "empty": "",
    "fullwidth look-alike": "ｃｍｐ＿ｔｏｐ",
    "Cyrillic look-alike": "cmp_tоp",
    "right-to-left override": "cmp\u202epot",
    "reserved device name": "CON",
    "reserved device name with extension": "nul.txt",
    "trailing dot": "cmp.",
    "one over the length limit": "c" * 101,
    "filesystem name limit": "c" * 255,
    "over the filesystem name limit": "c" * 300,
}


@pytest.fixture(scope="module")
def hostile_id_world(spark, tmp_path_factory):
    """The lookalike test world with one more active campaign per hostile id, each with
    enough seeds to pass every other check."""
    from test_lookalike import DAYS, REGISTRY, SEEDS, tiny_model, write_world

    from common import registry
    from jobs import embed
    from schemas.config import load_config
    from schemas.contracts import CAMPAIGN_REGISTRY, CAMPAIGN_SEEDS
    tmp = tmp_path_factory.mktemp("hostile-ids")
    config = load_config(SYNTHETIC_CONFIG_PATH, overrides=[
        f"storage.root={tmp / 'data'}", f"window.days={DAYS}", "lookalike.min_seeds=2",
        "lookalike.holdout=0.0"])
    write_world(config)
    rows = [(c, st, size, thr, ex) for c, st, size, thr, ex in REGISTRY]
    rows += [(c, "active", 5, None, []) for c in HOSTILE_IDS.values()]
    seeds = list(SEEDS) + [(c, f"u1{i}", 1) for c in HOSTILE_IDS.values() for i in range(4)]
    pq.write_table(pa.Table.from_pylist(
        [{"campaign_id": c, "name": "hostile", "status": st, "segment_size": size,
          "score_threshold": thr, "exclude_campaigns": ex} for c, st, size, thr, ex in rows],
        schema=CAMPAIGN_REGISTRY), f"{config.storage.uri('campaign_registry')}/part-0.parquet")
    pq.write_table(pa.Table.from_pylist([dict(zip(CAMPAIGN_SEEDS.names, s)) for s in seeds],
                                        schema=CAMPAIGN_SEEDS),
                   f"{config.storage.uri('campaign_seeds')}/part-0.parquet")
    registry.publish(config, tiny_model(config, config.storage.uri("models")))
    embed.run(spark, config, SIDE_DS)
    return config


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_hostile_campaign_id_fails_alone_and_nothing_leaves_its_dataset(
        hostile_id_world, spark):
    import time

    from jobs import campaigns, export, score
    config = hostile_id_world
    root = Path(config.storage.root)
    before = _tree(root)
    started = time.perf_counter()
    checked = campaigns.run(spark, config, SIDE_DS)
    scored = score.run(spark, config, SIDE_DS)
    exported = export.run(config, SIDE_DS)
    seconds = time.perf_counter() - started
    verdicts = checked["campaigns"]
    for name, value in HOSTILE_IDS.items():
        verdict = verdicts[value]
        assert verdict["status"] == "failed", (name, verdict)
        assert "identifier" in verdict["problems"][0], (name, verdict)
        assert verdict["problems"][0].isascii() and verdict["problems"][0].isprintable()
        RESULTS.append((f"campaign id: {name}", "parquet", "failed alone: "
                        + verdict["problems"][0][:120]))
    # the others are checked, scored and exported as without the hostile rows
    assert {c for c, v in verdicts.items() if v["status"] == "ok"} == {"cmp_top", "cmp_thr"}
    assert sorted(exported["exported"]) == ["cmp_thr", "cmp_top"], exported
    assert scored["campaigns"] == 2 and not scored["rejected_campaigns"]
    # every new path lies in a dataset, and a campaign folder only ever has a valid id (a
    # campaign that failed other checks keeps its folder, with its verdict)
    allowed = {"cmp_top", "cmp_thr", "cmp_few", "cmp_bad"}
    for path in sorted(_tree(root) - before):
        parts = Path(path).parts
        assert parts[0] in ("supports", "scores", "segments", "manifests", "locks", "reports"), \
            path
        campaign = [p.split("=", 1)[1] for p in parts if p.startswith("campaign=")]
        assert all(c in allowed for c in campaign), path
        assert ".." not in parts and "escaped" not in path and "evil" not in path, path
    print(f"\n{len(HOSTILE_IDS)} hostile campaign ids: checked, scored and exported in "
          f"{seconds:.1f} s")


def test_a_bad_campaign_on_the_command_line_fails_alone_with_exit_3(hostile_id_world, spark,
                                                                     capsys):
    from jobs import campaigns, export, score
    config = hostile_id_world
    args = ["--config", str(SYNTHETIC_CONFIG_PATH), "--ds", DS,
            "--set", f"storage.root={config.storage.root}", "--set", "window.days=3",
            "--set", "lookalike.min_seeds=2", "--set", "lookalike.holdout=0.0"]
    bad = HOSTILE_IDS["newline forging a log line"]
    assert campaigns.main([*args, "--campaign", bad, "--campaign", "cmp_top"]) == 3
    assert Path(f"{config.storage.uri('supports')}/ds={DS}/campaign=cmp_top/_SUCCESS").exists()
    # a folder under supports/ that no run wrote is never read, and fails alone
    planted = Path(f"{config.storage.uri('supports')}/ds={DS}/campaign=cmp top")
    planted.mkdir()
    try:
        assert score.main(args) == 3
    finally:
        planted.rmdir()
    assert export.main([*args, "--campaign", bad, "--campaign", "cmp_top"]) == 3
    err = capsys.readouterr().err
    assert "'cmp\\nINFO campaign cmp_top: ok'" in err  # named, escaped, on one line
    assert not any(line.startswith("INFO campaign cmp_top: ok") for line in err.splitlines())
    assert Path(f"{config.storage.uri('segments')}/ds={DS}/campaign=cmp_top/_SUCCESS").exists()
