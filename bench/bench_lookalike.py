"""Benchmark: nightly embedding and one-pass scoring.

    .work/venv-jobs/bin/python bench/bench_lookalike.py                       # both parts
    .work/venv-jobs/bin/python bench/bench_lookalike.py --part embed --embed-users 20000
    .work/venv-jobs/bin/python bench/bench_lookalike.py --part score --users 1000000
    .work/venv-jobs/bin/python bench/bench_lookalike.py --part pairs

**Embed**: ``jobs/embed.py`` on Spark ``local[2]`` over the snapshot of
``--embed-users`` synthetic users (default 20,000: ``bench/bench_night.py``'s world, built
on first use and kept), with the demo-size model (width 0.125, 64-d) and the full-size one
(untrained; ``--widths`` picks), in users per second, next to bare ``predict_on_batch`` on
the same users, densified outside the timing (target: the job reaches at least 80% of
it); and the time that densifying and the aggregate features take in one process, the
job's other per-user work.

**Score**: ``--users`` random user embeddings (default 1,000,000, dimension 512 as the full
model's, with 78 aggregate features) and 1 or 100 campaigns, scored with ``jobs/score.py``'s
executor function and selection on Spark ``local[2]``, once with prototype heads (random
prototypes through f_θ) and once with probe heads (random folded logistic-regression
weights; ``--heads`` picks): seconds for 1 campaign and for 100 (target: 100 cost at most
1.5× one), and the peak resident memory of the Python workers and of the JVM while it runs.

**Pairs**: the prototype head's per-pair work in one process (50,000 users x 100 campaigns,
H = 256, the full-size f_θ): ``RelationWeights.pair_logits`` (cache-sized blocks) against
materialising ``[block, campaigns, H]`` as the scorer did before, both in pair-elements per
second (one element: an add, a ReLU and a multiply-add), next to the multiply-adds per
second of a float32 matrix product on the same cores: how far the kernel is from the
arithmetic limit.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_night import Poller  # noqa: E402
from common.workdir import PROJECT_ROOT, configure_environment  # noqa: E402

BENCH = PROJECT_ROOT / ".work" / "bench"
CONFIG = PROJECT_ROOT / "conf" / "synthetic.yaml"


class PeakMemory(Poller):
    """Polls /proc for the peak RSS of Spark's Python workers and of the JVM."""

    def __init__(self):
        super().__init__()
        self.python_mib = 0.0
        self.jvm_mib = 0.0

    def poll(self) -> None:
        me = os.getpid()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            rss = next((int(line.split()[1]) / 1024 for line in status.splitlines()
                        if line.startswith("VmRSS:")), 0.0)
            if b"pyspark.daemon" in cmd:  # the daemon and the workers it forks
                self.python_mib = max(self.python_mib, rss)
            elif b"java" in cmd and b"spark" in cmd:
                self.jvm_mib = max(self.jvm_mib, rss)


def bench_embed(users: int, widths: tuple[str, ...]) -> None:
    """``jobs/embed.py`` against bare ``predict`` on the same users, per model size."""
    import numpy as np

    from bench.bench_night import setup
    from common import registry
    from common.publish import Publisher
    from jobs import embed
    from jobs.spark import build_session
    from model.artifact import load_artifact
    from model.baselines import aggregate_features
    from model.embedding import cell_totals, dense_batch
    from model.network import select_inputs
    from schemas.config import load_config
    from schemas.input_spec import InputSpec

    root = BENCH / f"night-{users}"
    log_dir = BENCH / f"night-{users}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    ds, _ = setup(root, users, log_dir)  # the night benchmark's world, reused when kept
    config = load_config(CONFIG, overrides=[f"storage.root={root}"])
    spec = InputSpec.from_config(config)
    spark = build_session("metaprofile-bench-embed", master="local[2]")
    rows = embed.embedding_inputs(spark, config, ds, Publisher(spark)).toArrow()
    for width in widths:
        model = (fresh_full_size_model(config) if width == "full"
                 else str(root / "bench-models" / "demo-size-untrained"))
        info = registry.describe_model(model, config)
        with PeakMemory() as peak:
            report = embed.run(spark, config, ds, model=model)
        print(f"[embed] {width}-size model: jobs/embed.py on local[2]: {report['users']:,} "
              f"users in {report['seconds']:.1f} s = {report['users_per_second']:,.1f} users/s "
              f"(dim {report['embedding_dim']}); peak RSS Python worker "
              f"{peak.python_mib:,.0f} MiB, JVM {peak.jvm_mib:,.0f} MiB", flush=True)
        # Bare predict: the same users, densified batch by batch (not timed), then only
        # the model's predict_on_batch timed, at the job's batch size.
        artifact = load_artifact(model, spec)
        vocabularies = {c.name: list(c.vocabulary) for c in config.demographics.categorical}
        batch_rows, spent, densifying = 256, 0.0, 0.0
        for start in range(0, rows.num_rows, batch_rows):
            began = time.perf_counter()
            chunk = rows.slice(start, batch_rows)
            dense = dense_batch(chunk, spec, config.value_transform, info["normalisation"],
                                vocabularies)
            aggregate_features(dense, spec, cell_totals(chunk, spec, config.value_transform))
            densifying += time.perf_counter() - began
            inputs = select_inputs(dense, spec)
            if start == 0:
                artifact.model.profile.predict_on_batch(inputs)  # trace outside the timing
            started = time.perf_counter()
            np.asarray(artifact.model.profile.predict_on_batch(inputs))
            spent += time.perf_counter() - started
        rate = rows.num_rows / spent
        print(f"[embed] {width}-size model: bare predict_on_batch on the same "
              f"{rows.num_rows:,} users (batches of {batch_rows}, in one process that "
              f"may use both cores): {rate:,.1f} users/s; the job reaches "
              f"{report['users_per_second'] / rate:.0%} of it; densifying them and their "
              f"aggregate features (the job's other per-user work) took {densifying:.1f} s = "
              f"{rows.num_rows / densifying:,.0f} users/s in one process", flush=True)
    spark.stop()


