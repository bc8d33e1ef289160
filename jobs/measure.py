"""Measure an exported segment against later conversions: its lift, the campaign's
incrementality, value per member and cost per acquisition, with 95 % intervals.

    metaprofile measure --config conf/synthetic.yaml --ds 2026-06-30 --campaign cmp_x \
        --conversions conversions.csv [--until 2026-07-31] [--spend 5000]
    spark-submit jobs/measure.py …   (the same options; it runs without Spark)

``--conversions`` is a CSV or Parquet file with a ``user_id`` (the raw id, as in the raw
logs; pseudonymised here when the pipeline pseudonymises), a ``time`` (a timestamp or a
date) and optionally a ``value``. Conversions from the day after ``--ds`` (``--since``)
to ``--until`` (inclusive; default: the last one) count. The groups come from
``segments/ds=<ds>/campaign=<id>/`` (``jobs/export.py``):

* **treated**: the segment's members (``segment.parquet`` or ``segment.csv``), the ones the
  campaign reached;
* **control**: its control group (``control.csv``), selected by the same score but never
  activated;
* **population**: every user the night scored (``embeddings/ds=<ds>``).

Reported, each with a 95 % interval:

* the conversion rate of each group (Wilson score interval);
* the **segment's own lift**: the control group's rate over the population's. The control
  members saw no ad, so this says how well the segment was chosen, whatever the campaign
  did. The interval is the relative risk's (Katz's log interval, ``scipy``), which treats
  the two groups as independent; the control group is part of the population, so the
  interval is a little wider than it need be;
* the campaign's **incrementality**: the treated rate over the control rate (relative risk,
  disjoint groups);
* conversion value per member, treated and control (t interval);
* with ``--spend``, the cost per acquisition (spend over treated converters) and per
  incremental acquisition (spend over the converters the treated group has beyond the
  control rate), the latter's interval from the incrementality's.

A user converts once, however many conversions they have; their value is the sum. Rows
that cannot count (no user, no time, a value that is not a number) and converters outside
the population are counted in the report, never dropped silently. The report is
``measure.json``, ``report.md`` and ``report.png`` under
``reports/measure/ds=<ds>/campaign=<id>/``: beside the segment, not in it, since an
exported segment is published whole and checksummed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
import math
import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # spark-submit jobs/measure.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from common import catalog, storage
from common.errors import PipelineError
from common.privacy import load_pseudonym_key, pseudonym
from jobs import runner
from jobs.runner import Job, JobContext, UsageError
from schemas.config import PipelineConfig
from schemas.contracts import CONTROL_FILE, SEGMENT_FILE

log = logging.getLogger("metaprofile.measure")

LEVEL = 0.95
GROUPS = ("treated", "control", "population")


class MeasureError(PipelineError):
    """A segment, population or conversions file that cannot be measured."""


# --------------------------------------------------------------------------- statistics


KATZ_MIN = 5  # converters and non-converters each group needs for Katz's interval


def rate(converters: int, members: int, level: float = LEVEL) -> dict:
    """A conversion rate and its Wilson score interval."""
    from scipy.stats import binomtest
    if members == 0:
        return {"converters": converters, "members": 0, "rate": None, "low": None,
                "high": None}
    ci = binomtest(converters, members).proportion_ci(level, method="wilson")
    return {"converters": converters, "members": members, "rate": converters / members,
            "low": float(ci.low), "high": float(ci.high)}


def ratio(exposed: dict, baseline: dict) -> dict:
    """``exposed``'s rate over ``baseline``'s (two :func:`rate` results) with a 95 %
    interval; None where a rate is missing or the baseline has no converter.

    The interval is the relative risk's (Katz's log interval, ``scipy``) when each group
    has at least ``KATZ_MIN`` converters and non-converters. With fewer, Katz's interval
    is far too narrow (one control member who converted gives a rate of 1 and a variance
    near 0), so it is the ratio of the groups' Wilson bounds at 97.5 % each instead: wider
    than it need be, never narrower. ``method`` says which; an unbounded end is None."""
    from scipy.stats.contingency import relative_risk
    if not exposed["members"] or not baseline["members"] or not baseline["converters"]:
        return {"ratio": None, "low": None, "high": None, "method": None}
    value = exposed["rate"] / baseline["rate"]
    if all(g["converters"] >= KATZ_MIN and g["members"] - g["converters"] >= KATZ_MIN
           for g in (exposed, baseline)):
        ci = relative_risk(exposed["converters"], exposed["members"], baseline["converters"],
                           baseline["members"]).confidence_interval(LEVEL)
        low, high, method = float(ci.low), float(ci.high), "katz"
    else:
        each = math.sqrt(LEVEL)
        e = rate(exposed["converters"], exposed["members"], each)
        b = rate(baseline["converters"], baseline["members"], each)
        low = e["low"] / b["high"]
        high = e["high"] / b["low"] if b["low"] > 0 else math.inf
        method = "wilson_bounds"
    return {"ratio": value, "low": low, "high": high if math.isfinite(high) else None,
            "method": method}


def mean_value(values: np.ndarray) -> dict:
    """The mean of per-member values (0 for a member who did not convert) and its t
    interval."""
    from scipy.stats import t
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None}
    mean = float(values.mean())
    if n < 2 or values.std() == 0:
        return {"mean": mean, "low": mean, "high": mean}
    low, high = t.interval(LEVEL, n - 1, loc=mean, scale=values.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": float(low), "high": float(high)}


def cost(spend: float, treated: dict, incrementality: dict) -> dict:
    """Cost per acquisition and per incremental acquisition. Incremental converters are
    ``treated converters × (1 − 1 / incrementality)``; their interval follows the
    incrementality's (None where it does not exceed 1)."""
    out = {"spend": spend, "per_acquisition": (spend / treated["converters"]
                                               if treated["converters"] else None)}

    def per_incremental(r):
        if r is None or r <= 1.0 or not treated["converters"]:
            return None
        return spend / (treated["converters"] * (1.0 - 1.0 / r))
    out["per_incremental_acquisition"] = per_incremental(incrementality["ratio"])
    # a higher incrementality means a lower cost: the interval's ends swap
    out["per_incremental_low"] = per_incremental(incrementality["high"])
    out["per_incremental_high"] = per_incremental(incrementality["low"])
    return out


