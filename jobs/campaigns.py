"""Check each campaign's registry entry and seed list, and embed its support set.

    spark-submit jobs/campaigns.py --config conf/synthetic.yaml --ds 2026-06-30
    spark-submit jobs/campaigns.py --config conf/synthetic.yaml --ds 2026-06-30 --campaign cmp_x
    metaprofile campaigns --config conf/synthetic.yaml --ds 2026-06-30 --active

For every selected campaign (default: every *active* one) it writes
``supports/ds=<ds>/campaign=<id>/``, staged and renamed into place:

- ``support.json``: the verdict (``ok`` or ``failed`` with the reasons), the seed accounting,
  the support prototypes (the mean embedding of the usable positive seeds and, when the
  campaign lists explicit negatives, of those: the relation module's K-shot rule,
  ``model/relation.py``), and the scoring ``head``.

**The head** (``lookalike.head``). ``probe`` (default): a logistic regression on each user's
embedding beside its aggregate features, fitted on the campaign's support seeds (label 1)
against its explicit negatives and ``lookalike.background_users`` unlabelled users drawn by
a fixed hash (label 0; the campaign's own seeds never count as background), its strength
chosen by cross-validation. It is folded into one weight vector, so scoring stays one matrix
product per user. It is the evaluation's ``meta_profile_probe``, which uses more seeds than
the prototypes do (``docs/evaluation.md``). ``prototype``: the relation module f_θ scores
each user against the prototypes (zero-training). ``auto``: per campaign, one of the cosine
to the seeds' centroid and the same logistic regression on the aggregates alone (a DMP's
two heads), the probe and the prototypes, by cross-validation on the campaign's own support:
the best mean fold AUPR of the three simpler heads, unless the probe's is higher by more
than one standard error of its folds (``model/auto_head.py``). ``support.json`` and the
segment's manifest say which, and why.
- ``members/``: every seed with its role, so scoring and export can exclude them:
  ``support`` (used for the prototype), ``holdout`` (positive seeds kept out of the
  prototype to estimate the segment's precision), ``negative``, ``unknown`` (not in the
  snapshot), ``opted_out``, ``conflicting`` (listed as both 1 and 0).

**Checks, per campaign.** The registry row: a known status, exactly one of segment size or
score threshold, a threshold in (0, 1), excluded campaigns that exist. The seeds: labels
0/1, duplicates, users unknown to the snapshot, users on the opt-out list, and at least
``lookalike.min_seeds`` usable positive seeds. The campaign id itself: it becomes a folder
name, so it must keep the identifier rule (``schemas/identifiers.py``); a campaign whose id
breaks it gets no folder, only its failed verdict in the report. One campaign's problems
never stop the others; the job exits 3 when a selected campaign failed (so an Airflow mapped
task fails alone), after the others are written.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Sequence

if __package__ in (None, ""):  # spark-submit jobs/campaigns.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import catalog, storage
from common.errors import PipelineError
from common.privacy import pseudonymise_frame
from common.publish import Publisher
from jobs import runner
from jobs.runner import Job, JobContext, Outcome
from jobs.typed_read import InputTypeError, read_folder
from schemas.config import PipelineConfig
from schemas.contracts import (
    CAMPAIGN_REGISTRY,
    CAMPAIGN_SEEDS,
    CAMPAIGN_STATUSES,
    OPT_OUTS,
    spark_ddl,
)
from schemas.identifiers import refusals, shown
from schemas.manifests import (
    MANIFEST,
    SUPPORT,
    EmbeddingsManifest,
    SupportDocument,
    head_without_arrays,
)

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("metaprofile.campaigns")

HOLDOUT_BUCKETS = 1_000_000
BACKGROUND_SALT = "metaprofile-background"
PROBE_MAX_SEEDS = 20_000  # support (and negative) seeds a probe head is fitted on, at most
ROLES = ("support", "holdout", "negative", "unknown", "opted_out", "conflicting")
EXIT_CAMPAIGN_FAILED = 3


class CampaignError(PipelineError):
    """The run itself cannot go on (no embeddings, no registry)."""


# --------------------------------------------------------------------------- pure checks


def registry_problems(row: dict, known: set[str]) -> list[str]:
    """What is wrong with one registry row (empty when nothing)."""
    problems = []
    if row.get("status") not in CAMPAIGN_STATUSES:
        problems.append(f"status {row.get('status')!r} is not one of "
                        f"{', '.join(CAMPAIGN_STATUSES)}")
    size, threshold = row.get("segment_size"), row.get("score_threshold")
    if (size is None) == (threshold is None):
        problems.append("set exactly one of segment_size and score_threshold")
    if size is not None and size < 1:
        problems.append(f"segment_size {size} must be at least 1")
    if threshold is not None and not 0.0 < threshold < 1.0:
        problems.append(f"score_threshold {threshold} must lie in (0, 1)")
    unknown = sorted(set(row.get("exclude_campaigns") or ()) - known)
    if unknown:
        problems.append(f"exclude_campaigns names unknown campaign(s) {unknown}")
    if row.get("campaign_id") in set(row.get("exclude_campaigns") or ()):
        problems.append("exclude_campaigns names the campaign itself; take it out (a "
                        "campaign's own seeds are always left out of its segment)")
    return problems


def seed_problems(counts: dict, min_seeds: int) -> list[str]:
    """Seed-list problems that fail a campaign (the rest are only reported)."""
    if counts.get("usable_positives", 0) < min_seeds:
        return [f"{counts.get('usable_positives', 0)} usable positive seed(s) after removing "
                f"unknown, opted-out and conflicting users; lookalike.min_seeds is {min_seeds}"]
    return []


def holdout_size(usable: int, share: float, min_seeds: int) -> float:
    """The holdout share actually used: ``share`` unless it would leave too few supports."""
    return share if usable - int(usable * share) >= min_seeds and usable * share >= 1 else 0.0


# --------------------------------------------------------------------------- Spark side


def seed_roles(seeds, embeddings, opt_outs, holdout_share: dict[str, float]):
    """(campaign_id, user_id, role) for every distinct seed of the given campaigns."""
    from pyspark.sql import functions as F

    per_user = (seeds.groupBy("campaign_id", "user_id")
                .agg(F.min("label").alias("lo"), F.max("label").alias("hi")))
    known = embeddings.select("user_id", F.lit(True).alias("known"))
    opted = opt_outs.select("user_id", F.lit(True).alias("opted_out")).distinct()
    joined = (per_user.join(known, "user_id", "left").join(opted, "user_id", "left"))
    share = F.create_map(*[x for c, s in holdout_share.items() for x in (F.lit(c), F.lit(s))]) \
        if holdout_share else F.create_map().cast("map<string,double>")
    bucket = F.pmod(F.xxhash64(F.col("campaign_id"), F.col("user_id")), F.lit(HOLDOUT_BUCKETS))
    in_holdout = bucket < F.coalesce(share[F.col("campaign_id")], F.lit(0.0)) * HOLDOUT_BUCKETS
    role = (F.when(F.col("lo") != F.col("hi"), "conflicting")
            .when(F.col("opted_out").isNotNull(), "opted_out")
            .when(F.col("known").isNull(), "unknown")
            .when(F.col("hi") == 0, "negative")
            .when(in_holdout, "holdout")
            .otherwise("support"))
    return joined.select("campaign_id", "user_id", role.alias("role"))


def seed_accounting(seeds, roles, campaigns: list[str]) -> dict[str, dict]:
    """Per campaign: rows, repeated (user, label) rows, invalid labels and users per role."""
    from pyspark.sql import functions as F

    rows = {r["campaign_id"]: r.asDict() for r in seeds.groupBy("campaign_id").agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(~F.col("label").isin(0, 1), 1).otherwise(0)).alias("invalid_label"),
        F.countDistinct("user_id", "label").alias("distinct_pairs")).collect()}
    per_role = {}
    for r in roles.groupBy("campaign_id", "role").count().collect():
        per_role.setdefault(r["campaign_id"], {})[r["role"]] = r["count"]
    result = {}
    for c in campaigns:
        base = rows.get(c, {"rows": 0, "invalid_label": 0, "distinct_pairs": 0})
        counts = {role: per_role.get(c, {}).get(role, 0) for role in ROLES}
        result[c] = {"rows": base["rows"], "invalid_label": base["invalid_label"],
                     "duplicate_rows": base["rows"] - base["distinct_pairs"], **counts,
                     "usable_positives": counts["support"] + counts["holdout"]}
    return result


def prototypes(roles, embeddings) -> dict[tuple[str, str], list[float]]:
    """Mean embedding per (campaign, support|negative): aggregates only reach the driver."""
    from pyspark.sql import functions as F

    members = roles.where(F.col("role").isin("support", "negative"))
    exploded = (members.join(embeddings, "user_id", "inner")
                .select("campaign_id", "role", F.posexplode("embedding").alias("i", "x")))
    means = exploded.groupBy("campaign_id", "role", "i").agg(F.avg("x").alias("x")).collect()
    out: dict[tuple[str, str], dict[int, float]] = {}
    for r in means:
        out.setdefault((r["campaign_id"], r["role"]), {})[r["i"]] = r["x"]
    return {key: [v[i] for i in range(len(v))] for key, v in out.items()}


def probe_rows(rows) -> "np.ndarray":
    """``[n, E + F]`` float64: each collected row's embedding beside its aggregate features."""
    import numpy as np
    values = [list(r["embedding"]) + list(r["features"]) for r in rows]
    return np.asarray(values, np.float64).reshape(len(values), -1 if values else 0)


