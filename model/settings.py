"""The model's and the training's settings: plain dataclasses, no TensorFlow.

Their defaults are the one source of the defaults: the config's ``model`` and ``train``
sections (``schemas/settings.py``) and the ``metaprofile train`` flags override them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

PRECISIONS = ("float32", "mixed_float16")
# TrainConfig fields that the train command derives (its --work-dir, --resume); a config's
# train section may not set them.
TRAIN_DERIVED_FIELDS = ("checkpoint_dir", "log_dir", "resume")
EMBEDDING_ACTIVATIONS = ("linear", "relu")


@dataclass(frozen=True)
class ModelConfig:
    """Size and numerics of the meta-model. Defaults are the full-size network.

    ``precision`` is not a modelling choice: training switches it to ``mixed_float16`` on a
    GPU, and artifacts are always written with ``float32``.
    """

    width: float = 1.0  # multiplies Table 2's filter counts
    embedding_dim: int = 512  # user embedding E
    relation_units: tuple[int, ...] = (256,)  # hidden ReLU layers of f_θ
    demo_units: int = 32  # demographic tower output
    categorical_embedding_dim: int = 4  # per categorical demographic field
    embedding_activation: str = "linear"  # of the fusion layer; see module docstring
    bn_momentum: float = 0.99  # batch-norm moving-statistics momentum; lower for short runs
    # A branch beside each tower's max pools: log1p of the channel totals and hour-of-day
    # totals over the window, through one Dense ReLU layer of this many units (0 = off, the
    # plain Table 2 tower). Max pools keep where a tower fired most, not how much a user
    # bought: these sums are what a DMP's aggregates carry.
    totals_units: int = 0
    precision: str = "float32"  # or 'mixed_float16'

    def __post_init__(self) -> None:
        problems = []
        if not self.width > 0:
            problems.append(f"width: {self.width} must be positive")
        for name in ("embedding_dim", "demo_units", "categorical_embedding_dim"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} must be at least 1")
        if self.totals_units < 0:
            problems.append(f"totals_units: {self.totals_units} must be 0 (off) or positive")
        if not self.relation_units or min(self.relation_units) < 1:
            problems.append(f"relation_units: {self.relation_units} needs one or more "
                            "positive sizes")
        if not 0.0 <= self.bn_momentum < 1.0:
            problems.append(f"bn_momentum: {self.bn_momentum} must lie in [0, 1)")
        if self.embedding_activation not in EMBEDDING_ACTIVATIONS:
            problems.append(f"embedding_activation: {self.embedding_activation!r} is not one "
                            f"of {EMBEDDING_ACTIVATIONS}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: {self.precision!r} is not one of {PRECISIONS}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["relation_units"] = list(self.relation_units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config: unknown field(s) {unknown}; known: {sorted(known)}")
        values = dict(d)
        if "relation_units" in values:
            values["relation_units"] = tuple(int(u) for u in values["relation_units"])
        return cls(**values)


# --------------------------------------------------------------------------- input names


@dataclass(frozen=True)
class ScheduleConfig:
    """Parameters of :class:`CyclicThenRestarts` (defaults suit a few thousand steps)."""

    base_lr: float = 1e-4
    max_lr: float = 1e-3
    step_size: int = 200  # half a triangular cycle, in steps
    cycles: int = 2  # full triangular cycles before SGDR
    first_period: int = 400  # length of the first SGDR period, in steps
    t_mul: float = 2.0  # each SGDR period is t_mul times longer than the previous one
    m_mul: float = 0.8  # each restart peaks at m_mul times the previous peak
    min_lr: float = 1e-6  # the floor every SGDR period decays to
    restart_lr: float | None = None  # first SGDR peak; None = max_lr

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.base_lr <= self.max_lr:
            problems.append(f"need 0 < base_lr ({self.base_lr}) <= max_lr ({self.max_lr})")
        if self.step_size < 1 or self.first_period < 1:
            problems.append("step_size and first_period must be at least 1")
        if self.cycles < 0:
            problems.append(f"cycles {self.cycles} must not be negative")
        if self.t_mul < 1 or not 0 < self.m_mul <= 1:
            problems.append(f"need t_mul >= 1 ({self.t_mul}) and 0 < m_mul <= 1 ({self.m_mul})")
        if not 0 <= self.min_lr <= (self.restart_lr or self.max_lr):
            problems.append(f"min_lr {self.min_lr} must lie in [0, first SGDR peak]")
        if problems:
            raise ValueError("invalid schedule: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ScheduleConfig":
        return cls(**d)


@dataclass(frozen=True)
class TrainConfig:
    """Meta-training settings; every step is one episode of ``batch_size`` query users."""

    steps: int = 2000
    batch_size: int = 32  # B, the query batch the dataset yields (split over local replicas)
    k_shot: int = 1  # K supports per task and class
    # N: source tasks drawn per episode (the paper's N-way); None = every source task. With
    # hundreds of source tasks (a genre family), a step embeds 2·N·K supports, not 2·T·K.
    way: int | None = None
    negatives: bool = True  # also draw negative supports (logit r(q,p+) - r(q,p-))
    pool_per_class: int = 16  # support pool: labelled users kept per task and class
    pool_batches: int = 50  # ... scanned from at most this many first batches of the stream
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validate_every: int = 100  # steps; 0 = never validate
    val_batches: int | None = 50  # validation batches per validation; None = whole dataset
    val_k_shot: int = 5  # supports per class of the fixed validation episode
    patience: int = 10  # validations without a better mean AUROC before stopping; 0 = never
    checkpoint_every: int = 100  # steps (a checkpoint is also written at the end)
    keep_checkpoints: int = 3
    log_every: int = 10  # steps between progress lines and TensorBoard train scalars
    seed: int = 0  # weights, support draws
    checkpoint_dir: str | None = None  # default <out_dir>/checkpoints
    log_dir: str | None = None  # default <out_dir>/logs (TensorBoard)
    resume: bool = False  # continue from the latest checkpoint in checkpoint_dir
    restore_best: bool = True  # return the best-validation weights, not the last ones

    def __post_init__(self) -> None:
        problems = [f"{name}: {getattr(self, name)} must be at least 1" for name in
                    ("steps", "batch_size", "k_shot", "pool_per_class", "pool_batches",
                     "val_k_shot", "checkpoint_every", "keep_checkpoints", "log_every")
                    if getattr(self, name) < 1]
        if self.way is not None and self.way < 1:
            problems.append(f"way: {self.way} must be at least 1 (or null for every task)")
        problems += [f"{name}: {getattr(self, name)} must not be negative"
                     for name in ("validate_every", "patience") if getattr(self, name) < 0]
        if problems:
            raise ValueError("invalid train config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "schedule": self.schedule.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        values = dict(d)
        if isinstance(values.get("schedule"), dict):
            values["schedule"] = ScheduleConfig.from_dict(values["schedule"])
        return cls(**values)
