"""The learning-rate schedule of paper section 4.1: cyclical, then warm restarts.

Phase 1 — triangular cyclical learning rate (Smith 2017, "Cyclical learning rates for
training neural networks"): the rate climbs linearly from ``base_lr`` to ``max_lr`` over
``step_size`` steps and back down over the next ``step_size``; ``cycles`` such cycles
(``2·step_size·cycles`` steps) speed up the early convergence.

Phase 2 — SGDR cosine annealing with warm restarts (Loshchilov & Hutter 2017): period i lasts
``first_period·t_mul^i`` steps, during which the rate falls along half a cosine from
``restart_lr·m_mul^i`` to ``min_lr``, then jumps back up. The restarts let the optimiser
leave a sharp minimum while the decaying peaks settle it.

The schedule is a function of the optimiser's step counter only, so a resumed run continues
on the same curve.
"""
from __future__ import annotations

import math

import keras
from keras import ops

from model.settings import ScheduleConfig

PACKAGE = "metaprofile"


@keras.saving.register_keras_serializable(package=PACKAGE)
class CyclicThenRestarts(keras.optimizers.schedules.LearningRateSchedule):
    """Triangular CLR for ``2·step_size·cycles`` steps, then SGDR (see module docstring)."""

    def __init__(self, base_lr: float, max_lr: float, step_size: int, cycles: int,
                 first_period: int, t_mul: float = 2.0, m_mul: float = 1.0,
                 min_lr: float = 0.0, restart_lr: float | None = None):
        self.base_lr = float(base_lr)
        self.max_lr = float(max_lr)
        self.step_size = int(step_size)
        self.cycles = int(cycles)
        self.first_period = int(first_period)
        self.t_mul = float(t_mul)
        self.m_mul = float(m_mul)
        self.min_lr = float(min_lr)
        self.restart_lr = float(restart_lr) if restart_lr is not None else None

    @property
    def cyclic_steps(self) -> int:
        return 2 * self.step_size * self.cycles

    def __call__(self, step):
        step = ops.cast(step, "float32")
        return ops.where(step < self.cyclic_steps, self._triangular(step),
                         self._restarts(step - self.cyclic_steps))

    def _triangular(self, step):
        half = float(self.step_size)
        position = ops.abs(ops.mod(step, 2.0 * half) / half - 1.0)  # 1 at cycle ends, 0 mid
        return self.base_lr + (self.max_lr - self.base_lr) * (1.0 - position)

    def _restarts(self, t):
        t = ops.maximum(t, 0.0)
        period, start, first = self._period_of(t)
        progress = (t - start) / first  # in [0, 1)
        peak = (self.restart_lr or self.max_lr) * ops.power(self.m_mul, period)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        return self.min_lr + (peak - self.min_lr) * cosine

    def _period_of(self, t):
        """Index i of the SGDR period holding step t, its first step and its length."""
        t0 = float(self.first_period)
        if self.t_mul == 1.0:
            period = ops.floor(t / t0)
            return period, period * t0, ops.ones_like(t) * t0
        r = self.t_mul
        period = ops.floor(ops.log1p(t / t0 * (r - 1.0)) / math.log(r))
        # The logarithm can land a hair below an integer at a period boundary: correct by one.
        start = t0 * (ops.power(r, period) - 1.0) / (r - 1.0)
        next_start = t0 * (ops.power(r, period + 1.0) - 1.0) / (r - 1.0)
        period = ops.where(t >= next_start, period + 1.0, ops.where(t < start, period - 1.0,
                                                                      period))
        start = t0 * (ops.power(r, period) - 1.0) / (r - 1.0)
        return period, start, t0 * ops.power(r, period)

    def get_config(self) -> dict:
        return {"base_lr": self.base_lr, "max_lr": self.max_lr, "step_size": self.step_size,
                "cycles": self.cycles, "first_period": self.first_period, "t_mul": self.t_mul,
                "m_mul": self.m_mul, "min_lr": self.min_lr, "restart_lr": self.restart_lr}


def build_schedule(cfg: ScheduleConfig) -> CyclicThenRestarts:
    """The learning-rate schedule that ``cfg`` describes."""
    return CyclicThenRestarts(**cfg.to_dict())