def background_users(embeddings, size: int) -> tuple["np.ndarray", "np.ndarray"]:
    """``size`` users drawn by a fixed hash of their id (the same users every night for the
    same snapshot): their ids and ``[n, E + F]`` rows, the probe's unlabelled negatives and
    the reference for its standardisation."""
    import numpy as np
    from pyspark.sql import functions as F
    order = F.xxhash64(F.lit(BACKGROUND_SALT), F.col("user_id"))
    rows = (embeddings.select("user_id", "embedding", "features")
            .orderBy(order, "user_id").limit(size).collect())
    return np.array([r["user_id"] for r in rows], dtype=object), probe_rows(rows)


def listed_background(seeds, ids) -> dict[str, set[str]]:
    """Per campaign, the background users its seed list names (any label): joined in Spark,
    so only those pairs reach the driver, not the seed lists."""
    from pyspark.sql import functions as F
    background = seeds.sparkSession.createDataFrame([(str(u),) for u in ids], "user_id STRING")
    listed: dict[str, set[str]] = {}
    for r in (seeds.select("campaign_id", "user_id").join(F.broadcast(background), "user_id")
              .distinct().collect()):
        listed.setdefault(r["campaign_id"], set()).add(r["user_id"])
    return listed


def probe_members(roles, embeddings) -> dict[tuple[str, str], "np.ndarray"]:
    """The support and negative seeds' ``[n, E + F]`` rows per (campaign, role), at most
    ``PROBE_MAX_SEEDS`` of each, drawn by a fixed hash when a list is longer."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    rank = F.row_number().over(Window.partitionBy("campaign_id", "role").orderBy(
        F.xxhash64(F.lit(BACKGROUND_SALT), F.col("user_id")), "user_id"))
    members = (roles.where(F.col("role").isin("support", "negative"))
               .join(embeddings.select("user_id", "embedding", "features"), "user_id")
               .withColumn("rank", rank).where(F.col("rank") <= PROBE_MAX_SEEDS))
    grouped: dict[tuple[str, str], list] = {}
    for r in members.collect():
        grouped.setdefault((r["campaign_id"], r["role"]), []).append(r)
    return {key: probe_rows(rows) for key, rows in grouped.items()}


def fit_probe(positives: "np.ndarray", negatives: "np.ndarray", background: "np.ndarray",
              listed: "np.ndarray", auto: tuple | None = None) -> tuple[dict | None, str | None]:
    """The campaign's probe head, or ``(None, why)`` when it cannot be fitted.

    The labels are the PU rule of the evaluation's ``seeds_pu`` setting: the support seeds
    are 1; the explicit negative seeds and the background users that are none of the
    campaign's seeds (``listed`` marks those that are) are 0. Columns are standardised with
    the background's statistics, and the logistic regression's strength is chosen by
    cross-validation (``model.baselines.fit_linear_head``, the evaluation's
    ``meta_profile_probe``). With ``auto`` (``(embedding_dim, relation weights)``,
    ``lookalike.head: auto``) the head is chosen among the seed centroid, the aggregates
    alone, the probe and the prototypes by cross-validation on the same support
    (``model.auto_head``, the evaluation's ``auto_head``)."""
    import numpy as np

    from model.baselines import fit_linear_head
    unlabelled = background[~listed]
    if not len(positives):
        return None, "no support seed has an embedding"
    if not len(negatives) and not len(unlabelled):
        return None, "no negative seed and no background user outside the seed list"
    support = np.vstack([positives, negatives, unlabelled])
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives) + len(unlabelled))]
    counts = {"positives": len(positives), "negatives": len(negatives),
              "background": len(unlabelled)}
    if auto is not None:
        from model.auto_head import fit_auto_head
        embedding_dim, relation = auto
        explicit = np.r_[np.zeros(len(positives)), np.ones(len(negatives)),
                         np.zeros(len(unlabelled))].astype(bool)
        return {**fit_auto_head(support, labels, background, embedding_dim, relation,
                                explicit), **counts}, None
    head = fit_linear_head(support, labels.astype(np.int8), background)
    return {"kind": "probe", **head.to_dict(), **counts}, None


