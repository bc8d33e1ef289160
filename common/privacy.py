"""Pseudonyms: the keyed HMAC that replaces user ids before anything is written.

Every dataset the pipeline writes holds pseudonyms, never raw ids. The raw logs are
pseudonymised by the encoder; side inputs (demographics, labels, seeds, opt-outs) go through
:func:`pseudonymise_frame` in the job that reads them, so the two always agree.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Iterator

from common.errors import PipelineError
from schemas.config import PseudonymisationConfig

PSEUDONYM_HEX_CHARS = 32  # HMAC-SHA256 truncated to 128 bits


class PseudonymKeyError(PipelineError):
    """Pseudonymisation is on, but its key is missing, unreadable or too short."""


def load_pseudonym_key(settings: PseudonymisationConfig) -> bytes | None:
    """The HMAC key from the environment or the key file; None when pseudonymisation is off.

    The key is never logged, written or put into a Spark plan: it only travels inside the
    closure of the Arrow function that computes pseudonyms on the executors.
    """
    if not settings.enabled:
        return None
    key = os.environ.get(settings.key_env, "").encode()
    if not key and settings.key_file:
        try:
            with open(settings.key_file, "rb") as fh:
                key = fh.read().strip()
        except OSError as exc:
            raise PseudonymKeyError(f"pseudonymisation.key_file {settings.key_file!r} cannot be "
                              f"read: {exc.strerror}") from None
    if not key:
        raise PseudonymKeyError(
            f"pseudonymisation is enabled but no key was found: set the environment variable "
            f"{settings.key_env} or pseudonymisation.key_file (or set "
            f"pseudonymisation.enabled: false for demo data only)")
    if len(key) < 16:
        raise PseudonymKeyError(f"the pseudonymisation key from {settings.key_env} or "
                          f"pseudonymisation.key_file is {len(key)} bytes; use at least 16")
    return key


def pseudonym(key: bytes, user_id: str) -> str:
    """Keyed HMAC-SHA256 of a user id, hex, truncated to 128 bits."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def pseudonymise_batches(key: bytes):
    """An Arrow batch function replacing ``user_id`` by its pseudonym.

    Each batch hashes only its distinct ids (a batch holds many cells of each user), so the
    Python work is per user, not per row.
    """
    def apply(batches: Iterator) -> Iterator:
        import pyarrow as pa
        import pyarrow.compute as pc

        for batch in batches:
            index = batch.schema.get_field_index("user_id")
            encoded = pc.dictionary_encode(batch.column(index))
            hashed = pa.array([pseudonym(key, u) for u in encoded.dictionary.to_pylist()],
                              pa.string())
            ids = hashed.take(encoded.indices)
            yield batch.set_column(index, "user_id", ids)
    return apply


def pseudonymise_frame(frame, settings: PseudonymisationConfig):
    """``frame`` (a Spark DataFrame with ``user_id``) with the ids pseudonymised, when on."""
    key = load_pseudonym_key(settings)
    if key is None:
        return frame
    return frame.mapInArrow(pseudonymise_batches(key), frame.schema)
