"""Diagnostic: how much a learned representation could add above the DMP's aggregates.

    .work/venv-jobs/bin/python bench/room_above_aggregates.py --config conf/synthetic.yaml \
        --set storage.root=.work/data/eval-synthetic --model <artifact dir>

Every figure is the mean AUPR over the target tasks of a cross-validated logistic regression
(``model.baselines.fit_linear_head``, the probe's fit) on one representation, with the
evaluation's split (repeat seed 0) and its ``seeds`` and ``seeds_pu`` draws:

* ``agg`` — the 78 (synthetic) or 108 (CJ) aggregates: the ``logreg`` baseline;
* ``emb``, ``agg+emb`` — the artifact's embedding alone, and beside the aggregates (the probe);
* ``src`` — the source-task logits of per-task logistic regressions on the aggregates, fitted
  on the source labels (what the source supervision alone can carry);
* ``rrr6`` — a reduced-rank multi-task fit on the source labels: aggregates -> 6 shared
  columns -> one logit per source task (Eq. 1's shared profile, with a linear tower);
  ``agg+rrr6``, those columns beside the aggregates; and ``prior3``, the same with the six
  columns scaled 3x after standardising, so the L2 penalty favours the source subspace (a
  prior from the source tasks, the target labels still free to use every aggregate);
* with ``ground_truth`` beside the data (the synthetic generator writes it): ``truth`` (the
  generator's adoption probabilities), ``true_z`` (its 6-dim latent vector) and ``zhat_lin``
  (the aggregates regressed on ``z``, cross-fitted: a 6-column linear representation that
  knows the latent subspace, an oracle).

It also prints, per source task, the held-out AUROC of a logistic regression on the
aggregates and on the embedding: whether meta-training learned its own tasks, and whether
a source task is only a copy of an input (AUROC 1.0).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.workdir import configure_environment  # noqa: E402

LEVELS = (("all", None), ("seeds", 10), ("seeds", 50), ("seeds", 300),
          ("seeds_pu", 10), ("seeds_pu", 100), ("seeds_pu", 300))


def reduced_rank(features, labels, rank: int, steps: int = 3000, seed: int = 0):
    """Columns ``features @ W`` of a rank-``rank`` multi-task logistic fit; ``labels`` is
    ``[U, S]`` with -1 where a user is not labelled for a source task."""
    import numpy as np
    import tensorflow as tf

    tf.random.set_seed(seed)
    x = tf.constant(features, tf.float32)
    y = tf.constant(np.maximum(labels, 0), tf.float32)
    mask = tf.constant(labels >= 0, tf.float32)
    w = tf.Variable(tf.random.normal([features.shape[1], rank], stddev=0.1))
    h = tf.Variable(tf.random.normal([rank, labels.shape[1]], stddev=0.1))
    b = tf.Variable(tf.zeros([labels.shape[1]]))
    optimizer = tf.keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.nn.sigmoid_cross_entropy_with_logits(y, x @ w @ h + b)
            loss = (tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)
                    + 1e-3 * (tf.reduce_sum(w ** 2) + tf.reduce_sum(h ** 2)))
        optimizer.apply_gradients(zip(tape.gradient(loss, [w, h, b]), [w, h, b]))

    for _ in range(steps):
        step()
    return (x @ w).numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--model", required=True, help="a trained artifact directory")
    args = parser.parse_args(argv)
    configure_environment()
    warnings.filterwarnings("ignore")
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import average_precision_score, roc_auc_score

    from common import storage
    from evaluation.sampling import (
        adaptation_mask,
        positive_seeds,
        seed_subsample,
        unlabelled_background,
    )
    from evaluation.settings import EvalConfig
    from evaluation.store import load_target_labels, read_users, task_data
    from model import baselines as bl
    from model.artifact import load_artifact
    from model.inputs import check_manifest, read_manifest
    from schemas.config import load_config
    from schemas.input_spec import InputSpec

    start = time.monotonic()
    config = load_config(args.config, overrides=args.overrides)
    heatmaps = f"{config.storage.uri('heatmaps')}/ds={config.window.end.isoformat()}"
    manifest = read_manifest(heatmaps)
    check_manifest(manifest, config)
    spec = InputSpec.from_config(config)
    artifact = load_artifact(args.model, spec, manifest["spec"])
    store, features, embeddings = read_users(heatmaps, manifest, spec, config,
                                                artifact.model, EvalConfig())
    ids = store.ids.astype(str)
    targets = [t.name for t in config.target_tasks]
    target_labels, _ = load_target_labels(config, targets)
    tasks = task_data(target_labels, store, targets)
    sources = [t.name for t in config.source_tasks]
    source_labels, _ = load_target_labels(config, sources, uri=config.storage.uri("source_labels"))
    labels = np.full((len(ids), len(sources)), -1.0)
    for j, name in enumerate(sources):
        data = task_data(source_labels, store, [name])[0]
        labels[data.rows, j] = data.labels
    print(f"{len(ids)} users, {features.shape[1]} aggregates, embedding {embeddings.shape[1]}, "
          f"{len(sources)} source tasks, {len(tasks)} target tasks")

    def standard(x):
        mean, std = bl.standardiser(x)
        return (x - mean) / std

    agg, emb = standard(features), standard(embeddings)
    half = np.arange(len(ids)) % 2
    print(f"\n{'source task':28} {'labelled':>8} {'LR on agg':>10} {'LR on emb':>10}  (held-out AUROC)")
    for j, name in enumerate(sources):
        known = labels[:, j] >= 0
        fit, held = known & (half == 0), known & (half == 1)
        if len(np.unique(labels[fit, j])) < 2 or len(np.unique(labels[held, j])) < 2:
            continue
        auroc = [roc_auc_score(labels[held, j], LogisticRegression(C=0.1, max_iter=3000)
                               .fit(x[fit], labels[fit, j]).decision_function(x[held]))
                 for x in (agg, emb)]
        print(f"{name:28} {int(known.sum()):8d} {auroc[0]:10.3f} {auroc[1]:10.3f}")

    source_logits = np.stack([
        LogisticRegression(C=0.1, max_iter=3000).fit(agg[labels[:, j] >= 0],
                                                     labels[labels[:, j] >= 0, j])
        .decision_function(agg) for j in range(len(sources))], axis=1)
    views = {"agg": features, "emb": embeddings, "agg+emb": np.hstack([features, embeddings]),
             "src": source_logits, "rrr6": reduced_rank(agg, labels, 6)}
    views["agg+rrr6"] = np.hstack([features, views["rrr6"]])
    columns = standard(views["rrr6"])
    views["prior3"] = np.hstack([agg, 3.0 * columns])
    unscaled = {"prior3"}  # fitted on the columns as they are, not standardised again
    truth_uri = config.storage.uri("ground_truth")
    truth = None
    if storage.exists(f"{truth_uri}/_SUCCESS"):
        truth = pq.read_table(truth_uri).to_pandas().set_index("user_id").reindex(ids)
        z = truth[[c for c in truth.columns if c.startswith("z")]].to_numpy()
        zhat = np.zeros_like(z)
        for fold in (0, 1):
            zhat[half == fold] = Ridge(1.0).fit(agg[half != fold], z[half != fold]).predict(
                agg[half == fold])
        views.update({"true_z": z, "zhat_lin": zhat})

    adaptation = adaptation_mask(ids, 0, 0.5)
    pool = np.flatnonzero(adaptation)
    results: dict = {}
    for task in tasks:
        inside = adaptation[task.rows]
        support_rows, support_labels = task.rows[inside], task.labels[inside]
        query_rows, query_labels = task.rows[~inside], task.labels[~inside]
        if truth is not None:
            results.setdefault("truth", []).append(average_precision_score(
                query_labels, truth[f"p_{task.name}"].to_numpy()[query_rows]))
        for kind, n in LEVELS:
            key = f"0:{task.name}"
            if kind == "all":
                rows, y = support_rows, support_labels
            elif kind == "seeds":
                pick = seed_subsample(ids[support_rows], support_labels, n, key)
                rows, y = support_rows[pick], support_labels[pick]
            else:
                seeds = support_rows[positive_seeds(ids[support_rows], support_labels, n, key)]
                background = unlabelled_background(pool, ids[pool], seeds, 1000, key)
                rows = np.r_[seeds, background]
                y = np.r_[np.ones(len(seeds)), np.zeros(len(background))].astype(np.int8)
            for name, view in views.items():
                head = bl.fit_linear_head(view[rows], y,
                                          None if name in unscaled else view[pool])
                results.setdefault((kind, n, name), []).append(
                    average_precision_score(query_labels, head.decision(view[query_rows])))
    print("\nmean AUPR over the target tasks (repeat seed 0)")
    if truth is not None:
        print(f"the generator's adoption probabilities: {np.mean(results['truth']):.3f}")
    print(f"{'level':16}" + "".join(f"{name:>10}" for name in views))
    for kind, n in LEVELS:
        print(f"{kind + ' ' + str(n or ''):16}"
              + "".join(f"{np.mean(results[(kind, n, name)]):10.3f}" for name in views))
    print(f"\n{time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
