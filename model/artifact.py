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

The directory is published like every dataset (:class:`common.publish.Publisher`): staged
beside its final place and renamed, so on local disk and HDFS a reader sees the whole
artifact or none; on object stores ``_SUCCESS`` comes last and readers check it. Keras saves
to a local file, so for a remote root the files are written locally first, then copied into
the remote staging folder.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass

import keras

from common import storage
from common.publish import Publisher
from model.network import MetaProfileModel, clone_meta_model
from model.settings import ModelConfig
from schemas.identifiers import check_identifier
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


def save_artifact(model: MetaProfileModel, model_cfg: ModelConfig, spec: InputSpec,
                  feature_spec: dict, metrics: dict, data_manifest_sha256: str,
                  models_root: str, version: str | None = None,
                  normalisation: dict | None = None) -> str:
    """Write ``<models_root>/<version>/`` and return its path. Refuses an existing version."""
    version = check_identifier(version or new_version(), "model version",
                               "choose a version name that keeps it")
    final = f"{models_root.rstrip('/')}/{version}"
    publisher = Publisher()
    if publisher.exists(final):
        raise FileExistsError(f"model version {final} already exists; versions are immutable")
    float32_cfg = dataclasses.replace(model_cfg, precision="float32")
    if model_cfg.precision != "float32":
        model = clone_meta_model(model, float32_cfg)
    with publisher.staged(final) as staging:
        if storage.is_local(staging):
            _write_files(storage.local_path(staging), model, float32_cfg, spec, feature_spec,
                         metrics, data_manifest_sha256, normalisation or {})
        else:
            with tempfile.TemporaryDirectory() as local:
                _write_files(local, model, float32_cfg, spec, feature_spec, metrics,
                             data_manifest_sha256, normalisation or {})
                for name in sorted(os.listdir(local)):
                    with open(os.path.join(local, name), "rb") as fh:
                        storage.write_bytes(fh.read(), f"{staging}/{name}")
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


def _read_text(path: str) -> str:
    return storage.read_bytes(path).decode("utf-8")


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
               if not storage.exists(f"{path}/{n}")]
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
    if storage.is_local(uri):
        return keras.saving.load_model(storage.local_path(uri), safe_mode=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        with open(local, "wb") as fh:
            fh.write(storage.read_bytes(uri))
        return keras.saving.load_model(local, safe_mode=True)


def relation_weights(path: str, expected_spec: InputSpec):
    """f_θ of the artifact at ``path`` as numpy (``model.scoring.RelationWeights``), for the
    drivers that score or choose heads without running Keras per user."""
    from model.scoring import RelationWeights
    return RelationWeights.from_module(load_artifact(path, expected_spec).model.relation)
