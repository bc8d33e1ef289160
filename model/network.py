"""The profile network g_θ (paper section 3.3): one Table 2 CNN tower per heatmap modality,
a small demographic tower, and a fusion layer that gives the user embedding.

Table 2, one tower over ``[B, 365, 24, C]`` (conv stride 1, ``same`` padding; each conv is
followed by batch normalisation and ReLU, then max pooling with stride = pool size)::

    level  filters  kernel  pool    output
    1      64       (7, 2)  (7, 2)  52 x 12 x 64
    2      128      (4, 2)  (4, 2)  13 x 6 x 128
    3      256      (3, 2)  (3, 2)  4 x 3 x 256
    4      512      (1, 1)  (4, 3)  1 x 1 x 512  -> flatten 512

Two departures, both inert at full size:

* ``width`` multiplies every filter count (``round(f * width)``, at least 1) so tests and demos
  can run a narrow network; at ``width=1.0`` the counts are Table 2's.
* Short windows (tests use 14–28 days) are smaller than a pool: each pool size is clipped to
  the feature map it pools, and when the last pool does not reach 1 x 1 (a window much longer
  than a year) the tower ends with a global max pool instead of a flatten. For the 365-day
  window neither rule fires and the tower is exactly Table 2.

The convolutions carry no bias: the batch normalisation that follows subtracts the batch
mean and adds its own learned offset (beta), so a conv bias would be a redundant parameter.

The fusion layer is **linear**: the user embedding is averaged into support prototypes and
fed to the relation module, whose first layer is followed by a ReLU anyway; a ReLU here would
add nothing to the relation's expressiveness but could zero embedding dimensions that the
nightly job exports for every user. It computes in float32 even under mixed precision so the
exported embeddings and the relation logits never see float16 rounding.

Parameter count (``metaprofile model-summary``): for ``conf/synthetic.yaml`` at full size the
meta-model has **1,612,745** parameters (1,608,905 trainable plus 3,840 batch-norm moving
statistics), against the paper's "about 2 million". The parts:

* each Table 2 tower: 393,216 + 896·C conv weights (7·2·C·64 + 4·2·64·128 + 3·2·128·256 +
  1·1·256·512, no biases) and 3,840 batch-norm values (γ, β trainable; mean, variance not):
  purchases (C = 12) 407,808, points (C = 4) 400,640;
* demographics (2 numeric values + 2 missing flags, gender and region embeddings of 4,
  Dense 12 → 32): 456;
* fusion Dense(512 + 512 + 32 → 512): 541,184;
* relation module f_θ (one hidden ReLU layer over concat(q, p), 1,024 → 256, then the
  logit): 262,657.

The towers — the only part the paper specifies exactly — are 0.81 M. The rest depends on
what the paper leaves open: its channel count (the Ichiba example in section 3.1 names
channel 28, so at least 29 purchase channels: +15 k), and the sizes of its fusion and
relation layers, which it does not give. A relation MLP of 512 → 128 would bring ours to
1.94 M. We keep one hidden layer of 256 because of what the nightly job computes: the first
layer splits into a user half (once per user) and a campaign half (once per campaign), so
per (user, campaign) pair only the ReLU and the logit remain, 256 multiply-adds. A second
hidden layer of 64 would add 16,384 per pair: over 100 campaigns that is 12 times the
user half, and scoring would no longer cost about the same for 1 and 100 campaigns.
``--relation-units 256,64`` builds the deeper head.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras

from model.relation import RelationModule
from model.settings import ModelConfig
from schemas.input_spec import InputSpec
from schemas.tfrecord_spec import heatmap_key

PACKAGE = "metaprofile"

# (filters, kernel, pool) per level of Table 2.
TABLE2_LEVELS: tuple[tuple[int, tuple[int, int], tuple[int, int]], ...] = (
    (64, (7, 2), (7, 2)),
    (128, (4, 2), (4, 2)),
    (256, (3, 2), (3, 2)),
    (512, (1, 1), (4, 3)),
)
FULL_SIZE_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "synthetic.yaml"


def input_name(batch_key: str) -> str:
    """Keras forbids '/' in layer names, so ``heatmap/purchases`` is ``heatmap__purchases``."""
    return batch_key.replace("/", "__")


def feature_keys(spec: InputSpec) -> tuple[str, ...]:
    """Batch keys the profile network reads (labels, mask and user_id are not features)."""
    keys = list(spec.heatmap_keys)
    if spec.numeric:
        keys += ["demo/numeric", "demo/numeric_missing"]
    keys += [f"demo/{name}" for name, _ in spec.categorical]
    return tuple(keys)


def select_inputs(batch: dict, spec: InputSpec) -> dict:
    """The profile network's input dict from a batch dict of schemas/input_spec.py."""
    missing = [k for k in feature_keys(spec) if k not in batch]
    if missing:
        raise KeyError(f"batch lacks feature(s) {missing}; it has {sorted(batch)}")
    return {input_name(k): batch[k] for k in feature_keys(spec)}