def measurement(members: dict[str, np.ndarray], converted: dict[str, np.ndarray],
                value: dict[str, np.ndarray], spend: float | None) -> dict:
    """The figures of the groups (``GROUPS``): for each, ``converted`` (bool per member)
    and ``value`` (per member). ``members`` holds their ids (only counted here)."""
    rates = {g: rate(int(converted[g].sum()), len(members[g])) for g in GROUPS}
    out = {"groups": rates,
           "segment_lift": ratio(rates["control"], rates["population"]),
           "incrementality": ratio(rates["treated"], rates["control"]),
           "value_per_member": {g: mean_value(value[g]) for g in ("treated", "control")}}
    if spend is not None:
        out["cost"] = cost(spend, rates["treated"], out["incrementality"])
    return out


# --------------------------------------------------------------------------- inputs


def read_conversions(path: str, key: bytes | None, since: dt.date, until: dt.date | None
                     ) -> tuple[dict[str, float], dict]:
    """Per (pseudonymised) user, the summed value of their conversions in [since, until],
    and the accounting of the file's rows."""
    if not os.path.exists(path):
        raise MeasureError(f"--conversions {path}: no such file")
    try:
        if path.endswith(".parquet"):
            table = pq.read_table(path)
        else:
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={"user_id": pa.string()}))
    except (pa.ArrowInvalid, OSError) as exc:
        raise MeasureError(f"--conversions {path}: cannot be read as "
                           f"{'Parquet' if path.endswith('.parquet') else 'CSV'}: {exc}") from None
    missing = [c for c in ("user_id", "time") if c not in table.column_names]
    if missing:
        raise MeasureError(f"--conversions {path}: no column {', '.join(missing)} (it has "
                           f"{', '.join(table.column_names)}); write user_id, time and "
                           f"optionally value")
    users = pc.cast(table.column("user_id"), pa.string()).to_pylist()
    days = _days(table.column("time"))
    values = (_values(table.column("value")) if "value" in table.column_names
              else [0.0] * table.num_rows)
    counts = {"rows": table.num_rows, "no_user": 0, "no_time": 0, "bad_value": 0,
              "before_since": 0, "after_until": 0, "counted": 0}
    per_user: dict[str, float] = {}
    for user, day, v in zip(users, days, values):
        if user is None or not user.strip():
            counts["no_user"] += 1
        elif day is None:
            counts["no_time"] += 1
        elif v is None:
            counts["bad_value"] += 1
        elif day < since:
            counts["before_since"] += 1
        elif until is not None and day > until:
            counts["after_until"] += 1
        else:
            counts["counted"] += 1
            user = user.strip() if key is None else pseudonym(key, user)
            per_user[user] = per_user.get(user, 0.0) + v
    return per_user, counts