def fresh_full_size_model(config) -> str:
    import keras

    from model.artifact import save_artifact
    from model.network import build_meta_model
    from model.settings import ModelConfig
    from schemas.input_spec import InputSpec
    from schemas.tfrecord_spec import spec_document
    root = BENCH / "models"
    path = root / "full-size-untrained"
    if (path / "_SUCCESS").exists():
        return str(path)
    keras.utils.set_random_seed(0)
    spec = InputSpec.from_config(config)
    cfg = ModelConfig()
    return save_artifact(build_meta_model(spec, cfg), cfg, spec, spec_document(config), {},
                         "0" * 64, str(root), version="full-size-untrained",
                         normalisation={})


def bench_score(users: int, dim: int, campaign_counts: list[int],
                heads: tuple[str, ...] = ("prototype", "probe"), features_dim: int = 78
                ) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from jobs.score import CHUNK_ROWS, SCORED_DDL, scorer
    from jobs.spark import build_session
    from model.scoring import CampaignHeads, RelationWeights
    data = BENCH / f"embeddings-{users}-{dim}-f{features_dim}"
    if not (data / "_SUCCESS").exists():
        data.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        per_file = 250_000
        for i, start in enumerate(range(0, users, per_file)):
            n = min(per_file, users - start)
            vectors = rng.normal(size=(n, dim)).astype(np.float32)
            features = rng.normal(size=(n, features_dim)).astype(np.float32)
            table = pa.table({
                "user_id": [f"user-{start + j:08d}" for j in range(n)],
                "embedding": pa.FixedSizeListArray.from_arrays(vectors.ravel(), dim)
                .cast(pa.list_(pa.float32())),
                "features": pa.FixedSizeListArray.from_arrays(features.ravel(), features_dim)
                .cast(pa.list_(pa.float32()))})
            pq.write_table(table, data / f"part-{i:03d}.parquet")
        (data / "_SUCCESS").touch()
    from model.settings import ModelConfig
    rng = np.random.default_rng(1)
    units = ModelConfig().relation_units  # the full-size model's f_θ

    def dense(a, b):
        return (rng.normal(scale=(2 / a) ** 0.5, size=(a, b)).astype(np.float32),
                np.zeros(b, np.float32))
    kernel, bias = dense(2 * dim, units[0])
    hidden = tuple(dense(a, b) for a, b in zip(units, units[1:]))
    weights = RelationWeights(kernel[:dim], kernel[dim:], bias, hidden, dense(units[-1], 1))

    def campaign_heads(kind: str, n: int) -> CampaignHeads:
        columns = np.arange(n, dtype=np.int64)
        if kind == "probe":  # random folded logistic-regression weights over [E + F]
            return CampaignHeads(n, probe_columns=columns,
                                 probe_weights=rng.normal(size=(dim + features_dim, n)) * 0.05,
                                 probe_bias=np.zeros(n))
        prototypes = rng.normal(size=(n, dim)).astype(np.float32)
        return CampaignHeads(n, relation=weights, prototype_columns=columns,
                             positive_part=weights.support_part(prototypes))

    spark = build_session("metaprofile-bench-score", master="local[2]")
    frame = spark.read.parquet(str(data))
    # Warm-up: JVM, file listing, page cache, and Python workers with numpy imported.
    warm = scorer(campaign_heads("prototype", 1),
                  [{"campaign_id": "warm", "keep": 10, "score_threshold": None}], {}, 512)
    frame.select("user_id", "embedding").mapInArrow(warm, SCORED_DDL).count()
    frame.selectExpr("sum(size(features))").collect()  # the probe heads' column, read once
    for kind in heads:
        embeddings = frame.select("user_id", "embedding",
                                  *(["features"] if kind == "probe" else []))
        for n in campaign_counts:
            campaigns = [{"campaign_id": f"c{i:03d}", "keep": 1000, "score_threshold": None}
                         for i in range(n)]
            fn = scorer(campaign_heads(kind, n), campaigns, {}, CHUNK_ROWS)
            with PeakMemory() as peak:
                started = time.perf_counter()
                rows = (embeddings.mapInArrow(fn, SCORED_DDL)
                        .where(F.col("kind") == "candidate")
                        .groupBy("campaign_id").count().collect())
                seconds = time.perf_counter() - started
            print(f"[score] {kind} heads, {users:,} users x {n} campaign(s): {seconds:.1f} s "
                  f"({users * n / seconds / 1e6:,.2f} M user-campaign scores/s; "
                  f"{len(rows)} campaigns with candidates); peak RSS Python worker "
                  f"{peak.python_mib:,.0f} MiB, JVM {peak.jvm_mib:,.0f} MiB")