# --------------------------------------------------------------------------- towers


def scaled_filters(filters: int, width: float) -> int:
    return max(1, int(round(filters * width)))


def clipped_pool(pool: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """A pool no larger than the map it pools, so short test windows still build."""
    return (min(pool[0], size[0]), min(pool[1], size[1]))


@keras.saving.register_keras_serializable(package=PACKAGE)
class HeatmapTotals(keras.layers.Layer):
    """``[B, D, 24, C]`` → ``[B, C + 24]``: log1p of the per-channel and per-hour sums of
    the cell magnitudes over the whole window (no weights)."""

    def call(self, heatmap):
        cells = keras.ops.abs(heatmap)
        channels = keras.ops.sum(cells, axis=(1, 2))  # [B, C]
        hours = keras.ops.sum(cells, axis=(1, 3))  # [B, 24]
        return keras.ops.log1p(keras.ops.concatenate([channels, hours], axis=-1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3] + input_shape[2])


def build_tower(modality: str, shape: tuple[int, int, int], cfg: ModelConfig) -> keras.Model:
    """One Table 2 CNN over a ``[B, D, 24, C]`` heatmap → ``[B, round(512·width)]``, plus
    ``totals_units`` when the totals branch is on."""
    inputs = keras.Input(shape=shape, name=f"{modality}_heatmap")  # [B, D, 24, C]
    x = inputs
    for level, (filters, kernel, pool) in enumerate(TABLE2_LEVELS, start=1):
        x = keras.layers.Conv2D(scaled_filters(filters, cfg.width), kernel, strides=1,
                                padding="same", use_bias=False, dtype=cfg.precision,
                                name=f"conv_{level}")(x)  # [B, D_l, H_l, F_l]
        x = keras.layers.BatchNormalization(momentum=cfg.bn_momentum, dtype=cfg.precision,
                                            name=f"bn_{level}")(x)
        x = keras.layers.ReLU(dtype=cfg.precision, name=f"relu_{level}")(x)
        x = keras.layers.MaxPooling2D(clipped_pool(pool, tuple(x.shape[1:3])),
                                      dtype=cfg.precision, name=f"max_pool_{level}")(x)
    if tuple(x.shape[1:3]) == (1, 1):
        x = keras.layers.Flatten(dtype=cfg.precision, name="flatten")(x)  # [B, F_4]
    else:
        x = keras.layers.GlobalMaxPooling2D(dtype=cfg.precision, name="global_max_pool")(x)
    if cfg.totals_units:
        totals = HeatmapTotals(dtype="float32", name="totals")(inputs)  # [B, C + 24]
        totals = keras.layers.Dense(cfg.totals_units, activation="relu", dtype=cfg.precision,
                                    name="totals_dense")(totals)  # [B, totals_units]
        x = keras.layers.Concatenate(dtype=cfg.precision, name="with_totals")([x, totals])
    return keras.Model(inputs, x, name=f"tower_{modality}")


def build_demographic_tower(spec: InputSpec, cfg: ModelConfig) -> keras.Model | None:
    """Numeric values, their missing flags and one embedding per categorical → Dense ReLU.

    Categorical id 0 means missing, so each embedding has ``vocabulary + 1`` rows and the
    missing value learns its own vector. ``None`` when the config has no demographics.
    """
    if not spec.numeric and not spec.categorical:
        return None
    inputs, parts = {}, []
    if spec.numeric:
        width = len(spec.numeric)
        for key in ("demo/numeric", "demo/numeric_missing"):
            inputs[input_name(key)] = keras.Input(shape=(width,), name=input_name(key))  # [B, F]
            parts.append(inputs[input_name(key)])
    for name, vocabulary in spec.categorical:
        key = input_name(f"demo/{name}")
        inputs[key] = keras.Input(shape=(), dtype="int32", name=key)  # [B]
        embedded = keras.layers.Embedding(vocabulary + 1, cfg.categorical_embedding_dim,
                                          name=f"embed_{name}")(inputs[key])  # [B, e]
        parts.append(embedded)
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="concat")(parts)
    x = keras.layers.Dense(cfg.demo_units, activation="relu", name="dense")(x)  # [B, demo_units]
    return keras.Model(inputs, x, name="demographics")