def _read(spark, uri: str, contract, what: str):
    """A campaign input in its contract's types, whatever types its Parquet holds."""
    try:
        return read_folder(spark, uri, contract, f"storage.{what}")
    except InputTypeError as exc:
        raise CampaignError(str(exc)) from None


def read_seeds(spark, config: PipelineConfig):
    """The seed lists, ids pseudonymised like the snapshot's."""
    uri = config.storage.uri("campaign_seeds")
    if not storage.exists(uri):
        raise CampaignError(f"campaign_seeds: nothing at {uri}")
    seeds = _read(spark, uri, CAMPAIGN_SEEDS, "campaign_seeds")
    return pseudonymise_frame(seeds, config.pseudonymisation)


def read_opt_outs(spark, config: PipelineConfig):
    """The opt-out list (empty, with a warning, when there is none), ids pseudonymised."""
    uri = config.storage.uri("opt_outs")
    if not storage.exists(uri):
        log.warning("no opt-out list at %s; no user is excluded for opting out", uri)
        return spark.createDataFrame([], spark_ddl(OPT_OUTS))
    frame = _read(spark, uri, OPT_OUTS, "opt_outs")
    return pseudonymise_frame(frame, config.pseudonymisation)


def read_inputs(spark, config: PipelineConfig, ds: dt.date, publisher: Publisher):
    embeddings_uri = catalog.partition(config, "embeddings", ds)
    if not publisher.exists(f"{embeddings_uri}/_SUCCESS"):
        raise CampaignError(f"no finished embeddings at {embeddings_uri}; run "
                            f"`metaprofile embed --ds {ds}` first")
    embeddings = spark.read.parquet(embeddings_uri)
    if not storage.exists(config.storage.uri("campaign_registry")):
        raise CampaignError(f"campaign_registry: nothing at "
                            f"{config.storage.uri('campaign_registry')}")
    registry = _read(spark, config.storage.uri("campaign_registry"), CAMPAIGN_REGISTRY,
                     "campaign_registry")
    where = f"{embeddings_uri}/{MANIFEST}"
    manifest = EmbeddingsManifest.from_json(storage.read_bytes(where), where)
    return (embeddings, registry, read_seeds(spark, config), read_opt_outs(spark, config),
            manifest)