def bench_pairs(users: int = 50_000, campaigns: int = 100, hidden: int = 256) -> None:
    import numpy as np

    from model.scoring import RelationWeights

    rng = np.random.default_rng(0)
    user_part = rng.standard_normal((users, hidden), dtype=np.float32)
    parts = rng.standard_normal((campaigns, hidden), dtype=np.float32)
    weights = RelationWeights(np.zeros((1, hidden), np.float32), np.zeros((1, hidden), np.float32),
                              np.zeros(hidden, np.float32), (),
                              (rng.standard_normal((hidden, 1), dtype=np.float32),
                               np.zeros(1, np.float32)))

    def materialised() -> np.ndarray:  # the scorer's kernel before: [512, N, H] at a time
        out = np.empty((users, campaigns), np.float32)
        for start in range(0, users, 512):
            out[start:start + 512] = weights.head(
                user_part[start:start + 512, None, :] + parts[None, :, :], scratch=True)
        return out

    elements = users * campaigns * hidden
    timings = {}
    for name, kernel in (("materialised", materialised),
                         ("blocked", lambda: weights.pair_logits(user_part, parts))):
        kernel()  # warm
        started = time.perf_counter()
        result = kernel()
        timings[name] = time.perf_counter() - started, result
    agree = np.allclose(timings["materialised"][1], timings["blocked"][1], atol=1e-3)
    a = rng.standard_normal((4096, 4096), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    a @ a
    blas = 4096 ** 3 / (time.perf_counter() - started)
    for name, (seconds, _) in timings.items():
        rate = elements / seconds
        print(f"[pairs] {name}: {users:,} users x {campaigns} campaigns x H {hidden} in "
              f"{seconds:.2f} s = {rate / 1e9:.2f} G pair-elements/s "
              f"({rate / blas:.1%} of the matrix product's multiply-adds/s)")
    print(f"[pairs] blocked/materialised speed-up {timings['materialised'][0] / timings['blocked'][0]:.2f}x; "
          f"float32 matrix product (numpy BLAS, {os.cpu_count()} cores): "
          f"{blas / 1e9:.1f} G multiply-adds/s; results {'equal' if agree else 'DIFFER'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("embed", "score", "pairs", "all"), default="all")
    parser.add_argument("--embed-users", type=int, default=20_000,
                        help="synthetic users whose snapshot the embed part embeds")
    parser.add_argument("--widths", nargs="+", choices=("demo", "full"),
                        default=["demo", "full"], help="model sizes for the embed part")
    parser.add_argument("--users", type=int, default=1_000_000, help="embeddings to score")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--campaigns", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--heads", nargs="+", choices=("prototype", "probe"),
                        default=["prototype", "probe"],
                        help="campaign heads to score with (default: both)")
    args = parser.parse_args(argv)
    configure_environment()
    if args.part in ("embed", "all"):
        bench_embed(args.embed_users, tuple(args.widths))
    if args.part in ("pairs", "all"):
        bench_pairs()
    if args.part in ("score", "all"):
        bench_score(args.users, args.dim, args.campaigns, tuple(args.heads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
