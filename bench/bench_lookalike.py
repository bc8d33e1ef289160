"""Benchmark: nightly embedding and one-pass scoring.

    .work/venv-jobs/bin/python bench/bench_lookalike.py                       # both parts
    .work/venv-jobs/bin/python bench/bench_lookalike.py --part embed --model .work/data/synthetic/models/<v>
    .work/venv-jobs/bin/python bench/bench_lookalike.py --part score --users 1000000

**Embed** (needs ``./run demo`` and a model; default: a freshly initialised full-size
model saved under ``.work/bench``): ``jobs/embed.py`` on Spark ``local[2]`` over the
synthetic demo snapshot, in users per second, next to bare ``model.predict`` on the same
users' dense tensors already in memory (target: the job reaches at least 80% of it).

**Score**: ``--users`` random user embeddings (default 1,000,000, dimension 512 as the full
model's, with 78 aggregate features) and 1 or 100 campaigns, scored with ``jobs/score.py``'s
executor function and selection on Spark ``local[2]``, once with prototype heads (random
prototypes through f_θ) and once with probe heads (random folded logistic-regression
weights; ``--heads`` picks): seconds for 1 campaign and for 100 (target: 100 cost at most
1.5× one), and the peak resident memory of the Python workers and of the JVM while it runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.workdir import PROJECT_ROOT, configure_environment  # noqa: E402

BENCH = PROJECT_ROOT / ".work" / "bench"
CONFIG = PROJECT_ROOT / "conf" / "synthetic.yaml"


class PeakMemory:
    """Polls /proc for the peak RSS of Spark's Python workers and of the JVM."""

    def __init__(self):
        self.python_mib = 0.0
        self.jvm_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
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
            self._stop.wait(0.2)


def bench_embed(model: str | None, users_limit: int | None) -> None:
    import numpy as np

    from common import registry
    from jobs import embed
    from jobs.spark import build_session
    from schemas.config import load_config
    config = load_config(CONFIG)
    if model is None:
        model = fresh_full_size_model(config)
    spark = build_session("metaprofile-bench-embed", master="local[2]")
    with PeakMemory() as peak:
        report = embed.run(spark, config, config.window.end, model=model)
    print(f"[embed] jobs/embed.py on local[2]: {report['users']:,} users in "
          f"{report['seconds']:.1f} s = {report['users_per_second']:,.1f} users/s "
          f"(model {report['model_version']}, dim {report['embedding_dim']}); peak RSS "
          f"Python worker {peak.python_mib:,.0f} MiB, JVM {peak.jvm_mib:,.0f} MiB")
    # The same users, dense, in memory, through bare model.predict.
    from model.artifact import load_artifact
    from model.inputs import make_dataset
    from model.network import select_inputs
    from schemas.input_spec import InputSpec
    spec = InputSpec.from_config(config)
    artifact = load_artifact(model, spec)
    info = registry.describe_model(model, config)
    uri = f"{config.storage.uri('heatmaps')}/ds={config.window.end}"
    from model.inputs import read_manifest
    manifest = {**read_manifest(uri), "numeric_normalisation": info["normalisation"]}
    batches = []
    for batch in make_dataset(uri, "train", spec, 64, shuffle=False, repeat=False,
                              manifest=manifest):
        batches.append({k: v.numpy() for k, v in select_inputs(batch, spec).items()})
        if users_limit and len(batches) * 64 >= users_limit:
            break
    features = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    n = len(next(iter(features.values())))
    artifact.model.profile.predict({k: v[:64] for k, v in features.items()}, verbose=0)
    started = time.perf_counter()
    artifact.model.profile.predict(features, batch_size=64, verbose=0)
    rate = n / (time.perf_counter() - started)
    print(f"[embed] bare model.predict on {n:,} users in memory: {rate:,.1f} users/s; the job "
          f"reaches {report['users_per_second'] / rate:.0%} of it")


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

    from jobs.score import SCORED_DDL, scorer
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
    for kind in heads:
        embeddings = frame.select("user_id", "embedding",
                                  *(["features"] if kind == "probe" else []))
        for n in campaign_counts:
            campaigns = [{"campaign_id": f"c{i:03d}", "keep": 1000, "score_threshold": None}
                         for i in range(n)]
            fn = scorer(campaign_heads(kind, n), campaigns, {}, 512)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("embed", "score", "all"), default="all")
    parser.add_argument("--model", default=None,
                        help="model artifact for the embed part (default: a fresh full-size one)")
    parser.add_argument("--predict-users", type=int, default=None,
                        help="limit the in-memory model.predict comparison to this many users")
    parser.add_argument("--users", type=int, default=1_000_000, help="embeddings to score")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--campaigns", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--heads", nargs="+", choices=("prototype", "probe"),
                        default=["prototype", "probe"],
                        help="campaign heads to score with (default: both)")
    args = parser.parse_args(argv)
    configure_environment()
    if args.part in ("embed", "all"):
        bench_embed(args.model, args.predict_users)
    if args.part in ("score", "all"):
        bench_score(args.users, args.dim, args.campaigns, tuple(args.heads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
