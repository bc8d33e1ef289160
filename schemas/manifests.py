"""Typed manifests of the nightly chain, shared by the job that writes one and the jobs that
read it: the embeddings' ``_manifest.json`` (embed → campaigns, score), each campaign's
``support.json`` (campaigns → score, export) and the scores' ``_stats.json`` (score →
export). The JSON layout is the dataclass's fields; a reader gets the dataclass, or a
:class:`ManifestError` naming the file, the field and the job that writes it.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

MANIFEST = "_manifest.json"
SUPPORT = "support.json"
SCORE_STATS = "_stats.json"


class ManifestError(ValueError):
    """A manifest that is missing a field or holds one of the wrong kind."""


def _kind_ok(value: Any, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if args and type(None) in args:  # X | None
        return value is None or any(_kind_ok(value, a) for a in args if a is not type(None))
    if origin is tuple or hint is list or origin is list:
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


class _Document:
    """JSON round trips for the manifest dataclasses below."""

    writer = "?"  # the job that writes this document, for error messages

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, document: Any, where: str):
        if not isinstance(document, dict):
            raise ManifestError(f"{where}: expected a JSON object; rewrite it with {cls.writer}")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in document:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ManifestError(f"{where}: no field {f.name!r}; rewrite it with "
                                        f"{cls.writer}")
                continue
            value = document[f.name]
            if not _kind_ok(value, hints[f.name]):
                raise ManifestError(f"{where}: field {f.name!r} is {value!r}; rewrite it with "
                                    f"{cls.writer}")
            values[f.name] = tuple(value) if typing.get_origin(hints[f.name]) is tuple else value
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes, where: str):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{where}: not JSON ({exc}); rewrite it with "
                                f"{cls.writer}") from None
        return cls.from_dict(document, where)


@dataclass(frozen=True)
class EmbeddingsManifest(_Document):
    """``embeddings/ds=<ds>/_manifest.json``."""

    writer = "jobs/embed.py"
    ds: str
    engine: str  # spark | tf
    model: str  # the artifact's path
    model_version: str
    users: int
    embedding_dim: int
    features: tuple[str, ...] = ()  # names of the aggregate columns beside the embedding


@dataclass(frozen=True)
class SupportDocument(_Document):
    """``supports/ds=<ds>/campaign=<id>/support.json``: a campaign's checks and its head."""

    writer = "jobs/campaigns.py"
    campaign_id: str
    name: str
    status: str  # ok | failed
    problems: tuple[str, ...]
    ds: str
    model_version: str
    segment_size: int | None
    score_threshold: float | None
    exclude_campaigns: tuple[str, ...]
    seeds: dict  # per seed role, the count
    holdout_share: float
    prototype: list | None  # mean embedding of the supports
    negative_prototype: list | None  # mean embedding of the explicit negatives
    head: dict = field(default_factory=lambda: {"kind": "prototype"})

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def head_summary(self) -> dict:
        """The head without its arrays, for reports and the segment's manifest."""
        return head_without_arrays(self.head)


HEAD_ARRAYS = ("weights", "mean", "std", "centroid")  # a head's fitted vectors


def head_without_arrays(head: dict) -> dict:
    """A scoring head (``support.json``'s ``head``) without its fitted vectors: its kind,
    strength, cross-validated AUPR and, for ``lookalike.head: auto``, the choice and why."""
    return {k: v for k, v in head.items() if k not in HEAD_ARRAYS}


@dataclass(frozen=True)
class ScoreStats(_Document):
    """``scores/ds=<ds>/_stats.json``: per campaign the score histogram, the held-out
    seeds' scores and the counts; and the campaigns that could not be scored."""

    writer = "jobs/score.py"
    ds: str
    model_version: str
    users_scored: int
    campaigns: dict
    failed_campaigns: dict