def run(spark, config: PipelineConfig, ds: dt.date, only: Sequence[str] = ()) -> dict:
    """Write ``supports/ds=<ds>/campaign=<id>`` for the selected campaigns; return verdicts."""
    from pyspark.sql import functions as F

    started = time.perf_counter()
    publisher = Publisher(spark)
    embeddings, registry, seeds, opt_outs, embedded = read_inputs(spark, config, ds, publisher)
    entries = {r["campaign_id"]: r.asDict() for r in registry.collect()}  # campaign metadata
    selected = list(only) or [c for c, r in entries.items() if r["status"] == "active"]
    verdicts = unsafe_verdicts(selected)  # ids no folder may be named after fail alone
    verdicts |= {c: {"campaign_id": c, "status": "failed",
                     "problems": ["not in the campaign registry"]}
                 for c in selected if c not in entries and report_key(c) not in verdicts}
    campaigns = sorted(c for c in selected if c in entries and report_key(c) not in verdicts)
    orphans = orphan_seeds(seeds, set(entries))
    seeds = seeds.where(F.col("campaign_id").isin(campaigns))
    valid_seeds = seeds.where(F.col("label").isin(0, 1))
    # First pass without a holdout tells how many usable positives each campaign has.
    first = seed_accounting(seeds, seed_roles(valid_seeds, embeddings, opt_outs, {}), campaigns)
    shares = {c: holdout_size(first[c]["usable_positives"], config.lookalike.holdout,
                              config.lookalike.min_seeds) for c in campaigns}
    roles = seed_roles(valid_seeds, embeddings, opt_outs, shares).cache()
    counts = seed_accounting(seeds, roles, campaigns)
    means = prototypes(roles, embeddings)
    heads = campaign_heads(config, roles, embeddings, embedded, seeds, campaigns)
    for c in campaigns:
        problems = registry_problems(entries[c], set(entries)) + seed_problems(
            counts[c], config.lookalike.min_seeds)
        if entries[c]["status"] != "active" and not problems:
            problems.append(f"status is {entries[c]['status']!r}, not active")
        verdicts[c] = {
            "campaign_id": c, "name": entries[c]["name"],
            "status": "failed" if problems else "ok", "problems": problems,
            "ds": ds.isoformat(), "model_version": embedded.model_version,
            "segment_size": entries[c]["segment_size"],
            "score_threshold": entries[c]["score_threshold"],
            "exclude_campaigns": list(entries[c]["exclude_campaigns"] or []),
            "seeds": counts[c], "holdout_share": shares[c],
            "prototype": means.get((c, "support")),
            "negative_prototype": means.get((c, "negative")),
            "head": heads.get(c, {"kind": "prototype"}),
        }
        log.info("campaign %s: %s%s", c, verdicts[c]["status"],
                 "" if not problems else " (" + "; ".join(problems) + ")")
    publish_supports(spark, config, ds, roles, verdicts, campaigns, publisher)
    roles.unpersist()
    return {"ds": ds.isoformat(),
            "campaigns": {c: _report(verdict) for c, verdict in verdicts.items()},
            "seeds_for_unknown_campaigns": orphans,
            "seconds": round(time.perf_counter() - started, 2)}