def build_profile_network(spec: InputSpec, cfg: ModelConfig) -> keras.Model:
    """g_θ: the feature dict (keys from :func:`select_inputs`) → user embedding ``[B, E]``."""
    inputs = {}
    parts = []
    for name, _ in spec.modalities:
        key = input_name(heatmap_key(name))
        inputs[key] = keras.Input(shape=spec.heatmap_shape(name), name=key)  # [B, D, 24, C]
        parts.append(build_tower(name, spec.heatmap_shape(name), cfg)(inputs[key]))
    demographics = build_demographic_tower(spec, cfg)
    if demographics is not None:
        demo_inputs = {k: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=k)
                       for k, t in demographics.input.items()}
        inputs.update(demo_inputs)
        parts.append(demographics(demo_inputs))  # [B, demo_units]
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(
        dtype=cfg.precision, name="concat_towers")(parts)
    embedding = keras.layers.Dense(cfg.embedding_dim, activation=cfg.embedding_activation,
                                   dtype="float32", name="fusion")(x)  # [B, E]
    return keras.Model(inputs, embedding, name="profile_network")


# --------------------------------------------------------------------------- meta-model


@keras.saving.register_keras_serializable(package=PACKAGE)
class MetaProfileModel(keras.Model):
    """The whole meta-model: profile network g_θ and relation module f_θ, saved as one
    ``.keras`` file. ``model(batch)`` embeds a batch dict; :meth:`score` is f_θ."""

    def __init__(self, profile: keras.Model, relation: RelationModule, spec: InputSpec,
                 **kwargs):
        super().__init__(**kwargs)
        self.profile = profile
        self.relation = relation
        self.spec = spec
        if not relation.built:
            relation.build((None, profile.output.shape[-1]))
        self.built = True

    def call(self, batch, training=None):
        return self.profile(select_inputs(batch, self.spec), training=training)  # [B, E]

    def embed(self, batch, training=None):
        return self(batch, training=training)

    def score(self, query_embedding, pos_prototype, neg_prototype=None, has_negatives=None):
        """Relation logits ``[B, N]``; see :meth:`RelationModule.relation_logits`."""
        return self.relation.relation_logits(query_embedding, pos_prototype, neg_prototype,
                                             has_negatives)

    def get_config(self) -> dict:
        return {**super().get_config(),
                "profile": keras.saving.serialize_keras_object(self.profile),
                "relation": keras.saving.serialize_keras_object(self.relation),
                "spec": self.spec.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "MetaProfileModel":
        config = dict(config)
        profile = keras.saving.deserialize_keras_object(config.pop("profile"))
        relation = keras.saving.deserialize_keras_object(config.pop("relation"))
        spec = InputSpec.from_dict(config.pop("spec"))
        return cls(profile=profile, relation=relation, spec=spec, **config)


def build_meta_model(spec: InputSpec, cfg: ModelConfig) -> MetaProfileModel:
    """g_θ and f_θ, freshly initialised (seed first with ``keras.utils.set_random_seed``)."""
    profile = build_profile_network(spec, cfg)
    relation = RelationModule(cfg.relation_units, name="relation")
    return MetaProfileModel(profile, relation, spec, name="meta_profile")


def clone_meta_model(model: MetaProfileModel, cfg: ModelConfig) -> MetaProfileModel:
    """A copy with its own variables (same weights) built with ``cfg``'s precision."""
    copy = build_meta_model(model.spec, cfg)
    copy.set_weights(model.get_weights())
    return copy


# --------------------------------------------------------------------------- size


def part_parameter_counts(model: MetaProfileModel) -> dict[str, dict[str, int]]:
    """Trainable and non-trainable parameter counts per part of the meta-model."""
    parts = {}
    for layer in model.profile.layers:
        if layer.weights:
            parts[layer.name] = layer
    parts["relation"] = model.relation
    return {name: {"trainable": _count(layer.trainable_weights),
                   "non_trainable": _count(layer.non_trainable_weights)}
            for name, layer in parts.items()}


def _count(weights) -> int:
    total = 0
    for w in weights:
        n = 1
        for d in w.shape:
            n *= int(d)
        total += n
    return total


def full_size_spec(config_path: str | Path = FULL_SIZE_CONFIG) -> InputSpec:
    from schemas.config import load_config
    return InputSpec.from_config(load_config(config_path))


def full_size_parameter_count(config_path: str | Path = FULL_SIZE_CONFIG,
                              cfg: ModelConfig | None = None) -> dict:
    """Build (not train) the full-size meta-model for a pipeline config and count it.

    Returns ``{"total", "trainable", "non_trainable", "parts": {name: {...}}}``.
    """
    model = build_meta_model(full_size_spec(config_path), cfg or ModelConfig())
    parts = part_parameter_counts(model)
    trainable = sum(p["trainable"] for p in parts.values())
    non_trainable = sum(p["non_trainable"] for p in parts.values())
    return {"total": trainable + non_trainable, "trainable": trainable,
            "non_trainable": non_trainable, "parts": parts}


def parameter_explanation() -> str:
    """The module docstring's account of the parameter count against the paper's."""
    text = __doc__ or ""
    return text[text.index("Parameter count"):].strip()


def tower_output_shapes(tower: keras.Model) -> list[tuple[str, tuple]]:
    """``(layer name, output shape without batch)`` for every layer of a tower."""
    return [(layer.name, tuple(layer.output.shape[1:])) for layer in tower.layers]


def describe(spec: InputSpec, cfg: ModelConfig) -> str:
    """A human-readable summary: towers' shapes and parameter counts per part."""
    model = build_meta_model(spec, cfg)
    lines = [f"meta-model for {spec.days} days x {spec.hours} hours, modalities "
             f"{', '.join(f'{n} ({c} ch)' for n, c in spec.modalities)}; "
             f"config {json.dumps(cfg.to_dict(), sort_keys=True)}"]
    for name, _ in spec.modalities:
        tower = model.profile.get_layer(f"tower_{name}")
        shapes = " -> ".join(f"{'x'.join(str(d) for d in s)}" for n, s in
                             tower_output_shapes(tower) if n.startswith(("max_pool", "flatten",
                                                                         "global")))
        lines.append(f"  tower_{name}: {shapes}")
    parts = part_parameter_counts(model)
    for name, counts in parts.items():
        lines.append(f"  {name:<20} {counts['trainable']:>11,} trainable "
                     f"{counts['non_trainable']:>8,} non-trainable")
    trainable = sum(p["trainable"] for p in parts.values())
    non_trainable = sum(p["non_trainable"] for p in parts.values())
    lines.append(f"  {'total':<20} {trainable + non_trainable:>11,} "
                 f"({trainable:,} trainable)")
    return "\n".join(lines)
