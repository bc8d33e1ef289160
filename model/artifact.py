"""Versioned model artifacts: ``<models_root>/<version>/``, written whole or not at all.

Kept apart from ``model/train.py`` because the nightly embedding and scoring jobs load
artifacts without any training code. A version directory holds:

======================== ==============================================================
``model.keras``          the meta-model (profile network g_θ + relation module f_θ), float32;
                         loads with ``keras.saving.load_model(..., safe_mode=True)``
``model_config.json``    :class:`model.network.ModelConfig`
``input_spec.json``      :class:`schemas.input_spec.InputSpec` the model was built for
``feature_spec.json``    the TFRecord spec document of the training data (its manifest's)
``metrics.json``         training and validation metrics
``normalisation.json``   the training split's mean and std of each numeric demographic (the
                         manifest's ``numeric_normalisation``), so embedding jobs scale
                         inputs exactly as training did
``data_manifest_sha256`` the SHA-256 of the heatmap manifest it was trained on
``_SUCCESS``             written last
======================== ==============================================================

On local disk the directory is staged beside its final place and renamed, so a reader sees
the whole artifact or none. Other file systems are written through ``tf.io.gfile`` (so any
scheme TensorFlow has a file system for works) with ``_SUCCESS`` last; readers check it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import keras
import tensorflow as tf

from model.network import MetaProfileModel, ModelConfig, clone_meta_model
from schemas.input_spec import InputSpec
from schemas.tfrecord_spec import spec_differences

MODEL_FILE = "model.keras"
SUCCESS = "_SUCCESS"
JSON_FILES = ("model_config.json", "input_spec.json", "feature_spec.json", "metrics.json")
MANIFEST_FILE = "data_manifest_sha256"


class ArtifactMismatch(ValueError):
    """The artifact was built for other inputs than the caller's; ``differences`` lists one
    ``field: model expects X, data has Y`` each."""

    def __init__(self, path: str, differences: list[str]):
        self.path = path
        self.differences = differences
        super().__init__(f"model artifact {path} does not match the data:\n  - "
                         + "\n  - ".join(differences))


@dataclass(frozen=True)
class Artifact:
    path: str
    version: str
    model: MetaProfileModel
    model_config: ModelConfig
    input_spec: InputSpec
    feature_spec: dict
    metrics: dict
    data_manifest_sha256: str


def new_version(now: dt.datetime | None = None) -> str:
    """A sortable UTC version name, e.g. ``20260630T021500Z``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local(uri: str) -> str:
    return os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)


def save_artifact(model: MetaProfileModel, model_cfg: ModelConfig, spec: InputSpec,
                  feature_spec: dict, metrics: dict, data_manifest_sha256: str,
                  models_root: str, version: str | None = None,
                  normalisation: dict | None = None) -> str:
    """Write ``<models_root>/<version>/`` and return its path. Refuses an existing version."""
    version = version or new_version()
    final = f"{models_root.rstrip('/')}/{version}"
    if tf.io.gfile.exists(final):
        raise FileExistsError(f"model version {final} already exists; versions are immutable")
    float32_cfg = dataclasses.replace(model_cfg, precision="float32")
    if model_cfg.precision != "float32":
        model = clone_meta_model(model, float32_cfg)
    staging_parent = (os.path.dirname(_local(final)) if _is_local(models_root)
                      else tempfile.gettempdir())
    os.makedirs(staging_parent, exist_ok=True)
    staging = os.path.join(staging_parent, f".{version}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    try:
        _write_files(staging, model, float32_cfg, spec, feature_spec, metrics,
                     data_manifest_sha256, normalisation or {})
        if _is_local(models_root):
            os.rename(staging, _local(final))
        else:
            _upload(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _write_files(directory: str, model: MetaProfileModel, model_cfg: ModelConfig,
                 spec: InputSpec, feature_spec: dict, metrics: dict, manifest_sha256: str,
                 normalisation: dict) -> None:
    model.save(os.path.join(directory, MODEL_FILE))
    documents = {"model_config.json": model_cfg.to_dict(), "input_spec.json": spec.to_dict(),
                 "feature_spec.json": feature_spec, "metrics.json": metrics,
                 "normalisation.json": normalisation}
    for name, document in documents.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
    with open(os.path.join(directory, MANIFEST_FILE), "w", encoding="ascii") as fh:
        fh.write(manifest_sha256 + "\n")
    open(os.path.join(directory, SUCCESS), "wb").close()


def _upload(staging: str, final: str) -> None:
    tf.io.gfile.makedirs(final)
    names = sorted(os.listdir(staging), key=lambda n: n == SUCCESS)  # _SUCCESS last
    for name in names:
        tf.io.gfile.copy(os.path.join(staging, name), f"{final}/{name}", overwrite=True)


def _read_text(path: str) -> str:
    with tf.io.gfile.GFile(path, "r") as fh:
        return fh.read()


def load_artifact(path: str, expected_spec: InputSpec,
                  expected_feature_spec: dict | None = None) -> Artifact:
    """Load a version directory, refusing one built for other inputs.

    ``expected_spec`` is what the caller will feed (from its pipeline config);
    ``expected_feature_spec`` the TFRecord spec document of the data it will read (its
    manifest's), when it reads TFRecords. A mismatch raises :class:`ArtifactMismatch` naming
    every differing field, before the model itself is loaded.
    """
    path = path.rstrip("/")
    missing = [n for n in (SUCCESS, MODEL_FILE, MANIFEST_FILE, *JSON_FILES)
               if not tf.io.gfile.exists(f"{path}/{n}")]
    if missing:
        raise FileNotFoundError(f"{path} is not a complete model artifact: missing "
                                f"{', '.join(missing)}")
    documents = {name: json.loads(_read_text(f"{path}/{name}")) for name in JSON_FILES}
    differences = spec_differences(documents["input_spec.json"], expected_spec.to_dict(),
                                   "input_spec.")
    if expected_feature_spec is not None:
        differences += spec_differences(documents["feature_spec.json"], expected_feature_spec,
                                        "feature_spec.")
    if differences:
        raise ArtifactMismatch(path, differences)
    model = _load_model(f"{path}/{MODEL_FILE}")
    return Artifact(path=path, version=path.rsplit("/", 1)[-1], model=model,
                    model_config=ModelConfig.from_dict(documents["model_config.json"]),
                    input_spec=InputSpec.from_dict(documents["input_spec.json"]),
                    feature_spec=documents["feature_spec.json"],
                    metrics=documents["metrics.json"],
                    data_manifest_sha256=_read_text(f"{path}/{MANIFEST_FILE}").strip())


def _load_model(uri: str) -> MetaProfileModel:
    if _is_local(uri):
        return keras.saving.load_model(_local(uri), safe_mode=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        tf.io.gfile.copy(uri, local)
        return keras.saving.load_model(local, safe_mode=True)