def report_key(campaign) -> str:
    """The key a campaign id has in the report (a null id becomes ``"null"``)."""
    return campaign if isinstance(campaign, str) else "null"


def unsafe_verdicts(selected) -> dict[str, dict]:
    """A failed verdict for every selected id that breaks the identifier rule: such a
    campaign gets no folder (and no Spark partition), only its line in the report."""
    unsafe = refusals(selected, "campaign_id", "correct the id in the campaign registry and "
                                               "in its seed list")
    for why in unsafe.values():
        log.error("a campaign failed: %s", why)
    return {report_key(c): {"campaign_id": report_key(c), "status": "failed",
                            "problems": [why]} for c, why in unsafe.items()}


def orphan_seeds(seeds, registered: set[str]) -> dict[str, int]:
    """Seed rows per campaign id that the registry does not know (or null): not used, but
    counted and warned about, so a mistyped id is seen rather than silently ignored."""
    from pyspark.sql import functions as F

    counts = {r["campaign_id"]: r["n"] for r in
              seeds.where(~F.col("campaign_id").isin(*sorted(registered))
                          | F.col("campaign_id").isNull())
              .groupBy("campaign_id").agg(F.count(F.lit(1)).alias("n")).collect()}
    if counts:
        log.warning("seed rows for campaigns not in the registry (not used): %s", counts)
    return {str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def campaign_heads(config: PipelineConfig, roles, embeddings, embedded: EmbeddingsManifest,
                   seeds, campaigns: list[str]) -> dict[str, dict]:
    """Each campaign's scoring head (``lookalike.head``): ``{"kind": "prototype"}``, or a
    fitted probe. A campaign whose probe cannot be fitted is scored with its prototype, and
    the head says why."""
    if config.lookalike.head not in ("probe", "auto") or not campaigns:
        return {}
    if "features" not in embeddings.columns:
        raise CampaignError(
            f"the embeddings of {embedded.ds} have no features column (written by an "
            f"older embed job): rerun `metaprofile embed --ds {embedded.ds}`, or set "
            f"lookalike.head=prototype")
    import numpy as np
    started = time.perf_counter()
    auto = None
    if config.lookalike.head == "auto":  # the prototypes' candidate needs f_θ (TensorFlow)
        from jobs.embed import resolve_model
        from model.artifact import relation_weights
        from schemas.input_spec import InputSpec
        auto = (embedded.embedding_dim, relation_weights(
            resolve_model(config, embedded.model), InputSpec.from_config(config)))
    ids, background = background_users(embeddings, config.lookalike.background_users)
    members = probe_members(roles, embeddings)
    listed = listed_background(seeds, ids)
    empty = np.zeros((0, background.shape[1]), np.float64)
    from common.explain import feature_names, top_features
    names = feature_names(embedded.embedding_dim, embedded.features,
                          {m.name: [ch.name for ch in m.channels] for m in config.modalities})
    heads = {}
    for i, c in enumerate(campaigns, 1):
        head, why = fit_probe(members.get((c, "support"), empty),
                              members.get((c, "negative"), empty), background,
                              np.isin(ids, list(listed.get(c, ()))), auto)
        heads[c] = head or {"kind": "prototype", "note": f"probe not fitted: {why}"}
        heads[c]["top_features"] = top_features(heads[c], background, names,
                                                embedded.embedding_dim)
        log.info("campaign %s (%d/%d): %s", c, i, len(campaigns), head_summary(heads[c]))
    log.info("fitted %d probe head(s) in %.1f s", sum(h["kind"] == "probe"
                                                      for h in heads.values()),
             time.perf_counter() - started)
    return heads


def head_summary(head: dict) -> str:
    """One line on a fitted head: its kind (and, for ``auto``, the choice and why), the
    probe's strength and cross-validated AUPR, and the support's size."""
    text = (f"auto chose {head['auto']['chosen']} ({head['auto']['why']})" if "auto" in head
            else f"{head['kind']} head")
    if head.get("note"):
        text += f" ({head['note']})"
    if head["kind"] == "probe":
        cv = head["cv_aupr"]
        text += (f", C={head['strength']:.3g}, cross-validated AUPR "
                 f"{cv if cv is None else round(cv, 3)}")
    if "positives" in head:
        text += f", {head['positives']} positives / {head['negatives'] + head['background']} " \
                "negatives"
    return text


def _report(verdict: dict) -> dict:
    """A verdict for the job's printed report: no prototypes, no head weights."""
    out = {k: v for k, v in verdict.items() if "prototype" not in k}
    if "head" in out:
        out["head"] = head_without_arrays(out["head"])
    return out


def publish_supports(spark, config: PipelineConfig, ds: dt.date, roles, verdicts: dict,
                     campaigns: list[str], publisher: Publisher) -> None:
    """One Spark write for every campaign's members, then one rename per campaign."""
    root = catalog.partition(config, "supports", ds)
    staging = publisher.staging(f"{root}/_run")
    try:
        (roles.repartition("campaign_id").sortWithinPartitions("role", "user_id")
         .write.partitionBy("campaign_id").mode("overwrite").parquet(staging))
        for c in campaigns:
            folder = catalog.spark_campaign_folder(staging, c)
            publisher.mkdirs(folder)
            target = catalog.campaign_path(staging, c)
            publisher.mkdirs(target)
            publisher.rename(folder, f"{target}/members")
            publisher.write_text(f"{target}/{SUPPORT}",
                                 SupportDocument.from_dict(verdicts[c], SUPPORT).to_json())
            publisher.publish(target, catalog.campaign_path(root, c))
    finally:
        publisher.cleanup()


def active_campaigns(config: PipelineConfig) -> list[str]:
    """Active campaign ids from the registry (pyarrow only: for scheduling, no Spark)."""
    import pyarrow.dataset as pads
    fs, path = storage.resolve(config.storage.uri("campaign_registry"))
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(
        columns=["campaign_id", "status"])
    # Ids that break the identifier rule are listed too: their mapped task fails alone,
    # with the reason, instead of the campaign silently missing from the night.
    return sorted(c for c, s in zip(table.column("campaign_id").to_pylist(),
                                    table.column("status").to_pylist())
                  if s == "active" and c is not None)


# --------------------------------------------------------------------------- entry point


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", action="append", default=[],
                        help="only this campaign (repeatable; default: every active one)")
    parser.add_argument("--active", "--list-active", dest="list_active", action="store_true",
                        help="print the active campaign ids as a JSON list and exit (no Spark)")


def _run(job: JobContext):
    if job.args.list_active:
        return Outcome(active_campaigns(job.config), compact=True)
    report = run(job.spark, job.config, job.ds, job.args.campaign)
    failed = [c for c, v in report["campaigns"].items() if v["status"] != "ok"]
    if failed:
        return Outcome(report, EXIT_CAMPAIGN_FAILED,
                       f"campaign(s) failed their checks: {', '.join(map(shown, failed))}")
    return report


JOB = Job(
    name="campaigns", run=_run, arguments=_arguments,
    writes=lambda args: not args.list_active,
    lock_key=lambda args: ",".join(sorted(args.campaign)) or None,
    description="Check campaign registry entries and seed lists, and write each campaign's "
                "support set (prototypes and seed roles) under supports/ds=<ds>/campaign=<id>. "
                f"Exits {EXIT_CAMPAIGN_FAILED} when a selected campaign failed its checks "
                "(after the others are written).")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
