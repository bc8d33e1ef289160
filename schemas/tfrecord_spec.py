"""The TFRecord feature spec: one ``tf.train.Example`` per user.

Described with plain data so that Spark executors (which write with the ``tfrecord``
package) and TensorFlow readers (``tf.io.parse_example``) share it without importing each
other. Per modality the heatmap is sparse: a flat int64 index ``(day*24 + hour)*C + channel``
and the matching float values. The spec's fingerprint is stored in every manifest; readers
refuse shards whose fingerprint differs from the model's.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from schemas import SCHEMA_VERSION
from schemas.config import PipelineConfig

# Feature keys, declared once. One modality's heatmap is spelt three ways: as TFRecord
# features, as Spark/Arrow columns (no "/" in a column name), and as a batch's dense tensor.
HEATMAP_PREFIX = "heatmap/"


def record_index_key(modality: str) -> str:
    return f"{modality}/index"


def record_value_key(modality: str) -> str:
    return f"{modality}/value"


def column_index_key(modality: str) -> str:
    return f"{modality}__index"


def column_value_key(modality: str) -> str:
    return f"{modality}__value"


def heatmap_key(modality: str) -> str:
    return f"{HEATMAP_PREFIX}{modality}"

HOURS = 24


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str  # 'bytes' | 'int64' | 'float'
    length: str  # 'var' (VarLenFeature) or 'fixed' (one value, FixedLenFeature)
    dense_shape: tuple[int, ...] | None = None  # heatmap indices: shape they index into


def flat_index(day: int, hour: int, channel: int, num_channels: int) -> int:
    return (day * HOURS + hour) * num_channels + channel


def unflatten_index(index: int, num_channels: int) -> tuple[int, int, int]:
    cell, channel = divmod(index, num_channels)
    day, hour = divmod(cell, HOURS)
    return day, hour, channel


def feature_specs(config: PipelineConfig) -> tuple[FeatureSpec, ...]:
    days = config.window.days
    specs = [FeatureSpec("user_id", "bytes", "fixed")]
    for m in config.modalities:
        shape = (days, HOURS, m.num_channels)
        specs.append(FeatureSpec(record_index_key(m.name), "int64", "var", shape))
        specs.append(FeatureSpec(record_value_key(m.name), "float", "var", shape))
    specs += [FeatureSpec(f"demo/{n}", "float", "fixed") for n in config.demographics.numeric]
    specs += [FeatureSpec(f"demo/{c.name}", "bytes", "fixed")
              for c in config.demographics.categorical]
    for t in config.source_tasks:
        specs.append(FeatureSpec(f"label/{t.name}", "int64", "fixed"))
        specs.append(FeatureSpec(f"mask/{t.name}", "int64", "fixed"))
    return tuple(specs)


def spec_document(config: PipelineConfig) -> dict:
    """The spec as stored in ``_manifest.json``: versioned, with the channel names.

    Plain JSON data (lists, not tuples), so a document read back from a manifest compares
    equal to a freshly built one.
    """
    return json.loads(json.dumps({
        "schema_version": SCHEMA_VERSION,
        "window_days": config.window.days,
        "value_transform": config.value_transform,
        "modalities": {m.name: [c.name for c in m.channels] for m in config.modalities},
        "demographics": {
            "numeric": list(config.demographics.numeric),
            "categorical": {c.name: list(c.vocabulary) for c in config.demographics.categorical},
        },
        "source_tasks": [t.name for t in config.source_tasks],
        "features": [asdict(s) for s in feature_specs(config)],
    }))


def spec_fingerprint(document: dict) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def spec_differences(expected: dict, actual: dict, prefix: str = "") -> list[str]:
    """Dotted paths where two spec documents differ, for errors that name the field."""
    diffs = []
    for key in sorted(set(expected) | set(actual)):
        path = f"{prefix}{key}"
        a, b = expected.get(key, "<missing>"), actual.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += spec_differences(a, b, f"{path}.")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                if isinstance(x, dict) and isinstance(y, dict):
                    diffs += spec_differences(x, y, f"{path}[{i}].")
                elif x != y:
                    diffs.append(f"{path}[{i}]: model expects {x!r}, data has {y!r}")
        elif a != b:
            diffs.append(f"{path}: model expects {a!r}, data has {b!r}")
    return diffs