def _days(column: pa.ChunkedArray) -> list[dt.date | None]:
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return [None if d is None else (d.date() if isinstance(d, dt.datetime) else d)
                for d in column.to_pylist()]
    out = []
    for text in pc.cast(column, pa.string()).to_pylist():
        try:
            out.append(None if not text else dt.date.fromisoformat(text.strip()[:10]))
        except ValueError:
            out.append(None)
    return out


def _values(column: pa.ChunkedArray) -> list[float | None]:
    out = []
    for v in column.to_pylist():
        try:
            number = 0.0 if v is None or (isinstance(v, str) and not v.strip()) else float(v)
        except (TypeError, ValueError):
            number = None
        out.append(number if number is None or math.isfinite(number) else None)
    return out


def read_members(folder: str) -> tuple[list[str], list[str]]:
    """The segment's treated members and its control group."""
    for name in (SEGMENT_FILE.format(format="parquet"), SEGMENT_FILE.format(format="csv")):
        if storage.exists(storage.join(folder, name)):
            treated = _ids(storage.join(folder, name))
            break
    else:
        raise MeasureError(f"no segment file in {folder}; run `metaprofile export` first")
    control_path = storage.join(folder, CONTROL_FILE)
    if not storage.exists(control_path):
        raise MeasureError(f"{control_path} does not exist: the segment was exported without "
                           f"a control group (lookalike.control_share: 0, or before it "
                           f"existed), so its lift cannot be measured; export it again with "
                           f"a control share above 0")
    return treated, _ids(control_path)


def _ids(uri: str) -> list[str]:
    data = storage.read_bytes(uri)
    if uri.endswith(".parquet"):
        table = pq.read_table(pa.BufferReader(data), columns=["user_id"])
    else:
        table = pacsv.read_csv(pa.BufferReader(data), convert_options=pacsv.ConvertOptions(
            column_types={"user_id": pa.string()}, include_columns=["user_id"]))
    return pc.cast(table.column("user_id"), pa.string()).to_pylist()


def read_population(config: PipelineConfig, ds: dt.date) -> list[str]:
    uri = catalog.partition(config, "embeddings", ds)
    if not storage.exists(f"{uri}/_SUCCESS"):
        raise MeasureError(f"no finished embeddings at {uri}: the population is the users "
                           f"that night scored; run `metaprofile embed --ds {ds}`")
    fs, path = storage.resolve(uri)
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["user_id"])
    return pc.cast(table.column("user_id"), pa.string()).to_pylist()


# --------------------------------------------------------------------------- report


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _x(x) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _money(x) -> str:
    return "–" if x is None else f"{x:,.2f}"


def format_report(document: dict) -> str:
    m = document["measurement"]
    lines = [f"# Campaign {document['campaign_id']}: segment of {document['ds']}",
             "",
             f"Conversions {document['since']} .. {document['until'] or 'the last'} from "
             f"`{document['conversions']['file']}` ({document['conversions']['counted']:,} "
             f"of {document['conversions']['rows']:,} rows counted).",
             "",
             "| group | members | converters | rate | 95 % interval |",
             "|---|---:|---:|---:|---|"]
    for g in GROUPS:
        r = m["groups"][g]
        lines.append(f"| {g} | {r['members']:,} | {r['converters']:,} | {_pct(r['rate'])} | "
                     f"{_pct(r['low'])} .. {_pct(r['high'])} |")
    lift, inc = m["segment_lift"], m["incrementality"]
    lines += ["",
              f"- **Segment's own lift** (control over population): {_x(lift['ratio'])} "
              f"[{_x(lift['low'])}, {_x(lift['high'])}]",
              f"- **Incrementality** (treated over control): {_x(inc['ratio'])} "
              f"[{_x(inc['low'])}, {_x(inc['high'])}]"]
    for g in ("treated", "control"):
        v = m["value_per_member"][g]
        lines.append(f"- Value per {g} member: {_money(v['mean'])} "
                     f"[{_money(v['low'])}, {_money(v['high'])}]")
    if "cost" in m:
        c = m["cost"]
        lines.append(f"- Spend {_money(c['spend'])}: cost per acquisition "
                     f"{_money(c['per_acquisition'])}; per incremental acquisition "
                     f"{_money(c['per_incremental_acquisition'])} "
                     f"[{_money(c['per_incremental_low'])}, "
                     f"{_money(c['per_incremental_high'])}]")
    outside = document["conversions"]["outside_population"]
    if outside:
        lines.append(f"- {outside:,} converting users were not in that night's population "
                     f"(new users, or ids that do not match); they count in no group.")
    return "\n".join(lines) + "\n"


