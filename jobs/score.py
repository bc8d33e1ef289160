"""Score every user against every campaign with a support set, in one pass, and select each
campaign's segment.

    spark-submit jobs/score.py --config conf/synthetic.yaml --ds 2026-06-30

Inputs: ``embeddings/ds=<ds>`` (``jobs/embed.py``), the campaigns' ``supports/ds=<ds>``
(``jobs/campaigns.py``; only campaigns whose checks passed), the opt-out list, and the
model's relation module f_θ.

**One pass.** Executors read the embedding table once. Per Arrow batch they compute the
user half of f_θ's first layer once (``[B, H]``), add every campaign's support half
(``[N, H]``, computed once on the driver), and run only the small head per pair
(``model/scoring.py``, numpy; no TensorFlow on the executors). Adding a campaign adds one
row to the support half and one column to the head's output. A campaign with a probe head
(``lookalike.head``, fitted by ``jobs/campaigns.py``) is one column of a single matrix
product of each user's ``[embedding, features]`` row with every probe's weights.

**Selection, exact and bounded.** For a top-K campaign each task keeps its best
``K + excluded`` users, where ``excluded`` counts the users the campaign may never export
(its seeds, the seeds of the campaigns it excludes, opted-out users); for a threshold
campaign, every user at or above it. Exclusions are then removed with anti-joins and the
global top K taken with a window, so the result equals scoring everyone and sorting.

**Output.** ``scores/ds=<ds>/campaign=<id>/``: the selected users (``user_id``, ``score``,
``rank``), and ``scores/ds=<ds>/_stats.json``: per campaign, a 1,000-bin histogram of all
scores, the held-out seeds' scores against the segment's cut-off, and the counts. Staged and
renamed into place; a rerun replaces it with the same rows.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Iterator, Sequence

if __package__ in (None, ""):  # spark-submit jobs/score.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import catalog, storage
from common.errors import PipelineError
from common.publish import Publisher
from jobs import runner
from jobs.campaigns import read_opt_outs, read_seeds
from jobs.runner import Job, JobContext, Outcome
from jobs.spark import union_all
from schemas.config import PipelineConfig
from schemas.contracts import SCORES, SUPPORT_MEMBERS, spark_ddl
from schemas.identifiers import identifier_problem, refusal, refusals, shown
from schemas.manifests import (
    MANIFEST,
    SCORE_STATS,
    SUPPORT,
    EmbeddingsManifest,
    ScoreStats,
    SupportDocument,
)

log = logging.getLogger("metaprofile.score")

BINS = 1000
EXIT_CAMPAIGN_FAILED = 3
SCORED_DDL = "campaign_id STRING, user_id STRING, score DOUBLE, kind STRING, payload STRING"


class ScoreError(PipelineError):
    """Nothing to score, or inputs from different models."""


def read_supports(config: PipelineConfig, ds: dt.date, only: Sequence[str] = (),
                  rejected: dict | None = None) -> dict:
    """The ``support.json`` of every campaign under ``supports/ds=<ds>`` (or of ``only``).
    A ``campaign=`` folder whose id breaks the identifier rule is not read: it goes into
    ``rejected`` (id → reasons) when a dict is given."""
    rejected = {} if rejected is None else rejected
    import pyarrow.fs as pafs
    root = catalog.partition(config, "supports", ds)
    fs, path = storage.resolve(root)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise ScoreError(f"no supports at {root}; run `jobs/campaigns.py --ds {ds}` first")
    supports = {}
    for info in fs.get_file_info(pafs.FileSelector(path)):
        name = info.base_name
        if not name.startswith("campaign="):
            continue
        campaign = name.split("=", 1)[1]
        if only and campaign not in only:
            continue
        problem = identifier_problem(campaign)
        if problem is not None:  # never written by jobs/campaigns.py: someone put it there
            rejected[campaign] = [refusal(campaign, "campaign folder", problem,
                                          f"remove {name} from {root}")]
            log.error("campaign %s: not scored (%s)", shown(campaign), rejected[campaign][0])
            continue
        if storage.exists(f"{root}/{name}/_SUCCESS"):
            where = f"{root}/{name}/{SUPPORT}"
            supports[campaign] = SupportDocument.from_json(storage.read_bytes(where), where)
    return supports


# Users scored per block: the top-K bookkeeping is one Python step per (block, campaign with
# a hit), so larger blocks cost less; [4096, campaigns] float64 scores stay a few MiB.
CHUNK_ROWS = 4096


def scorer(heads, campaigns: list[dict], holdout: dict[str, list[int]], chunk_rows: int):
    """The ``mapInArrow`` function: embeddings → candidates, held-out scores, histograms.
    ``heads`` is a ``model.scoring.CampaignHeads`` with a column per campaign."""

    def apply(batches: Iterator) -> Iterator:
        import numpy as np
        import pyarrow as pa

        n = len(campaigns)
        keep = [c["keep"] for c in campaigns]  # top-K campaigns: K + excluded; else None
        # A user enters campaign j's candidates only when its score beats floor[j]: the
        # threshold, or (top-K) the K-th best score so far. One comparison over the whole
        # [b, N] block finds the few (campaign, user) pairs that need bookkeeping.
        floor = np.array([-np.inf if k is not None else c["score_threshold"]
                          for k, c in zip(keep, campaigns)], np.float64)
        best_scores = [np.empty(0) for _ in range(n)]
        best_users = [np.empty(0, dtype=object) for _ in range(n)]
        histograms = np.zeros(n * BINS, np.int64)
        offsets = np.arange(n, dtype=np.int64) * BINS
        held_ids, held_campaigns, held_scores = [], [], []
        held = np.array(list(holdout), dtype=object) if holdout else None
        for batch in batches:
            users = np.asarray(batch.column(0).to_pylist(), dtype=object)
            vectors = batch.column(1).flatten().to_numpy(zero_copy_only=False)
            vectors = vectors.reshape(len(users), -1).astype(np.float32)  # [B, E]
            features = None
            if heads.needs_features:
                features = batch.column(2).flatten().to_numpy(zero_copy_only=False)
                features = features.reshape(len(users), -1).astype(np.float32)  # [B, F]
            for start in range(0, len(users), chunk_rows):
                ids = users[start:start + chunk_rows]
                scores = heads.scores(vectors[start:start + chunk_rows], None if features is None
                                      else features[start:start + chunk_rows])  # [b, N]
                bins = np.minimum((scores * BINS).astype(np.int64), BINS - 1)  # [b, N]
                histograms += np.bincount((bins + offsets).ravel(), minlength=n * BINS)
                hits = scores >= floor  # [b, N]
                for j in np.flatnonzero(hits.any(axis=0)):
                    rows = np.flatnonzero(hits[:, j])
                    s = np.concatenate([best_scores[j], scores[rows, j]])
                    u = np.concatenate([best_users[j], ids[rows]])
                    if keep[j] is not None and len(s) >= keep[j]:
                        # The K-th best score; users tied with it stay, so the global
                        # (score desc, user_id asc) order decides ties exactly.
                        floor[j] = np.partition(s, len(s) - keep[j])[len(s) - keep[j]]
                        s, u = s[s >= floor[j]], u[s >= floor[j]]
                    best_scores[j], best_users[j] = s, u
                if held is not None:  # the few held-out users of this chunk, found at once
                    for i in np.flatnonzero(np.isin(ids, held)):
                        for j in holdout[ids[i]]:
                            held_ids.append(ids[i])
                            held_campaigns.append(campaigns[j]["campaign_id"])
                            held_scores.append(float(scores[i, j]))
        histograms = histograms.reshape(n, BINS)
        rows = {"campaign_id": [], "user_id": [], "score": [], "kind": [], "payload": []}

        def add(campaign, user, score, kind, payload=None):
            rows["campaign_id"].append(campaign)
            rows["user_id"].append(user)
            rows["score"].append(score)
            rows["kind"].append(kind)
            rows["payload"].append(payload)

        for j, c in enumerate(campaigns):
            cid = c["campaign_id"]
            for user, score in zip(best_users[j], best_scores[j]):
                add(cid, user, float(score), "candidate")
            add(cid, None, None, "histogram", json.dumps(histograms[j].tolist()))
        for user, cid, score in zip(held_ids, held_campaigns, held_scores):
            add(cid, user, score, "holdout")
        yield pa.RecordBatch.from_pydict(rows)

    return apply


def run(spark, config: PipelineConfig, ds: dt.date, model: str | None = None,
        only: Sequence[str] = (), chunk_rows: int = CHUNK_ROWS) -> dict:
    """Write ``scores/ds=<ds>`` for every campaign whose support passed; return the report."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from jobs.embed import resolve_model
    started = time.perf_counter()
    publisher = Publisher(spark)
    rejected = {c: [why] for c, why in  # ids that break the identifier rule fail alone
                refusals(only, "--campaign", "pass the id as registered").items()}
    wanted = [c for c in only if c not in rejected]
    supports = read_supports(config, ds, wanted, rejected) if wanted or not only else {}
    ready = {c: s for c, s in sorted(supports.items()) if s.ok}
    skipped = {c: list(s.problems) for c, s in supports.items() if not s.ok} | rejected
    if not ready:
        raise ScoreError(f"no campaign under supports/ds={ds} passed its checks "
                         f"({len(skipped)} failed); nothing to score" + "".join(
                             f"\n  - {reasons[0]}" for reasons in rejected.values()))
    embeddings_uri = catalog.partition(config, "embeddings", ds)
    where = f"{embeddings_uri}/{MANIFEST}"
    embedded = EmbeddingsManifest.from_json(storage.read_bytes(where), where)
    versions = {s.model_version for s in ready.values()} | {embedded.model_version}
    if len(versions) > 1:
        raise ScoreError(f"embeddings and supports come from different models {sorted(versions)}; "
                         f"rerun jobs/campaigns.py after jobs/embed.py")
    model_path = resolve_model(config, model or embedded.model)

    supports_root = catalog.partition(config, "supports", ds)
    # With the contract's schema: a failed campaign with no usable seed has no member file.
    members = union_all([spark.read.schema(spark_ddl(SUPPORT_MEMBERS, nullable=True))
                         .parquet(f"{catalog.campaign_path(supports_root, c)}/members")
                      .select(F.lit(c).alias("campaign_id"), "user_id", "role")
                      for c in supports])
    excluded = excluded_users(read_seeds(spark, config), read_opt_outs(spark, config),
                              ready).cache()
    excluded_counts = {r["campaign_id"]: r["n"] for r in
                       excluded.groupBy("campaign_id").agg(F.count(F.lit(1)).alias("n")).collect()}
    campaigns = []
    for c, s in ready.items():
        keep = None if s.segment_size is None else s.segment_size + excluded_counts.get(c, 0)
        campaigns.append({"campaign_id": c, "keep": keep, "score_threshold": s.score_threshold})
    index = {c["campaign_id"]: j for j, c in enumerate(campaigns)}
    heads = campaign_heads(ready, index, model_path, config, embedded.embedding_dim,
                           len(embedded.features))
    holdout: dict[str, list[int]] = {}
    for r in members.where(F.col("role") == "holdout").where(
            F.col("campaign_id").isin(list(index))).collect():  # held-out seeds only
        holdout.setdefault(r["user_id"], []).append(index[r["campaign_id"]])

    embeddings = spark.read.parquet(embeddings_uri)
    if heads.needs_features and "features" not in embeddings.columns:
        raise ScoreError(f"{embeddings_uri} has no features column, which the probe heads "
                         f"need: rerun `metaprofile embed --ds {ds}`, then jobs/campaigns.py")
    embeddings = embeddings.select("user_id", "embedding", *(
        ["features"] if heads.needs_features else []))
    scored = embeddings.mapInArrow(scorer(heads, campaigns, holdout, chunk_rows),
                                   SCORED_DDL).cache()
    candidates = (scored.where(F.col("kind") == "candidate")
                  .join(excluded, ["campaign_id", "user_id"], "left_anti"))
    ranked = candidates.withColumn("rank", F.row_number().over(
        Window.partitionBy("campaign_id").orderBy(F.desc("score"), F.asc("user_id"))))
    limits = spark.createDataFrame([(c["campaign_id"], ready[c["campaign_id"]].segment_size)
                                    for c in campaigns], "campaign_id STRING, size BIGINT")
    selected = (ranked.join(F.broadcast(limits), "campaign_id")
                .where(F.col("size").isNull() | (F.col("rank") <= F.col("size")))
                .select("campaign_id", *SCORES.names))

    root = catalog.partition(config, "scores", ds)
    staging = publisher.staging(root)
    try:
        (selected.repartition("campaign_id").sortWithinPartitions("rank")
         .write.partitionBy("campaign_id").mode("overwrite").parquet(staging))
        stats = campaign_stats(spark, scored, staging, ready, excluded_counts,
                               embedded.users)
        for c in ready:
            folder = catalog.spark_campaign_folder(staging, c)
            publisher.mkdirs(folder)
            publisher.rename(folder, catalog.campaign_path(staging, c))
        document = ScoreStats(ds=ds.isoformat(), model_version=embedded.model_version,
                              users_scored=embedded.users, campaigns=stats,
                              failed_campaigns=skipped)
        publisher.write_text(f"{staging}/{SCORE_STATS}", document.to_json())
        publisher.publish(staging, root)
    finally:
        scored.unpersist()
        excluded.unpersist()
        publisher.cleanup()
    seconds = time.perf_counter() - started
    return {"ds": ds.isoformat(), "scores": root, "campaigns": len(ready),
            "failed_campaigns": skipped, "rejected_campaigns": sorted(rejected),
            "users": embedded.users,
            "selected": {c: s["selected"] for c, s in stats.items()},
            "seconds": round(seconds, 2)}


