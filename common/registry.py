"""Which model the nightly jobs use: ``<models>/published.json``, and what a model expects.

Publishing is a pointer swap: ``published.json`` names one artifact directory and is
replaced whole (written beside and renamed), so the nightly jobs see the old or the new
model, never a mix. ``history.jsonl`` keeps one line per publication.

Nothing here imports TensorFlow: the pointer and an artifact's JSON files are enough to
check that a model fits a config, so Spark drivers can refuse a mismatch before any
executor loads the model.
"""
from __future__ import annotations

import datetime as dt
import json

from common import storage
from common.errors import PipelineError
from common.publish import Publisher
from schemas.config import PipelineConfig
from schemas.input_spec import InputSpec
from schemas.tfrecord_spec import spec_differences

POINTER = "published.json"
HISTORY = "history.jsonl"


class RegistryError(PipelineError):
    """No published model, an unfinished artifact, or one built for other inputs."""


def published_model(config: PipelineConfig) -> dict:
    """The published pointer: ``path``, ``version``, ``published_at`` and the evaluation."""
    pointer = storage.join(config.storage.uri("models"), POINTER)
    if not storage.exists(pointer):
        raise RegistryError(f"no published model: {pointer} does not exist; train one and run "
                            f"`metaprofile publish --model <dir>`, or pass --model")
    return storage.read_json(pointer)


def describe_model(model_path: str, config: PipelineConfig) -> dict:
    """Version, embedding size and input normalisation of an artifact that fits ``config``."""
    path = model_path.rstrip("/")
    for name in ("_SUCCESS", "input_spec.json", "model_config.json", "normalisation.json"):
        if not storage.exists(storage.join(path, name)):
            raise RegistryError(f"{path} is not a complete model artifact: no {name}")
    differences = spec_differences(storage.read_json(storage.join(path, "input_spec.json")),
                                   InputSpec.from_config(config).to_dict(), "input_spec.")
    if differences:
        raise RegistryError(f"model {path} was built for other inputs than config "
                            f"{config.name!r}:\n  - " + "\n  - ".join(differences))
    model_config = storage.read_json(storage.join(path, "model_config.json"))
    return {"path": path, "version": path.rsplit("/", 1)[-1],
            "embedding_dim": int(model_config["embedding_dim"]),
            "normalisation": storage.read_json(storage.join(path, "normalisation.json"))}


def publish(config: PipelineConfig, model_path: str, evaluation: dict | None = None,
            now: dt.datetime | None = None) -> dict:
    """Point ``published.json`` at ``model_path`` (checked against ``config``)."""
    info = describe_model(model_path, config)
    models = config.storage.uri("models")
    previous = None
    if storage.exists(storage.join(models, POINTER)):
        previous = storage.read_json(storage.join(models, POINTER)).get("version")
    document = {"path": info["path"], "version": info["version"],
                "published_at": (now or dt.datetime.now(dt.timezone.utc)).isoformat(),
                "previous": previous, "evaluation": evaluation or {}}
    _replace_json(document, storage.join(models, POINTER))
    _append_line(json.dumps(document, sort_keys=True), storage.join(models, HISTORY))
    return document


def _replace_json(document: dict, uri: str) -> None:
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    Publisher().replace_file(uri, text.encode())


def _append_line(line: str, uri: str) -> None:
    existing = storage.read_bytes(uri).decode() if storage.exists(uri) else ""
    Publisher().replace_file(uri, (existing + line + "\n").encode())