def plot(document: dict) -> bytes:
    """The three groups' rates with their intervals, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = document["measurement"]["groups"]
    names = [g for g in GROUPS if groups[g]["rate"] is not None]
    rates = [100 * groups[g]["rate"] for g in names]
    errors = [[100 * (groups[g]["rate"] - groups[g]["low"]) for g in names],
              [100 * (groups[g]["high"] - groups[g]["rate"]) for g in names]]
    figure, axes = plt.subplots(figsize=(5, 3.2), dpi=100)
    axes.bar(names, rates, yerr=errors, capsize=6, color=["#1f77b4", "#999999", "#dddddd"][
        :len(names)], edgecolor="black")
    axes.set_ylabel("conversion rate (%)")
    axes.set_title(f"{document['campaign_id']}, segment of {document['ds']}", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the job


def run(config: PipelineConfig, ds: dt.date, campaign: str, conversions: str,
        since: dt.date | None = None, until: dt.date | None = None,
        spend: float | None = None) -> dict:
    try:
        folder = catalog.partition(config, "segments", ds, campaign)
    except catalog.UnsafePathError as exc:
        raise UsageError(f"--campaign: {exc}") from None
    if not storage.exists(f"{folder}/_SUCCESS"):
        raise MeasureError(f"no exported segment at {folder}; run `metaprofile export "
                           f"--ds {ds} --campaign {campaign}` first")
    since = since or ds + dt.timedelta(days=1)
    treated, control = read_members(folder)
    population = read_population(config, ds)
    key = load_pseudonym_key(config.pseudonymisation)
    per_user, counts = read_conversions(conversions, key, since, until)
    known = set(population)
    counts["outside_population"] = sum(1 for u in per_user if u not in known)
    counts["file"] = conversions
    members = {"treated": treated, "control": control, "population": population}
    converted = {g: np.array([u in per_user for u in ids], bool) for g, ids in members.items()}
    value = {g: np.array([per_user.get(u, 0.0) for u in ids], np.float64)
             for g, ids in members.items()}
    document = {"campaign_id": campaign, "ds": ds.isoformat(), "since": since.isoformat(),
                "until": until.isoformat() if until else None, "conversions": counts,
                "measurement": measurement(members, converted, value, spend)}
    out = catalog.campaign_path(catalog.daily_path(
        storage.join(config.storage.uri("reports"), "measure"), ds), campaign)
    storage.write_json(document, storage.join(out, "measure.json"))
    storage.write_bytes(format_report(document).encode(), storage.join(out, "report.md"))
    storage.write_bytes(plot(document), storage.join(out, "report.png"))
    document["report"] = storage.join(out, "report.md")
    return document


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", required=True, help="the campaign whose segment of "
                                                          "--ds is measured")
    parser.add_argument("--conversions", required=True, metavar="FILE",
                        help="CSV or Parquet of later conversions: user_id (raw id), time "
                             "(timestamp or YYYY-MM-DD), optionally value")
    parser.add_argument("--since", type=dt.date.fromisoformat, default=None,
                        help="first day of conversions counted (default: the day after --ds)")
    parser.add_argument("--until", type=dt.date.fromisoformat, default=None,
                        help="last day counted, inclusive (default: the last in the file)")
    parser.add_argument("--spend", type=float, default=None,
                        help="the campaign's spend, for the cost per (incremental) acquisition")


def _run(job: JobContext) -> dict:
    a = job.args
    if a.spend is not None and not (math.isfinite(a.spend) and a.spend >= 0):
        raise UsageError(f"--spend {a.spend}: give a spend of 0 or more")
    if a.since and a.until and a.until < a.since:
        raise UsageError(f"--until {a.until} is before --since {a.since}")
    document = run(job.config, job.ds, a.campaign, a.conversions, a.since, a.until, a.spend)
    print(format_report(document), file=sys.stderr)
    return document


JOB = Job(
    name="measure", run=_run, arguments=_arguments, uses_spark=False,
    writes=lambda args: False,
    description="Measure a campaign's exported segment against later conversions: the "
                "conversion rates of its treated members, its control group and the "
                "population, the segment's lift (control over population), the campaign's "
                "incrementality (treated over control), value per member and, with --spend, "
                "cost per acquisition, each with a 95 % interval. Writes measure.json, "
                "report.md and report.png under reports/measure/ds=<ds>/campaign=<id>/.")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