def campaign_heads(ready: dict, index: dict[str, int], model_path: str,
                   config: PipelineConfig, embedding_dim: int, feature_count: int):
    """The ``CampaignHeads`` of the campaigns in ``index`` order, from their supports: probe
    weights as they are (one per embedding dimension and feature of the embedding table),
    centroids over the features, prototypes through f_θ (TensorFlow is loaded only when a
    campaign has a prototype head)."""
    import numpy as np

    from model.scoring import CampaignHeads
    row_width = embedding_dim + feature_count
    kinds = {c: ready[c].head["kind"] for c in index}
    unknown = sorted({k for k in kinds.values() if k not in ("probe", "prototype", "centroid")})
    if unknown:
        raise ScoreError(f"supports with unknown head kind(s) {unknown}; rerun "
                         f"jobs/campaigns.py with this version")
    prototypes = [c for c in index if kinds[c] == "prototype"]
    probes = [c for c in index if kinds[c] == "probe"]
    parts = {}
    if prototypes:
        weights = relation_weights(model_path, config)
        has_negatives = np.array([ready[c].negative_prototype is not None
                                  for c in prototypes])
        parts = {"relation": weights,
                 "prototype_columns": np.array([index[c] for c in prototypes], np.int64),
                 "positive_part": weights.support_part(np.array(
                     [ready[c].prototype for c in prototypes], np.float32)),
                 "negative_part": weights.support_part(np.array(
                     [ready[c].negative_prototype or ready[c].prototype
                      for c in prototypes], np.float32)) if has_negatives.any() else None,
                 "has_negatives": has_negatives}
    for c in probes:
        if len(ready[c].head["weights"]) != row_width:
            raise ScoreError(f"campaign {c}: its probe has {len(ready[c].head['weights'])} "
                             f"weights but the embedding table's rows have {row_width} "
                             f"values; rerun jobs/campaigns.py on these embeddings")
    if probes:
        parts |= {"probe_columns": np.array([index[c] for c in probes], np.int64),
                  "probe_weights": np.array([ready[c].head["weights"] for c in probes],
                                            np.float64).T,
                  "probe_bias": np.array([ready[c].head["bias"] for c in probes],
                                         np.float64)}
    centroids = [c for c in index if kinds[c] == "centroid"]
    for c in centroids:
        if len(ready[c].head["centroid"]) != feature_count:
            raise ScoreError(f"campaign {c}: its centroid has {len(ready[c].head['centroid'])} "
                             f"values but the embedding table has {feature_count} features; "
                             f"rerun jobs/campaigns.py on these embeddings")
    if centroids:
        parts |= {"centroid_columns": np.array([index[c] for c in centroids], np.int64),
                  "centroid_heads": tuple(ready[c].head for c in centroids)}
    return CampaignHeads(columns=len(index), **parts)


