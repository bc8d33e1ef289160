"""What the model sees: the shape of one batch, derived from the pipeline config.

This is the seam between the input pipeline (``model/inputs.py``) and the network. Both
sides build their shapes from an :class:`InputSpec`, never from literals. A batch is a dict:

=====================  ==========================  ==============================================
key                    dtype / shape               meaning
=====================  ==========================  ==============================================
``user_id``            string ``[B]``              pseudonymised user id
``heatmap/<modality>`` float32 ``[B, D, 24, C_m]`` dense time-heatmap after the value transform
``demo/numeric``       float32 ``[B, F]``          numeric demographics, standardised; 0 if missing
``demo/numeric_missing`` float32 ``[B, F]``        1 where the numeric field was missing
``demo/<categorical>`` int32 ``[B]``               0 = missing/unknown, 1..V = vocabulary order
``labels``             float32 ``[B, T]``          source-task labels (0 where unlabelled)
``mask``               float32 ``[B, T]``          1 where the user is labelled for the task (Eq. 1)
=====================  ==========================  ==============================================
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas.config import PipelineConfig
from schemas.tfrecord_spec import HOURS, heatmap_key


@dataclass(frozen=True)
class InputSpec:
    days: int
    modalities: tuple[tuple[str, int], ...]  # (name, channels) in config order
    numeric: tuple[str, ...]
    categorical: tuple[tuple[str, int], ...]  # (name, vocabulary size without the 0 id)
    tasks: tuple[str, ...]  # source tasks, in label/mask column order
    hours: int = HOURS

    @classmethod
    def from_config(cls, config: PipelineConfig) -> "InputSpec":
        return cls(
            days=config.window.days,
            modalities=tuple((m.name, m.num_channels) for m in config.modalities),
            numeric=tuple(config.demographics.numeric),
            categorical=tuple((c.name, len(c.vocabulary)) for c in config.demographics.categorical),
            tasks=tuple(t.name for t in config.source_tasks),
        )

    @property
    def heatmap_keys(self) -> tuple[str, ...]:
        return tuple(heatmap_key(name) for name, _ in self.modalities)

    def heatmap_shape(self, modality: str) -> tuple[int, int, int]:
        return (self.days, self.hours, dict(self.modalities)[modality])

    def to_dict(self) -> dict:
        return {"days": self.days, "hours": self.hours,
                "modalities": [list(m) for m in self.modalities],
                "numeric": list(self.numeric),
                "categorical": [list(c) for c in self.categorical],
                "tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(days=int(d["days"]), hours=int(d.get("hours", HOURS)),
                   modalities=tuple((str(n), int(c)) for n, c in d["modalities"]),
                   numeric=tuple(d["numeric"]),
                   categorical=tuple((str(n), int(v)) for n, v in d["categorical"]),
                   tasks=tuple(d["tasks"]))
