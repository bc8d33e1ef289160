"""Meta-training (``metaprofile train``): N-way K-shot episodes over the source tasks.

One step is one episode (paper section 3.2): a query mini-batch B from the training stream,
K labelled supports per task and class drawn from an in-memory support pool, one forward
pass of the profile network over supports and queries together, prototypes, relation
logits ``[B, N]`` and the masked multi-task loss of Eq. 1, minimised with Adam under the
cyclical-then-SGDR schedule of section 4.1.

Choices worth knowing:

* Supports and queries go through g_θ in **one** batch, so batch normalisation sees one set
  of statistics per episode (as in the relation network), not a tiny half-positive batch of
  supports on its own.
* A query user who is also one of the episode's supports is masked out of that episode's
  loss (their label would be read off their own prototype).
* Early stopping watches the **mean validation AUROC over the source tasks**, not the Eq. 1
  validation loss: the product ranks users (lookalike segments are top-K), AUROC is what
  the paper reports, and it does not reward mere recalibration. Validation uses one fixed
  episode of ``val_k_shot`` supports per class (default 5, drawn once from the pool with a
  seed of its own) so successive validations differ only by the weights, with less noise
  than a 1-shot draw.
* A run is resumable exactly: the checkpoint holds the model (batch-norm statistics
  included), the optimiser (Adam moments, step counter, and so the schedule's position),
  the ``tf.data`` iterator (shuffle buffer included: keep buffers modest) and the step; the
  numpy generator that draws supports, the early-stopping state and the history are written
  as ``state-<step>.json`` beside it. The support pool is taken from the first
  ``pool_batches`` batches of the training iterator itself (queries start after them) and
  saved once as ``support_pool.npz``; a resumed run loads it. Opening a second iterator on
  the dataset instead would make the query order depend on how many iterators the process
  had opened before (a shuffle reseeds per iterator). The input pipeline must be
  checkpointable (TFRecord readers, ``from_tensor_slices``; not ``from_generator``).
* Distribution comes from the environment (:func:`choose_strategy`). The host reads one
  checkpointable iterator and splits each query batch over its local replicas (tf.data's
  distributed iterators cannot be checkpointed); every replica embeds the same supports, and
  Eq. 1 is normalised per replica shard (the gradients are summed, the loss divided by the
  replica count). With a GPU the network computes in ``mixed_float16`` with loss scaling;
  the fusion layer, relation logits and loss stay float32, and the returned model is float32.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from common.faults import crash_point
from model.episodes import (
    SupportPool,
    build_support_pool,
    load_support_pool,
    sample_support,
    save_support_pool,
    support_order,
)
from model.losses import masked_multitask_loss, per_task_loss
from model.metrics import per_task_auroc
from model.network import (
    MetaProfileModel,
    ModelConfig,
    build_meta_model,
    clone_meta_model,
    feature_keys,
)
from model.relation import class_prototypes
from model.schedules import build_schedule
from model.settings import TrainConfig
from schemas.input_spec import InputSpec

log = logging.getLogger(__name__)

BEST_WEIGHTS = "best.weights.h5"
POOL_FILE = "support_pool.npz"
# Train settings a resumed run may change; the others must match the checkpoint's.
CHANGEABLE = ("steps", "resume", "patience", "validate_every", "val_batches", "log_every",
              "checkpoint_every", "keep_checkpoints", "checkpoint_dir", "log_dir",
              "restore_best")


@dataclass
class EarlyStopping:
    """Best validation mean AUROC so far and how many validations since it improved."""

    patience: int
    best: float = -math.inf
    best_step: int | None = None
    since_best: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record a validation; True when it is a new best."""
        if value > self.best:
            self.best, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def to_dict(self) -> dict:
        return {"patience": self.patience, "best": None if math.isinf(self.best) else self.best,
                "best_step": self.best_step, "since_best": self.since_best}

    @classmethod
    def from_dict(cls, d: dict) -> "EarlyStopping":
        return cls(patience=d["patience"], best=-math.inf if d["best"] is None else d["best"],
                   best_step=d["best_step"], since_best=d["since_best"])


