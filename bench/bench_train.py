"""Benchmark: meta-training throughput on this machine, fed from in-memory tensors.

    .work/venv-jobs/bin/python bench/bench_train.py                    # full size, then demo scale
    .work/venv-jobs/bin/python bench/bench_train.py --seconds 20 --demo-width 0.25

Times the compiled training step of ``model/train.py`` (one 9-way K-shot episode: support
and query users through g_θ together, relation logits, Eq. 1, one Adam update) on the
``conf/synthetic.yaml`` input shape (365 days x 24 hours, 12 + 4 channels), for the
full-size network (Table 2, width 1.0) and a narrow demo network. The batches are planted
users (``model/testing.py``) already in memory as tensors, so the figures are the model's
cost alone. Then, when the synthetic demo's heatmaps exist, the same step is timed with its
query batches read from them through the input pipeline; the difference is the pipeline's
cost (target: at most 10%).

Prints, per network: parameters, steps timed, milliseconds per step, query users per second
(the "examples/s" the training log shows) and users embedded per second (queries plus the
episode's 2·N·K supports). Each network is timed for ``--seconds`` after ``--warmup`` steps
(the first step traces the graph).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.workdir import PROJECT_ROOT, configure_environment  # noqa: E402

configure_environment()
DEMO_HEATMAPS = PROJECT_ROOT / ".work" / "data" / "synthetic" / "heatmaps" / "ds=2026-06-30"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from model.episodes import SupportPool, sample_support, support_order  # noqa: E402
from model.network import build_meta_model, feature_keys, full_size_spec
from model.schedules import build_schedule  # noqa: E402
from model.settings import (
    ModelConfig,  # noqa: E402
    ScheduleConfig,  # noqa: E402
)
from model.testing import planted_users  # noqa: E402
from model.train import make_train_step  # noqa: E402
from schemas.input_spec import InputSpec  # noqa: E402


def in_memory_batches(spec: InputSpec, batch_size: int, pool_users: int, seed: int):
    """A query batch as tensors and a support pool, both planted users."""
    users, _ = planted_users(spec, batch_size + pool_users, seed)
    query = {k: tf.constant(v[:batch_size]) for k, v in users.items()}
    pool_features = {k: v[batch_size:] for k, v in users.items()}
    pool = SupportPool(features=pool_features, labels=pool_features["labels"],
                       mask=pool_features["mask"], tasks=spec.tasks)
    return query, pool


def pipeline_queries(heatmaps: str, spec: InputSpec, batch_size: int, seed: int):
    """Query batches from the TFRecord input pipeline (model/inputs.py), train split."""
    from model.inputs import make_dataset
    iterator = iter(make_dataset(heatmaps, "train", spec, batch_size, shuffle=True,
                                 repeat=True, seed=seed))
    return lambda: next(iterator)


def time_training(spec: InputSpec, cfg: ModelConfig, batch_size: int, shots: int,
                  seconds: float, warmup: int, seed: int, heatmaps: str | None = None) -> dict:
    keras.utils.set_random_seed(seed)
    query, pool = in_memory_batches(spec, batch_size, pool_users=8 * len(spec.tasks), seed=seed)
    next_query = (pipeline_queries(heatmaps, spec, batch_size, seed) if heatmaps
                  else lambda: query)
    strategy = tf.distribute.get_strategy()
    model = build_meta_model(spec, cfg)
    optimizer = keras.optimizers.Adam(learning_rate=build_schedule(ScheduleConfig()))
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, strategy, len(spec.tasks), shots, negatives=True)
    rng = np.random.default_rng(seed)
    keys = (*feature_keys(spec), "user_id")
    every_task = tf.range(len(spec.tasks))

    def one_step():
        pos, neg = sample_support(pool.labels, pool.mask, shots, rng, pool.tasks)
        rows = pool.gather(support_order(pos, neg))
        return step(next_query(), {k: rows[k] for k in keys}, every_task)

    for _ in range(warmup):
        float(one_step())
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        loss = one_step()
        steps += 1
    float(loss)  # wait for the last step
    elapsed = time.perf_counter() - started
    supports = 2 * len(spec.tasks) * shots
    return {"parameters": model.count_params(), "steps": steps,
            "ms_per_step": 1000 * elapsed / steps,
            "query_users_per_s": steps * batch_size / elapsed,
            "users_embedded_per_s": steps * (batch_size + supports) / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0,
                        help="timed seconds per network (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=32, help="query users B")
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--demo-width", type=float, default=0.125,
                        help="width of the demo-scale network (default: %(default)s)")
    parser.add_argument("--skip-full", action="store_true", help="time the demo scale only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heatmaps", default=str(DEMO_HEATMAPS),
                        help="also time each network fed from these TFRecord heatmaps through "
                             "the input pipeline (default: the synthetic demo's, when "
                             "`./run demo` has written them; '' to skip)")
    args = parser.parse_args(argv)

    spec = full_size_spec()
    networks = [] if args.skip_full else [("full size (Table 2)", ModelConfig())]
    networks.append((f"demo scale (width {args.demo_width})",
                     ModelConfig(width=args.demo_width, embedding_dim=64,
                                 relation_units=(64, 16))))
    print(f"input {spec.days}x{spec.hours}, channels "
          f"{', '.join(f'{n}={c}' for n, c in spec.modalities)}; {len(spec.tasks)}-way "
          f"{args.k_shot}-shot, batch {args.batch_size}; CPU threads "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'}", flush=True)
    heatmaps = args.heatmaps if args.heatmaps and Path(args.heatmaps, "_SUCCESS").exists() else None
    for name, cfg in networks:
        r = time_training(spec, cfg, args.batch_size, args.k_shot, args.seconds, args.warmup,
                          args.seed)
        print(f"{name:<28} {r['parameters']:>10,} params  {r['steps']:>4} steps  "
              f"{r['ms_per_step']:>8.0f} ms/step  {r['query_users_per_s']:>7.1f} examples/s  "
              f"{r['users_embedded_per_s']:>7.1f} users embedded/s  (in-memory tensors)",
              flush=True)
        if heatmaps:
            p = time_training(spec, cfg, args.batch_size, args.k_shot, args.seconds,
                              args.warmup, args.seed, heatmaps)
            cost = 1 - p["query_users_per_s"] / r["query_users_per_s"]
            print(f"{name:<28} {'':>10}         {p['steps']:>4} steps  "
                  f"{p['ms_per_step']:>8.0f} ms/step  {p['query_users_per_s']:>7.1f} examples/s  "
                  f"(fed by the input pipeline: it costs {cost:.1%})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
