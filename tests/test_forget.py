"""``metaprofile forget``: erasure from every derived dataset, and kept out of later nights.

A pseudonymised synthetic world runs the whole chain in this process (encode, heatmaps,
embed, campaigns, score, export). One user who sits in a segment and another who is a seed
are then erased through the job's entry point (the runner, its lock and its attempt). No
dataset may hold them afterwards, every republished dataset must verify against its
``_SUCCESS`` record, and the next night's encode must keep them out even though they are
in the new raw day, until they are taken off the list.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SYNTHETIC_CONFIG
from test_lookalike import tiny_model

from common import erasures, registry
from common.privacy import pseudonym
from common.publish import Publisher, verify
from jobs import campaigns, embed, encode, export, forget, heatmaps, score
from metaprofile.datasets.synthetic import GeneratorOptions, generate
from schemas.config import load_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

KEY = "erasure-test-key-" + "k" * 16
DERIVED = ("events", "rejects", "snapshots", "embeddings", "supports", "scores", "segments")
DAYS = 14


def ids_in(data: Path) -> set[str]:
    """Every user id, pseudonym or raw id found in any visible file of a derived dataset."""
    found = set()
    for path in data.rglob("*.parquet"):
        rel = path.relative_to(data).parts
        if rel[0] not in DERIVED or any(p.startswith(".") for p in rel):
            continue  # the retailer's inputs are theirs to erase
        table = pq.read_table(path)
        if "user_id" in table.column_names:
            found |= set(table.column("user_id").to_pylist())
        if "record" in table.column_names:
            found |= {json.loads(r).get("user_id") for r in table.column("record").to_pylist()
                      if r and r.startswith("{")}
    return found


def tfrecord_bytes(data: Path) -> bytes:
    return b"".join(gzip.decompress(p.read_bytes())
                    for p in (data / "heatmaps").rglob("*.tfrecord.gz"))


@pytest.fixture(scope="module")
def night(spark, tmp_path_factory, request):
    monkey = pytest.MonkeyPatch()
    request.addfinalizer(monkey.undo)
    monkey.setenv("METAPROFILE_PSEUDONYM_KEY", KEY)
    tmp = tmp_path_factory.mktemp("forget")
    config = load_config(SYNTHETIC_CONFIG, overrides=[
        f"storage.root={tmp / 'data'}", f"window.days={DAYS}", "pseudonymisation.enabled=true",
        "raw.max_reject_ratio=0.5", "lookalike.min_seeds=2", "lookalike.holdout=0.0",
        "lookalike.control_share=0.5"])
    generate(config, GeneratorOptions(users=60, extra_days=1), progress=lambda _: None)
    ds = config.window.end
    encode.run(spark, config, ds, full=True)
    heatmaps.run(spark, config, ds)
    registry.publish(config, tiny_model(config, config.storage.uri("models")))
    embed.run(spark, config, ds)
    campaigns.run(spark, config, ds)
    score.run(spark, config, ds)
    export.run(config, ds)
    return config, ds, Path(config.storage.root)


def control_ids(data: Path) -> set[str]:
    return {row.split(",")[0].strip('"') for p in data.glob("segments/ds=*/campaign=*/control.csv")
            for row in p.read_text().splitlines()[1:]}


def a_segment_user_a_control_and_a_seed(config, data: Path) -> tuple[str, str, str]:
    key = KEY.encode()
    raw = set()
    for path in (data / "raw_purchases").rglob("*.parquet"):
        raw |= set(pq.read_table(path, columns=["user_id"]).column("user_id").to_pylist())
    by_pseudonym = {pseudonym(key, r.strip()): r for r in raw if r and r.strip()}
    (segment,) = sorted(data.glob("segments/ds=*/campaign=*/segment.parquet"))[:1]
    member = pq.read_table(segment).column("user_id")[0].as_py()
    held = sorted(control_ids(data) - {member})[0]
    seeds = pq.read_table(data / "campaign_seeds").column("user_id").to_pylist()
    seed = next(s for s in seeds if s and s.strip() and
                pseudonym(key, s.strip()) in by_pseudonym and by_pseudonym[
                    pseudonym(key, s.strip())] not in (by_pseudonym[member], by_pseudonym[held]))
    return by_pseudonym[member], by_pseudonym[held], seed.strip()


def test_forget_erases_everywhere_and_keeps_them_out_of_the_next_night(night, spark, tmp_path):
    config, ds, data = night
    member, held, seed = a_segment_user_a_control_and_a_seed(config, data)
    targets = {member, held, seed}
    hashed = {pseudonym(KEY.encode(), u) for u in targets}
    assert hashed <= ids_in(data)
    request = tmp_path / "erase.txt"
    request.write_text(f"# erasure requests of the week\n{member}\n\n {seed} \n{held}\n")

    overrides = [f"storage.root={data}", f"window.days={DAYS}", "pseudonymisation.enabled=true",
                 "raw.max_reject_ratio=0.5", "lookalike.min_seeds=2", "lookalike.holdout=0.0",
        "lookalike.control_share=0.5"]
    argv = ["--config", str(SYNTHETIC_CONFIG), *sum((["--set", o] for o in overrides), [])]
    assert forget.main([*argv, "--users", str(request)]) == 0

    found = ids_in(data)
    assert not (hashed | targets) & found
    assert not (hashed | targets) & control_ids(data)  # the control groups too
    assert not any(h.encode() in tfrecord_bytes(data) for h in hashed)
    assert not list(data.rglob(".staging-*"))
    publisher = Publisher()
    for marker in data.rglob("_SUCCESS"):
        if not any(p.startswith(".") for p in marker.relative_to(data).parts):
            assert verify(publisher, str(marker.parent)) == [], marker.parent
    # the segment's manifest follows its files: checksums and the selected count
    for manifest_path in data.glob("segments/ds=*/campaign=*/_manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        table = pq.read_table(manifest_path.with_name("segment.parquet"))
        assert manifest["counts"]["selected"] == table.num_rows
        held_rows = len((manifest_path.with_name("control.csv")).read_text().splitlines()) - 1
        assert manifest["counts"]["control"] == held_rows
    erased_segments = [json.loads(p.read_text())["erasure"]
                       for p in data.glob("segments/ds=*/campaign=*/_manifest.json")
                       if "erasure" in json.loads(p.read_text())]
    assert erased_segments and all(e["rows_removed"] >= 1 for e in erased_segments)
    listed = pq.read_table(data / "erasures" / erasures.ERASURE_FILE)
    assert listed.num_rows == 3 and member not in str(listed.to_pylist())

    # The next night: both are in the new raw day, and stay out.
    next_day = ds + dt.timedelta(days=1)
    landed = (data / "raw_purchases" / f"dt={next_day}")
    add_rows(landed, targets)
    report = encode.run(spark, config, next_day, snapshot=False)
    assert report["sources"]["purchases"]["rows_erased"] >= 2
    events = pq.read_table(data / "events" / f"dt={next_day}").column("user_id").to_pylist()
    assert not hashed & set(events)

    # Taken off the list, they come back with their new rows.
    assert forget.main([*argv, "--remove-from-list", str(request)]) == 0
    encode.run(spark, config, next_day, snapshot=False)
    events = pq.read_table(data / "events" / f"dt={next_day}").column("user_id").to_pylist()
    assert hashed <= set(events)


def add_rows(folder: Path, users: set[str]) -> None:
    import pyarrow as pa

    from schemas.contracts import RAW_SOURCES
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"user_id": u, "event_time": f"{folder.name[3:]}T12:00:00Z",
             "genre": "fashion/basics", "amount": "10", "quantity": "1", "status": "purchase"}
            for u in sorted(users)]
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SOURCES["purchases"]),
                   folder / "part-erased.parquet")


def test_request_files_and_the_list_are_pure_and_checked(tmp_path):
    text = tmp_path / "ids.txt"
    text.write_text("\ufeffu1\n# comment\n\n u2 \nu1\n")
    assert forget.read_request(str(text)) == ["u1", "u2"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(forget.ForgetError, match="no user id"):
        forget.read_request(str(empty))
    table = tmp_path / "ids.parquet"
    import pyarrow as pa
    pq.write_table(pa.table({"customer": ["u1"]}), table)
    with pytest.raises(forget.ForgetError, match="no user_id column .*customer"):
        forget.read_request(str(table))
    listed, added, removed = erasures.updated_list(erasures.ERASURES.empty_table(),
                                                   add=["a", "b"], today="2026-12-01")
    assert (listed.num_rows, added, removed) == (2, 2, 0)
    listed, added, removed = erasures.updated_list(listed, add=["b"], remove=["a"])
    assert (listed.column("id_sha256").to_pylist(), added, removed) == (["b"], 0, 1)