@dataclass
class TrainResult:
    model: MetaProfileModel  # float32; best-validation weights if validated and restore_best
    model_config: ModelConfig  # float32 config of ``model``
    steps: int  # steps done in total (resumed runs included)
    stopped_early: bool
    metrics: dict  # what metrics.json of the artifact holds
    history: list[dict]  # one record per validation
    train_log: list[dict]  # {"step", "loss"}: mean Eq. 1 loss per logging interval
    checkpoint_dir: str
    log_dir: str


# --------------------------------------------------------------------------- hardware


def choose_strategy(environ: dict | None = None) -> tf.distribute.Strategy:
    """TF_CONFIG → MultiWorkerMirrored; several GPUs → Mirrored; one → OneDevice; else the
    default strategy. Call before any other TensorFlow work (multi-worker must be first)."""
    environ = os.environ if environ is None else environ
    if environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def training_precision() -> str:
    """``mixed_float16`` when a GPU is present (tensor cores), else ``float32``."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"


# --------------------------------------------------------------------------- episodes


def episode_logits(model: MetaProfileModel, support: dict, query: dict, tasks: int, shots: int,
                   negatives: bool, training: bool):
    """Relation logits ``[B, T]`` of one episode; ``support`` in :func:`support_order`."""
    features = {k: tf.concat([support[k], query[k]], axis=0)
                for k in feature_keys(model.spec)}  # [S + B, ...]
    embedding = model(features, training=training)  # [S + B, E]
    per_class = tasks * shots
    n_support = per_class * (2 if negatives else 1)
    pos = class_prototypes(embedding[:per_class], tasks, shots)  # [T, E]
    neg = class_prototypes(embedding[per_class:n_support], tasks, shots) if negatives else None
    return model.score(embedding[n_support:], pos, neg)  # [B, T]


def exclude_supports(mask, query_ids, support_ids):
    """Zero the mask ``[B, T]`` of queries who are supports of the same episode."""
    is_support = tf.reduce_any(tf.equal(query_ids[:, None], support_ids[None, :]), axis=1)  # [B]
    return mask * tf.cast(tf.logical_not(is_support), mask.dtype)[:, None]  # [B, T]


def make_train_step(model: MetaProfileModel, optimizer, strategy: tf.distribute.Strategy,
                    tasks: int, shots: int, negatives: bool) -> Callable:
    """A ``tf.function`` (query, support, chosen) → mean Eq. 1 loss, applying one Adam
    update; ``chosen`` ``[N]`` are the label columns of the episode's ``tasks`` = N tasks,
    in the order of the supports."""
    replicas = strategy.num_replicas_in_sync

    def replica_step(query, support, chosen):
        with tf.GradientTape() as tape:
            logits = episode_logits(model, support, query, tasks, shots, negatives,
                                    training=True)  # [B, N]
            labels = tf.gather(query["labels"], chosen, axis=1)  # [B, N]: the episode's tasks
            mask = exclude_supports(tf.gather(query["mask"], chosen, axis=1),
                                    query["user_id"], support["user_id"])
            loss = masked_multitask_loss(labels, logits, mask)
            scaled = optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)
    def train_step(query, support, chosen):
        losses = strategy.run(replica_step, args=(query, support, chosen))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    return train_step


def distribute_query(strategy: tf.distribute.Strategy, batch: dict):
    """Split a host batch over the local replicas (identity with one replica)."""
    if strategy.num_replicas_in_sync == 1:
        return batch
    local = len(strategy.extended.worker_devices)
    size = int(batch["labels"].shape[0])
    if size % local:
        raise ValueError(f"query batch of {size} does not split over {local} local replicas; "
                         "choose a batch size divisible by the replica count")
    share = size // local

    def shard(context):
        i = context.replica_id_in_sync_group % local
        return {k: v[i * share:(i + 1) * share] for k, v in batch.items()}

    return strategy.experimental_distribute_values_from_function(shard)


# --------------------------------------------------------------------------- validation


def make_scorer(model: MetaProfileModel) -> Callable:
    """A ``tf.function`` (features, pos, neg|None) → logits ``[B, T]`` in inference mode."""

    @tf.function(reduce_retracing=True)
    def score(features, pos, neg):
        return model.score(model(features, training=False), pos, neg)

    return score


def validate(model: MetaProfileModel, batches: Iterable[dict], support: dict, tasks: int,
             shots: int, negatives: bool, scorer: Callable,
             columns: np.ndarray | None = None) -> dict:
    """Per-task AUROC and Eq. 1 loss of a fixed support episode over validation batches;
    ``columns`` are the label columns of its ``tasks`` tasks (default: the first ones)."""
    columns = np.arange(tasks) if columns is None else np.asarray(columns)
    keys = feature_keys(model.spec)
    embedding = model({k: support[k] for k in keys}, training=False)  # [S, E]
    per_class = tasks * shots
    pos = class_prototypes(embedding[:per_class], tasks, shots)  # [T, E]
    neg = (class_prototypes(embedding[per_class:2 * per_class], tasks, shots)
           if negatives else None)
    labels, mask, logits = [], [], []
    for batch in batches:
        logits.append(scorer({k: batch[k] for k in keys}, pos, neg).numpy())  # [B, T]
        labels.append(np.asarray(batch["labels"])[:, columns])
        mask.append(np.asarray(batch["mask"])[:, columns])
    if not logits:
        raise ValueError("the validation dataset yielded no batches")
    labels, mask, logits = (np.concatenate(x) for x in (labels, mask, logits))
    auroc = per_task_auroc(labels, logits, mask)
    defined = auroc[np.isfinite(auroc)]
    return {"users": int(len(labels)),
            "auroc": [None if not np.isfinite(a) else float(a) for a in auroc],
            "auroc_mean": float(defined.mean()) if defined.size else float("nan"),
            "loss": float(masked_multitask_loss(labels, logits, mask)),
            "task_loss": [float(x) for x in per_task_loss(labels, logits, mask)]}


# --------------------------------------------------------------------------- state files


def state_path(checkpoint_dir: str, step: int) -> str:
    return os.path.join(checkpoint_dir, f"state-{step}.json")


def write_json_atomic(obj: dict, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def checkpoint_step(path: str) -> int:
    """The step a ``CheckpointManager`` path was saved at (``.../ckpt-<step>``)."""
    return int(path.rsplit("-", 1)[1])


def prune_states(checkpoint_dir: str, manager: tf.train.CheckpointManager) -> None:
    """Delete ``state-<step>.json`` files whose checkpoint the manager has rotated out."""
    kept = {checkpoint_step(p) for p in manager.checkpoints}
    for name in os.listdir(checkpoint_dir):
        if name.startswith("state-") and name.endswith(".json"):
            if int(name[len("state-"):-len(".json")]) not in kept:
                os.remove(os.path.join(checkpoint_dir, name))


def _config_differences(saved: dict, current: dict, prefix: str) -> list[str]:
    return [f"{prefix}.{k}: checkpoint has {saved.get(k)!r}, now {current.get(k)!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


# --------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """Everything that changes during a run and is saved with each checkpoint."""

    rng: np.random.Generator
    stopping: EarlyStopping
    history: list[dict]  # one record per validation
    train_log: list[dict] = field(default_factory=list)  # mean loss per logging interval
    last_validation: dict | None = None
    last_loss: float | None = None


def train(spec: InputSpec, model_cfg: ModelConfig, train_cfg: TrainConfig,
          train_dataset: tf.data.Dataset, val_dataset: tf.data.Dataset | None, out_dir: str,
          progress: Callable[[str], None] = print,
          strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """Meta-train g_θ and f_θ; see the module docstring. ``train_dataset`` yields batch dicts
    of schemas/input_spec.py forever (repeat); ``val_dataset`` is finite. Checkpoints go to
    ``<out_dir>/checkpoints``, TensorBoard logs to ``<out_dir>/logs``, unless configured."""
    strategy = strategy or choose_strategy()
    precision = training_precision()
    run_cfg = dataclasses.replace(model_cfg, precision=precision)
    checkpoint_dir = train_cfg.checkpoint_dir or os.path.join(out_dir, "checkpoints")
    log_dir = train_cfg.log_dir or os.path.join(out_dir, "logs")
    os.makedirs(checkpoint_dir, exist_ok=True)
    shots = train_cfg.k_shot
    tasks = min(train_cfg.way or len(spec.tasks), len(spec.tasks))  # N tasks per episode

    keras.utils.set_random_seed(train_cfg.seed)
    resuming = _check_resume(checkpoint_dir, train_cfg, progress)
    iterator = iter(train_dataset)
    pool = _support_pool(iterator, spec, train_cfg, checkpoint_dir, resuming)
    validating = val_dataset is not None and bool(train_cfg.validate_every)
    val_columns = validation_columns(len(spec.tasks), train_cfg.way, train_cfg.seed)
    val_support = _validation_support(pool, train_cfg, spec, validating, val_columns)

    with strategy.scope():
        model = build_meta_model(spec, run_cfg)
        optimizer = keras.optimizers.Adam(learning_rate=build_schedule(train_cfg.schedule))
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, iterator=iterator,
                                     step=step_var)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                         max_to_keep=train_cfg.keep_checkpoints)
    run = _Run(rng=np.random.default_rng(train_cfg.seed),
               stopping=EarlyStopping(train_cfg.patience), history=[])
    identity = {"model_config": run_cfg.to_dict(), "train_config": train_cfg.to_dict()}
    if resuming:
        _restore(manager, checkpoint, run, identity, train_cfg, progress)

    train_step = make_train_step(model, optimizer, strategy, tasks, shots, train_cfg.negatives)
    scorer = make_scorer(model)
    writer = tf.summary.create_file_writer(log_dir)
    best_path = os.path.join(out_dir, BEST_WEIGHTS)
    step = int(step_var.numpy())
    progress(f"training {step}/{train_cfg.steps} steps: {tasks}-way {shots}-shot, batch "
             f"{train_cfg.batch_size}, strategy {type(strategy).__name__} "
             f"({strategy.num_replicas_in_sync} replica(s)), {precision}, pool {pool.size} "
             f"users ({pool.nbytes / 1e6:.1f} MB)")
    interval_start, interval_examples, interval_losses = time.perf_counter(), 0, []
    stopped_early = run.stopping.should_stop
    while step < train_cfg.steps and not stopped_early:
        query = next(iterator)
        support, chosen = _episode_support(pool, shots, run.rng, train_cfg.negatives, spec,
                                           tasks)
        interval_losses.append(train_step(distribute_query(strategy, query), support,
                                          tf.constant(chosen, tf.int32)))
        step += 1
        step_var.assign(step)
        interval_examples += int(query["labels"].shape[0])
        if step % train_cfg.log_every == 0 or step == train_cfg.steps:
            rate = interval_examples / max(time.perf_counter() - interval_start, 1e-9)
            _log_interval(run, step, train_cfg.steps, interval_losses, rate, optimizer, writer,
                          progress)
            interval_start, interval_examples, interval_losses = time.perf_counter(), 0, []
        if val_dataset is not None and train_cfg.validate_every and (
                step % train_cfg.validate_every == 0 or step == train_cfg.steps):
            stopped_early = _validation(model, val_dataset, val_support, val_columns,
                                        train_cfg, scorer, writer, run, step, best_path, spec,
                                        progress)
        if step % train_cfg.checkpoint_every == 0 or step == train_cfg.steps or stopped_early:
            _save(manager, run, identity, step, checkpoint_dir)
    if train_cfg.restore_best and run.stopping.best_step is not None and os.path.exists(
            best_path):
        model.load_weights(best_path)
    export_cfg = dataclasses.replace(model_cfg, precision="float32")
    exported = clone_meta_model(model, export_cfg)
    metrics = _metrics(run, step, stopped_early, train_cfg,
                       tuple(spec.tasks[c] for c in val_columns), strategy, precision)
    progress(f"finished at step {step}" + (" (early stop)" if stopped_early else "") +
             (f"; best validation mean AUROC {run.stopping.best:.4f} at step "
              f"{run.stopping.best_step}" if run.stopping.best_step is not None else ""))
    return TrainResult(model=exported, model_config=export_cfg, steps=step,
                       stopped_early=stopped_early, metrics=metrics, history=run.history,
                       train_log=run.train_log,
                       checkpoint_dir=checkpoint_dir, log_dir=log_dir)


def _select(features: dict, spec: InputSpec) -> dict:
    """The network's features and ``user_id`` (labels and mask of supports are not fed)."""
    return {k: features[k] for k in (*feature_keys(spec), "user_id")}


