"""Export each scored campaign's lookalike segment: CSV and Parquet files plus a manifest.

    spark-submit jobs/export.py --config conf/synthetic.yaml --ds 2026-06-30
    metaprofile export --config conf/synthetic.yaml --ds 2026-06-30 --campaign cmp_x

Reads ``scores/ds=<ds>`` (``jobs/score.py``) and writes, per campaign,
``segments/ds=<ds>/campaign=<id>/``:

- ``segment.csv`` and/or ``segment.parquet`` (``lookalike.formats``): ``user_id``
  (pseudonymised when the pipeline pseudonymises), ``score``, ``rank``: the members to
  reach, the control group left out;
- ``control.csv``: the segment's control group, the same columns. Of the users the score
  selects, a user is in the campaign's control group when a hash of the campaign and the
  user falls below ``lookalike.control_share`` (:func:`control_mask`), so the same user is
  in the same campaign's group every night. Control members are never in the segment
  files: they are the baseline ``metaprofile measure`` compares the reached members with.
  ``rank`` stays the rank in the whole selection, so ranks in the two files interleave;
- ``why.png``: the reach/precision curve (held-out recall and estimated precision against
  reach, the segment's reach marked) beside the head's most influential features
  (``common/explain.py``);
- ``_manifest.json``: campaign, ``ds``, model version, counts (selected: the segment
  files' members; control; eligible, excluded, seeds by role), the reach curve, the head
  (with its ``top_features``), score quantiles of the segment and of all scored users, the
  held-out seeds' recall at this reach, the lift over a random segment of the same size, and the
  precision estimate derived from them (see :func:`precision_estimate`), plus each file's
  SHA-256.

Before anything is written the segment is checked once more, straight from the input lists,
against the campaign's seeds, the seeds of the campaigns it excludes and the opt-out list; a violation fails that campaign
and nothing of it is exported. Each campaign's folder is replaced whole (staged, renamed,
``_SUCCESS``), so a rerun gives the same files. The files are small enough for one process:
this job uses pyarrow, not Spark.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import logging
import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # spark-submit jobs/export.py: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from common import catalog, storage
from common.errors import PipelineError
from common.explain import reach_curve, why_png
from common.privacy import load_pseudonym_key, pseudonym
from common.publish import Publisher
from jobs import runner
from jobs.runner import Job, JobContext, Outcome
from schemas.config import PipelineConfig
from schemas.contracts import CONTROL_FILE, SEGMENT, SEGMENT_FILE, check_table
from schemas.identifiers import refusals, shown
from schemas.manifests import SCORE_STATS, SUPPORT, ScoreStats, SupportDocument

log = logging.getLogger("metaprofile.export")

QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
EXIT_CAMPAIGN_FAILED = 3
CONTROL_SALT = "metaprofile-control-v1"  # changing it reassigns every control group
WHY_FILE = "why.png"


class ExportError(PipelineError):
    """A campaign whose segment must not be exported."""


def histogram_quantiles(histogram: Sequence[int], quantiles=QUANTILES) -> dict[str, float]:
    """Quantiles of scores in [0, 1] from a fixed-width histogram (bin midpoints)."""
    counts = np.asarray(histogram, np.float64)
    total = counts.sum()
    if total == 0:
        return {}
    cumulative = np.cumsum(counts) / total
    width = 1.0 / len(counts)
    return {f"q{round(q * 100):02d}": float((np.searchsorted(cumulative, q) + 0.5) * width)
            for q in quantiles}


def exact_quantiles(scores: np.ndarray, quantiles=QUANTILES) -> dict[str, float]:
    if scores.size == 0:
        return {}
    return {f"q{round(q * 100):02d}": float(np.quantile(scores, q)) for q in quantiles}


def precision_estimate(stats: dict) -> dict:
    """What the held-out seeds say about the segment.

    ``holdout_recall`` is the share of held-out seeds (positive seeds kept out of the support
    set) that score at or above the segment's cut-off; ``reach`` is the segment's share of
    the eligible users, which is the recall a random segment of that size would have. Their
    ratio is the lift. Assuming the eligible users hold lookalikes at the seeds' prevalence
    (usable seeds / scored users), the segment's precision is about ``lift × prevalence``.
    It is an estimate for comparing nights and campaigns, not a measured precision.
    """
    return {"holdout_seeds": stats["holdout_seeds"], "holdout_recall": stats["holdout_recall"],
            "reach": stats["reach"], "lift_over_random": stats["lift"],
            "seed_prevalence": stats["seed_prevalence"],
            "estimated_precision": stats["estimated_precision"]}


def control_mask(campaign: str, users: Sequence, share: float) -> np.ndarray:
    """``[n]`` True for the users in ``campaign``'s control group: those whose SHA-256 of
    (salt, campaign, user id), its first 8 bytes read as a fraction of 2^64, is below
    ``share``. It depends on nothing else, so a user keeps their group from night to night
    whoever else is selected, and each campaign draws its own group."""
    if share <= 0:
        return np.zeros(len(users), bool)
    limit = share * 2.0 ** 64
    return np.fromiter(
        (int.from_bytes(hashlib.sha256(f"{CONTROL_SALT}\x1f{campaign}\x1f{u}".encode())
                        .digest()[:8], "big") < limit for u in users), bool, len(users))


def forbidden_users(config: PipelineConfig, campaign: str, excludes: list[str]) -> set:
    """Every user in the seed lists of the campaign and of the ones it excludes, and every
    opted-out user (ids pseudonymised like the segment's)."""
    key = load_pseudonym_key(config.pseudonymisation)
    seeds = _read(config.storage.uri("campaign_seeds"), ["campaign_id", "user_id"])
    listed = set([campaign, *excludes])
    users = {u for c, u in zip(seeds.column("campaign_id").to_pylist(),
                               seeds.column("user_id").to_pylist()) if c in listed}
    opt_outs = config.storage.uri("opt_outs")
    if storage.exists(opt_outs):
        users.update(_read(opt_outs, ["user_id"]).column("user_id").to_pylist())
    return users if key is None else {pseudonym(key, u) for u in users}


def export_campaign(config: PipelineConfig, ds: dt.date, campaign: str, stats: dict,
                    support: SupportDocument, model_version: str) -> dict:
    scores_uri = catalog.partition(config, "scores", ds, campaign)
    segment = _read(scores_uri, SEGMENT.names).sort_by("rank")
    try:
        check_table(segment, SEGMENT)
    except ValueError as exc:
        raise ExportError(f"campaign {campaign}: {scores_uri} breaks the scores contract: "
                          f"{exc}; rerun jobs/score.py") from None
    forbidden = forbidden_users(config, campaign, list(support.exclude_campaigns))
    leaked = [u for u in segment.column("user_id").to_pylist() if u in forbidden]
    if leaked:
        raise ExportError(f"campaign {campaign}: {len(leaked)} excluded user(s) reached the "
                          f"segment (first {leaked[0]}); nothing exported")
    share = config.lookalike.control_share
    in_control = control_mask(campaign, segment.column("user_id").to_pylist(), share)
    control = segment.filter(pa.array(in_control))
    segment = segment.filter(pa.array(~in_control))
    final = catalog.partition(config, "segments", ds, campaign)
    files = {}
    outputs = [(SEGMENT_FILE.format(format=fmt), segment) for fmt in config.lookalike.formats]
    if share > 0:
        outputs.append((CONTROL_FILE, control))
    curve = reach_curve(stats["histogram"], stats.get("holdout_scores", ()),
                        stats["seed_prevalence"])
    features = support.head.get("top_features", [])
    with Publisher().staged(final) as directory:
        for name, table in outputs:
            buffer = io.BytesIO()
            if name.endswith(".csv"):
                pacsv.write_csv(table, buffer)
            else:
                pq.write_table(table, buffer)
            files[name] = _write(buffer.getvalue(), directory, name)
        files[WHY_FILE] = _write(why_png(campaign, curve, features, stats["reach"]),
                                 directory, WHY_FILE)
        manifest = {
            "campaign_id": campaign, "name": support.name, "ds": ds.isoformat(),
            "model_version": model_version,
            "selection": ({"segment_size": support.segment_size}
                          if support.segment_size is not None
                          else {"score_threshold": support.score_threshold}),
            "counts": {"selected": segment.num_rows, "control": control.num_rows,
                       "eligible_users": stats["eligible_users"],
                       "excluded_users": stats["excluded_users"], "seeds": support.seeds},
            "control": {"share": share, "salt": CONTROL_SALT,
                        "file": CONTROL_FILE if share > 0 else None},
            "score_quantiles": {
                "segment": exact_quantiles(segment.column("score").to_numpy()),
                "all_users": histogram_quantiles(stats["histogram"])},
            "precision": precision_estimate(stats),
            "reach_curve": curve,
            # the scoring head (for lookalike.head: auto, which one it chose and why)
            "head": support.head_summary,
            "pseudonymised_ids": config.pseudonymisation.enabled,
            "files": files,
        }
        storage.write_json(manifest, storage.join(directory, "_manifest.json"))
    return {"campaign_id": campaign, "segment": final, "selected": segment.num_rows,
            "control": control.num_rows, "estimated_precision": stats["estimated_precision"],
            "lift": stats["lift"]}


def run(config: PipelineConfig, ds: dt.date, only: Sequence[str] = ()) -> dict:
    scores_root = catalog.partition(config, "scores", ds)
    if not storage.exists(f"{scores_root}/_SUCCESS"):
        raise ExportError(f"no finished scores at {scores_root}; run jobs/score.py first")
    where = f"{scores_root}/{SCORE_STATS}"
    document = ScoreStats.from_json(storage.read_bytes(where), where)
    supports_root = catalog.partition(config, "supports", ds)
    exported, failed = {}, dict(document.failed_campaigns)
    unsafe = refusals(only, "--campaign", "pass the id as registered")
    failed |= {c: [why] for c, why in unsafe.items()}
    rejected = list(unsafe)  # campaigns that failed here, not upstream
    for campaign, stats in sorted(document.campaigns.items()):
        if only and campaign not in only:
            continue
        try:
            where = f"{catalog.campaign_path(supports_root, campaign)}/{SUPPORT}"
            support = SupportDocument.from_json(storage.read_bytes(where), where)
            exported[campaign] = export_campaign(config, ds, campaign, stats, support,
                                                 document.model_version)
            log.info("campaign %s: %d users exported, %d in its control group", campaign,
                     exported[campaign]["selected"], exported[campaign]["control"])
        except (ExportError, catalog.UnsafePathError) as exc:
            log.error("campaign %s: not exported (%s)", shown(campaign), exc)
            failed[campaign] = [str(exc)]
            rejected.append(campaign)
    return {"ds": ds.isoformat(), "exported": exported, "failed": failed,
            "failed_here": sorted(rejected)}


def _write(data: bytes, directory: str, name: str) -> dict:
    storage.write_bytes(data, storage.join(directory, name))
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _read(uri: str, columns: list[str]) -> pa.Table:
    fs, path = storage.resolve(uri)
    return pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=columns)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", action="append", default=[],
                        help="only these campaigns (repeatable; default: every scored one)")


def _run(job: JobContext):
    report = run(job.config, job.ds, job.args.campaign)
    if report["failed_here"] or report["failed"] and not report["exported"]:
        return Outcome(report, EXIT_CAMPAIGN_FAILED, "campaign(s) not exported: " + ", ".join(
            map(shown, report["failed_here"] or report["failed"])))
    return report


JOB = Job(
    name="export", run=_run, arguments=_arguments, uses_spark=False,
    description="Write each scored campaign's segment (CSV/Parquet) and manifest under "
                "segments/ds=<ds>/campaign=<id>, after checking it against the exclusions. "
                f"Exits {EXIT_CAMPAIGN_FAILED} when a campaign failed here (the others are "
                "exported), or when none was exported.")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    return runner.main(JOB, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