def relation_weights(model_path: str, config: PipelineConfig):
    """f_θ's weights as numpy, from the artifact (TensorFlow on the driver only)."""
    from model.artifact import relation_weights as of_artifact
    from schemas.input_spec import InputSpec
    return of_artifact(model_path, InputSpec.from_config(config))


def excluded_users(seeds, opt_outs, ready: dict):
    """(campaign_id, user_id) pairs a campaign may never export: every user in its seed list
    or in the seed lists of the campaigns it excludes (whatever their label or status), and
    every opted-out user."""
    spark = seeds.sparkSession
    pairs = [(c, c) for c in ready]
    pairs += [(c, other) for c, s in ready.items() for other in s.exclude_campaigns]
    sources = spark.createDataFrame(pairs, "campaign_id STRING, source STRING")
    seeds = (sources.join(seeds.withColumnRenamed("campaign_id", "source"), "source")
             .select("campaign_id", "user_id"))
    opted = (spark.createDataFrame([(c,) for c in ready], "campaign_id STRING")
             .crossJoin(opt_outs.select("user_id").distinct()))
    return seeds.unionByName(opted).distinct()


def campaign_stats(spark, scored, selected_uri: str, ready: dict, excluded_counts: dict,
                   users: int) -> dict:
    """Counts, score histogram and held-out seed recall per campaign (aggregates only)."""
    import numpy as np
    from pyspark.sql import functions as F

    histograms = {}
    for r in scored.where(F.col("kind") == "histogram").select("campaign_id", "payload").collect():
        h = np.array(json.loads(r["payload"]), np.int64)
        histograms[r["campaign_id"]] = histograms.get(r["campaign_id"], 0) + h
    written = spark.read.schema("user_id STRING, score DOUBLE, rank INT, campaign_id STRING")
    selected = {r["campaign_id"]: r.asDict() for r in written.parquet(selected_uri)
                .groupBy("campaign_id").agg(F.count(F.lit(1)).alias("n"),
                                            F.min("score").alias("cutoff")).collect()}
    held = {}
    for r in (scored.where(F.col("kind") == "holdout").groupBy("campaign_id")
              .agg(F.collect_list("score").alias("scores")).collect()):
        held[r["campaign_id"]] = r["scores"]
    stats = {}
    for c, s in ready.items():
        n = selected.get(c, {}).get("n", 0)
        cutoff = selected.get(c, {}).get("cutoff")
        eligible = users - excluded_counts.get(c, 0)
        scores = held.get(c, [])
        recall = (sum(x >= cutoff for x in scores) / len(scores)
                  if scores and cutoff is not None else None)
        reach = n / eligible if eligible > 0 else None
        prevalence = s.seeds["usable_positives"] / max(users, 1)
        lift = recall / reach if recall is not None and reach else None
        stats[c] = {
            "selected": n, "eligible_users": eligible, "excluded_users": excluded_counts.get(c, 0),
            "cutoff_score": cutoff, "reach": reach,
            "histogram": (histograms.get(c, np.zeros(BINS, np.int64))).tolist(),
            "holdout_seeds": len(scores), "holdout_recall": recall, "lift": lift,
            "holdout_scores": sorted(round(float(x), 6) for x in scores),
            "estimated_precision": None if lift is None else min(1.0, lift * prevalence),
            "seed_prevalence": prevalence,
        }
    return stats



def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", action="append", default=[],
                        help="only these campaigns (repeatable; default: all with a support)")
    parser.add_argument("--model", default=None,
                        help="model artifact (default: the one the embeddings were made with)")
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS,
                        help="users per numpy block in an executor (default: %(default)s)")


def _run(job: JobContext):
    report = run(job.spark, job.config, job.ds, job.args.model, job.args.campaign,
                 job.args.chunk_rows)
    if report["rejected_campaigns"]:
        return Outcome(report, EXIT_CAMPAIGN_FAILED, "campaign(s) not scored: " + ", ".join(
            map(shown, report["rejected_campaigns"])))
    return report


JOB = Job(
    name="score", arguments=_arguments, run=_run,
    description="Score every user of embeddings/ds=<ds> against every campaign whose support "
                "set passed its checks, in one pass, and select each campaign's segment (top-K "
                "or threshold, exclusions removed) under scores/ds=<ds>. Exits "
                f"{EXIT_CAMPAIGN_FAILED} when a campaign id or support folder breaks the "
                "identifier rule (the others are scored); campaigns that failed their checks "
                "earlier are listed under failed_campaigns.")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