def episode_tasks(total: int, way: int, rng: np.random.Generator) -> np.ndarray:
    """The task columns of one episode, ascending: every task when ``way`` covers them
    (no draw, so the supports' draws stay those of an all-task run), else ``way`` distinct
    tasks drawn from ``rng``."""
    if way >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, size=way, replace=False))


def _episode_support(pool: SupportPool, shots: int, rng: np.random.Generator,
                     negatives: bool, spec: InputSpec, way: int) -> tuple[dict, np.ndarray]:
    chosen = episode_tasks(len(pool.tasks), way, rng)
    pos, neg = sample_support(pool.labels[:, chosen], pool.mask[:, chosen], shots, rng,
                              [pool.tasks[t] for t in chosen], negatives)
    return _select(pool.gather(support_order(pos, neg)), spec), chosen


def _check_resume(checkpoint_dir: str, train_cfg: TrainConfig,
                  progress: Callable[[str], None]) -> bool:
    """True when this run continues a checkpoint; refuses to silently overwrite one."""
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest is None:
        if train_cfg.resume:
            progress(f"no checkpoint in {checkpoint_dir}; starting from step 0")
        return False
    if not train_cfg.resume:
        raise ValueError(f"{checkpoint_dir} already holds checkpoints (latest {latest}); "
                         "pass --resume to continue that run, or another --work-dir (the `train` "
                         "command's checkpoint folder) to start afresh")
    return True


