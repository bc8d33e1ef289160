"""The evaluation's names (methods, experiments, levels) and its settings, :class:`EvalConfig`."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from model.baselines import COSINE, HGB, LOGREG

log = logging.getLogger(__name__)


ZERO = "meta_profile"
PROBE = "meta_profile_probe"
# the network's source-task relation scores (model/task_scores.py) beside the aggregates,
# under the DMP's cross-validated logistic regression: T columns instead of the embedding's E
TASKS = "meta_profile_tasks"
FINE_TUNED = "meta_profile_fine_tuned"
SCRATCH = "scratch"
# lookalike.head: auto (model/auto_head.py): per trial, the best of the probe, the logistic
# regression on the aggregates and the prototypes by cross-validation on the support. It
# may pick a classic head, so it is on neither side of the Meta-Profile / classic ratio.
AUTO = "auto_head"
METHODS = (ZERO, PROBE, TASKS, FINE_TUNED, AUTO, SCRATCH, LOGREG, HGB, COSINE)
META_METHODS = (ZERO, PROBE, TASKS, FINE_TUNED)
TRAINED_METHODS = (FINE_TUNED, SCRATCH)
METHOD_LABELS = {ZERO: "Meta-Profile (zero-training)",
                 PROBE: "Meta-Profile (probe: logistic regression on embedding + aggregates)",
                 TASKS: "Meta-Profile (task scores: logistic regression on the network's "
                        "source-task scores + aggregates)",
                 FINE_TUNED: "Meta-Profile (fine-tuned)",
                 AUTO: "auto head (best of probe, aggregates, prototypes by CV)",
                 SCRATCH: "Normal training (from scratch)",
                 LOGREG: "DMP logistic regression",
                 HGB: "DMP gradient-boosted trees",
                 COSINE: "DMP cosine to seed centroid"}
METHOD_COLORS = {ZERO: "tab:red", PROBE: "tab:purple", TASKS: "tab:pink",
                 FINE_TUNED: "tab:orange",
                 AUTO: "tab:brown",
                 SCRATCH: "tab:blue", LOGREG: "tab:green", HGB: "tab:olive",
                 COSINE: "tab:gray"}

TABLE3, MASKING, IMBALANCE = "table3", "masking", "imbalance"
SEEDS, SEEDS_PU = "seeds", "seeds_pu"
EXPERIMENTS = (TABLE3, MASKING, IMBALANCE, SEEDS, SEEDS_PU)
SEED_EXPERIMENTS = (SEEDS, SEEDS_PU)
MODERATE_LEVELS = (1.0, 0.8, 0.6, 0.4, 0.2)
EXTREME_LEVELS = (0.05, 0.03, 0.01, 0.005)
IMBALANCE_RATIOS = tuple(0.5 * 2 ** k for k in range(7))
SEED_COUNTS = (1, 2, 5, 10, 20, 50, 100, 300)
PU_SEED_COUNTS = (10, 20, 50, 100, 300, 1000)

# Today's columns first, in their order; the AUPR's 95 % bootstrap interval over the test
# users beside them, at the end (empty when the run had no bootstrap).
RESULT_COLUMNS = ("task", "experiment", "level", "method", "repeat", "seed", "auroc", "aupr",
                  "adaptation_users", "adaptation_positives", "test_users", "test_positives",
                  "seconds", "status", "aupr_low", "aupr_high")


# EvalConfig fields that a config's evaluate section may not set: --quick sets ``quick``.
EVAL_DERIVED_FIELDS = ("quick",)


class LeakageError(ValueError):
    """The evaluation would let target labels or adaptation users leak into what is scored."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and with which budget. A run is a pure function of these values,
    the data and the model: the repeats use ``seeds`` (default ``0 .. repeats-1``)."""

    tasks: tuple[str, ...] = ()  # target tasks; empty = every target task of the config
    max_tasks: int | None = None  # keep only the first N tasks (the quick preset uses 2)
    repeats: int = 3
    seeds: tuple[int, ...] = ()  # one per repeat; overrides ``repeats`` when given
    experiments: tuple[str, ...] = EXPERIMENTS
    methods: tuple[str, ...] = METHODS  # Table 3
    # Figures 3 and 4 (masking, imbalance): the paper's pair plus the classic baselines; the
    # fine-tuned model doubles their cost (add it with figure_methods=METHODS).
    figure_methods: tuple[str, ...] = (ZERO, PROBE, TASKS, SCRATCH, LOGREG, HGB, COSINE)
    # the seed-count sweeps (labelled negatives, and PU)
    seed_sweep_methods: tuple[str, ...] = (ZERO, PROBE, TASKS, AUTO, LOGREG, HGB, COSINE)
    adaptation_fraction: float = 0.5  # share of a task's labelled users used for adaptation
    masking_levels: tuple[float, ...] = MODERATE_LEVELS + EXTREME_LEVELS
    imbalance_ratios: tuple[float, ...] = IMBALANCE_RATIOS
    imbalance_total: int | None = None  # None: the largest total every ratio can reach
    seed_counts: tuple[int, ...] = SEED_COUNTS
    # seeds_pu: n positive seeds, negatives = pu_background unlabelled adaptation-side users
    pu_seed_counts: tuple[int, ...] = PU_SEED_COUNTS
    pu_background: int = 1000
    # fine-tuning and from-scratch budget (adapt.AdaptConfig): early-stopped on a validation
    # fold of the adaptation subset, at most fine_tune_epochs epochs
    fine_tune_epochs: int = 20
    patience: int = 2
    # the trained methods (fine-tuned, scratch) adapt on at most this many support users, a
    # prevalence-keeping subsample of the trial's support (None: the whole support); the
    # other methods always see the whole support. Caps their cost at 50,000 users.
    trained_max_users: int | None = None
    batch_size: int = 32  # query users per fine-tuning episode
    k_shot: int = 1  # supports per class per fine-tuning episode
    learning_rate: float = 1e-4  # fine-tuning: small steps from the meta-trained weights
    scratch_learning_rate: float = 1e-3  # from scratch: random weights need larger steps
    embed_batch_size: int = 128  # users densified and embedded at a time
    read_batch_size: int = 64  # users per batch of the TFRecord pipeline
    # bootstrap copies of each (repeat, task) test set behind the 95 % intervals
    # (evaluation/intervals.py); 0 leaves the intervals out
    bootstrap_replicates: int = 200
    scratch_cache: bool = True  # reuse from-scratch results of earlier runs (ScratchCache)
    scratch_cache_dir: str | None = None  # default: <storage reports>/evaluation/_scratch_cache
    quick: bool = False  # set by quick_preset (recorded in results.json)

    def __post_init__(self) -> None:
        problems = []
        for name, values, known in (("experiments", self.experiments, EXPERIMENTS),
                                    ("methods", self.methods, METHODS),
                                    ("figure_methods", self.figure_methods, METHODS),
                                    ("seed_sweep_methods", self.seed_sweep_methods, METHODS)):
            unknown = [v for v in values if v not in known]
            if unknown:
                problems.append(f"{name}: {unknown} not in {list(known)}")
        if not self.seeds and self.repeats < 1:
            problems.append(f"repeats: {self.repeats} must be at least 1")
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: {list(self.seeds)} repeats a seed")
        if not 0.0 < self.adaptation_fraction < 1.0:
            problems.append(f"adaptation_fraction: {self.adaptation_fraction} must lie in (0, 1)")
        if any(not 0.0 < f <= 1.0 for f in self.masking_levels):
            problems.append(f"masking_levels: {list(self.masking_levels)} must lie in (0, 1]")
        if any(r <= 0 for r in self.imbalance_ratios):
            problems.append(f"imbalance_ratios: {list(self.imbalance_ratios)} must be positive")
        for name in ("seed_counts", "pu_seed_counts"):
            if any(n < 1 for n in getattr(self, name)):
                problems.append(f"{name}: {list(getattr(self, name))} must be at least 1")
        if self.trained_max_users is not None and self.trained_max_users < 2:
            problems.append(f"trained_max_users: {self.trained_max_users} must be at least 2 "
                            "(one user of each class)")
        if self.imbalance_total is not None and self.imbalance_total < 2:
            problems.append(f"imbalance_total: {self.imbalance_total} must be at least 2")
        if self.max_tasks is not None and self.max_tasks < 1:
            problems.append(f"max_tasks: {self.max_tasks} must be at least 1")
        for name in ("fine_tune_epochs", "patience", "batch_size", "k_shot",
                     "embed_batch_size", "read_batch_size", "pu_background"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} must be at least 1")
        if self.bootstrap_replicates < 0 or 0 < self.bootstrap_replicates < 20:
            problems.append(f"bootstrap_replicates: {self.bootstrap_replicates} must be 0 "
                            "(no intervals) or at least 20")
        if self.learning_rate <= 0 or self.scratch_learning_rate <= 0:
            problems.append("learning_rate and scratch_learning_rate must be positive")
        if problems:
            raise ValueError("invalid evaluation config: " + "; ".join(problems))

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(self.seeds) if self.seeds else tuple(range(self.repeats))

    def methods_for(self, experiment: str) -> tuple[str, ...]:
        if experiment in SEED_EXPERIMENTS:
            return tuple(self.seed_sweep_methods)
        if experiment in (MASKING, IMBALANCE):
            return tuple(self.figure_methods)
        return tuple(self.methods)

    @classmethod
    def quick_preset(cls, **changes) -> "EvalConfig":
        """For CI and DAG runs: 1 repeat, 2 tasks, Table 3 without the fine-tuned model, at
        most 3 epochs of training from scratch, 3 masking levels, 3 imbalance ratios, 3 seed
        counts per sweep."""
        values = dict(repeats=1, max_tasks=2, fine_tune_epochs=3, patience=1,
                      methods=tuple(m for m in METHODS if m != FINE_TUNED),
                      masking_levels=(1.0, 0.2, 0.05), imbalance_ratios=(0.5, 2.0, 8.0),
                      seed_counts=(5, 20, 100), pu_seed_counts=(10, 50, 300), quick=True)
        values.update(changes)
        return cls(**values)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "seed_list": list(self.seed_list)}