def _numpy_batches(iterator, limit: int) -> Iterator[dict]:
    for _ in range(limit):
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield {k: v.numpy() for k, v in batch.items()}


def _support_pool(iterator, spec: InputSpec, train_cfg: TrainConfig, checkpoint_dir: str,
                  resuming: bool) -> SupportPool:
    """The support pool: from the first batches of the training iterator itself (so the
    query stream starts after them), saved once; a resumed run loads that file, since its
    restored iterator is already past those batches."""
    path = os.path.join(checkpoint_dir, POOL_FILE)
    if resuming:
        return load_support_pool(path)
    pool = build_support_pool(_numpy_batches(iterator, train_cfg.pool_batches), spec,
                              train_cfg.pool_per_class)
    save_support_pool(pool, path)
    return pool


def validation_columns(total: int, way: int | None, seed: int) -> np.ndarray:
    """The source tasks the fixed validation episode scores: every one, or with N-way
    episodes at most 4·N of them, drawn once by ``seed`` (an episode over hundreds of tasks
    would embed thousands of supports at once)."""
    if way is None or 4 * way >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng([seed, 2]).choice(total, size=4 * way,
                                                           replace=False))


def _validation_support(pool: SupportPool, train_cfg: TrainConfig, spec: InputSpec,
                        validating: bool, columns: np.ndarray) -> dict | None:
    """The fixed validation episode over the tasks ``columns`` (None without validation);
    first checks the pool has K users per class of every task for training, so a short
    class fails now rather than at some step."""
    sample_support(pool.labels, pool.mask, train_cfg.k_shot, np.random.default_rng(0),
                   pool.tasks, train_cfg.negatives)
    if not validating:
        return None
    pos, neg = sample_support(pool.labels[:, columns], pool.mask[:, columns],
                              train_cfg.val_k_shot, np.random.default_rng([train_cfg.seed, 1]),
                              [pool.tasks[c] for c in columns], train_cfg.negatives)
    return _select(pool.gather(support_order(pos, neg)), spec)


def _restore(manager: tf.train.CheckpointManager, checkpoint: tf.train.Checkpoint, run: _Run,
             identity: dict, train_cfg: TrainConfig, progress: Callable[[str], None]) -> None:
    latest = manager.latest_checkpoint
    with open(state_path(manager.directory, checkpoint_step(latest)), encoding="utf-8") as fh:
        state = json.load(fh)
    # A field added to ModelConfig after the checkpoint was written has its default there.
    saved_model = {**ModelConfig().to_dict(), **state["model_config"]}
    problems = _config_differences(saved_model, identity["model_config"], "model_config")
    saved_train = {k: v for k, v in state["train_config"].items() if k not in CHANGEABLE}
    current_train = {k: identity["train_config"][k] for k in saved_train}
    problems += _config_differences(saved_train, current_train, "train_config")
    if problems:
        raise ValueError(f"cannot resume from {latest}: " + "; ".join(problems))
    checkpoint.restore(latest).assert_existing_objects_matched()
    run.rng.bit_generator.state = state["rng"]
    run.stopping = EarlyStopping.from_dict({**state["early_stopping"],
                                            "patience": train_cfg.patience})
    run.history = state["history"]
    run.train_log = state["train_log"]
    run.last_validation = state.get("last_validation")
    run.last_loss = state.get("last_loss")
    progress(f"resumed from {latest} at step {state['step']}")


def _save(manager: tf.train.CheckpointManager, run: _Run, identity: dict, step: int,
          checkpoint_dir: str) -> None:
    # The state file goes first: a kill between the two leaves a state file without its
    # checkpoint, which is ignored, never a checkpoint without its state.
    write_json_atomic({**identity, "step": step, "rng": run.rng.bit_generator.state,
                       "early_stopping": run.stopping.to_dict(), "history": run.history,
                       "train_log": run.train_log,
                       "last_validation": run.last_validation, "last_loss": run.last_loss},
                      state_path(checkpoint_dir, step))
    manager.save(checkpoint_number=step)
    prune_states(checkpoint_dir, manager)
    crash_point("checkpoint")


# TensorBoard's scalar plugin reads any float summary tagged with this metadata; writing it
# with the core op keeps TensorBoard itself (not a dependency of tensorflow-cpu) optional.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))


def write_scalars(writer, step: int, scalars: dict[str, float]) -> None:
    """TensorBoard scalars at ``step``."""
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)
    writer.flush()


def _log_interval(run: _Run, step: int, steps: int, losses: list, rate: float, optimizer,
                  writer, progress: Callable[[str], None]) -> None:
    """One progress line and the train scalars for the steps since the last line."""
    # The mean over the interval: one episode's loss swings with its K supports.
    run.last_loss = float(tf.reduce_mean(tf.stack(losses)))
    run.train_log.append({"step": step, "loss": run.last_loss})
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    write_scalars(writer, step, {"train/loss": run.last_loss, "train/learning_rate": lr,
                                 "train/examples_per_second": rate})
    progress(f"step {step}/{steps}  loss {run.last_loss:.4f}  lr {lr:.2e}  "
             f"{rate:.1f} examples/s")


def _validation(model, val_dataset, val_support, columns: np.ndarray, train_cfg: TrainConfig,
                scorer, writer, run: _Run, step: int, best_path: str, spec: InputSpec,
                progress: Callable[[str], None]) -> bool:
    """Validate, log, keep the best weights; True when early stopping says stop."""
    batches = val_dataset if train_cfg.val_batches is None else val_dataset.take(
        train_cfg.val_batches)
    result = validate(model, batches, val_support, len(columns), train_cfg.val_k_shot,
                      train_cfg.negatives, scorer, columns)
    names = [spec.tasks[c] for c in columns]
    improved = run.stopping.update(result["auroc_mean"], step)
    if improved:
        staging = best_path.replace(".weights.h5", ".tmp.weights.h5")
        model.save_weights(staging)
        os.replace(staging, best_path)
    run.last_validation = {"step": step, **result}
    run.history.append(run.last_validation)
    write_scalars(writer, step, {"val/auroc_mean": result["auroc_mean"],
                                 "val/loss": result["loss"],
                                 **{f"val/auroc/{task}": value for task, value in
                                    zip(names, result["auroc"]) if value is not None}})
    per_task = ", ".join(f"{t} {'n/a' if a is None else f'{a:.3f}'}"
                         for t, a in zip(names, result["auroc"]))
    progress(f"validation at step {step}: mean AUROC {result['auroc_mean']:.4f}, Eq.1 loss "
             f"{result['loss']:.4f} over {result['users']} users "
             f"({'new best' if improved else f'best {run.stopping.best:.4f} at step {run.stopping.best_step}'}); "
             f"{per_task}")
    if run.stopping.should_stop:
        progress(f"early stop: no better mean AUROC in {train_cfg.patience} validations")
    return run.stopping.should_stop


def _metrics(run: _Run, step: int, stopped_early: bool, train_cfg: TrainConfig,
             val_tasks: tuple[str, ...], strategy: tf.distribute.Strategy,
             precision: str) -> dict:
    best = next((h for h in run.history if h["step"] == run.stopping.best_step), None)
    return {"steps": step, "stopped_early": stopped_early,
            "best_step": run.stopping.best_step,
            "val_auroc_mean": best["auroc_mean"] if best else None,
            "val_auroc": dict(zip(val_tasks, best["auroc"])) if best else None,
            "val_loss": best["loss"] if best else None,
            "final_train_loss": run.last_loss,
            "validations": len(run.history), "train_config": train_cfg.to_dict(),
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync, "precision": precision}
