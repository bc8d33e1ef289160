"""Schema round trips, the paper's sparse text form, and the TFRecord feature spec."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import contracts
from schemas.sparse_text import Cell, format_cells, parse_cells
from schemas.tfrecord_spec import (
    feature_specs,
    flat_index,
    spec_differences,
    spec_document,
    spec_fingerprint,
    unflatten_index,
)

SAMPLES = {
    "RAW_PURCHASES": [{"user_id": "u1", "event_time": "2026-03-29T00:30:00Z",
                       "genre": "beauty/makeup/lipstick", "amount": "5000", "quantity": "1",
                       "status": "purchase"},
                      {"user_id": None, "event_time": "not-a-date", "genre": None,
                       "amount": "12,50", "quantity": None, "status": "cancel"}],
    "RAW_POINTS": [{"user_id": "u1", "event_time": "2026-01-01T09:00:00", "point_type": "used",
                    "points": "300", "service": "travel"}],
    "LABELS": [{"user_id": "u1", "task": "married", "label": 1}],
    "CAMPAIGN_SEEDS": [{"campaign_id": "c1", "user_id": "u1", "label": 0}],
    "CAMPAIGN_REGISTRY": [{"campaign_id": "c1", "name": "Spring", "status": "active",
                           "segment_size": 1000, "score_threshold": None,
                           "exclude_campaigns": ["c0"]}],
    "OPT_OUTS": [{"user_id": "u9"}],
    "SPARSE_EVENTS": [{"user_id": "p1", "modality": "purchases", "date": dt.date(2026, 3, 29),
                       "hour": 10, "channel": 28, "value": 5000.0}],
    "SNAPSHOT": [{"user_id": "p1", "modality": "purchases", "day": [2, 100], "hour": [10, 20],
                  "channel": [28, 25], "value": [5000.0, 6000.0],
                  "text": "2,10,28:5000;100,20,25:6000"}],
    "REJECTS": [{"source": "purchases", "reason": "non_numeric_value",
                 "record": '{"amount": "12,50"}', "input_file": "part-0.csv"}],
    "EMBEDDINGS": [{"user_id": "p1", "embedding": [0.5, -1.0], "features": [1.0],
                    "model_version": "20260630T021500Z"}],
    "SUPPORT_MEMBERS": [{"user_id": "p1", "role": "holdout"}],
    "SCORES": [{"user_id": "p1", "score": 0.75, "rank": 1}],
    "SEGMENT": [{"user_id": "p1", "score": 0.75, "rank": 1}],
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_contract_round_trips_through_parquet(name, tmp_path):
    schema = getattr(contracts, name)
    table = pa.Table.from_pylist(SAMPLES[name], schema=schema)
    pq.write_table(table, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.schema.equals(schema, check_metadata=True)
    assert back.to_pylist() == SAMPLES[name]
    contracts.check_table(back, schema)
    assert schema.metadata[b"version"] == b"1"


def test_check_table_names_contract_field_and_row():
    rows = [{"user_id": "u1", "task": "t", "label": 1}, {"user_id": None, "task": "t", "label": 0}]
    table = pa.Table.from_pylist(rows, schema=contracts.LABELS)
    with pytest.raises(ValueError, match=r"labels.user_id: 1 null value\(s\), first at row 1"):
        contracts.check_table(table, contracts.LABELS)
    contracts.check_table(table.slice(0, 1), contracts.LABELS)
    wrong = table.slice(0, 1).set_column(2, "label", pa.array([1], pa.int64()))
    with pytest.raises(ValueError, match="labels.label: type int64 differs"):
        contracts.check_table(wrong, contracts.LABELS)


def test_demographics_schema_follows_config(synthetic_config):
    schema = contracts.demographics_schema(synthetic_config)
    assert schema.names == ["user_id", "age", "household_size", "gender", "region"]
    assert schema.field("age").type == pa.float64() and schema.field("gender").type == pa.string()


def test_spark_ddl():
    assert contracts.spark_ddl(contracts.SNAPSHOT).startswith(
        "`user_id` STRING NOT NULL, `modality` STRING NOT NULL, `day` ARRAY<SMALLINT> NOT NULL")
    assert "`date` DATE NOT NULL, `hour` TINYINT NOT NULL" in contracts.spark_ddl(
        contracts.SPARSE_EVENTS)
    with pytest.raises(TypeError, match="no Spark DDL type"):
        contracts.spark_ddl(pa.schema([("x", pa.decimal128(10, 2))]))


def test_paper_example_in_sparse_text_form():
    # Section 3.1: "2, 10, 28: 5000; 100, 20, 25: 6000"
    cells = parse_cells("2, 10, 28: 5000; 100, 20, 25: 6000")
    assert cells == [Cell(2, 10, 28, 5000.0), Cell(100, 20, 25, 6000.0)]
    assert format_cells(cells) == "2,10,28:5000;100,20,25:6000"
    assert parse_cells(format_cells([(0, 23, 1, 0.25)])) == [Cell(0, 23, 1, 0.25)]
    assert parse_cells("") == []


@pytest.mark.parametrize("text, words", [
    ("2,10:5000", "expected 'day,hour,channel:value'"),
    ("2,10,28", "expected 'day,hour,channel:value'"),
    ("2,24,28:1", "hour 24 is outside"),
    ("365,1,1:1", "outside the 365-day window"),
    ("1,1,40:1", "channel 40 is outside 0..39"),
    ("a,1,1:1", "must be integers"),
    ("1,1,1:x", "must be integers and the value a number"),
])
def test_sparse_text_errors_name_the_cell(text, words):
    with pytest.raises(ValueError, match="cell 0") as info:
        parse_cells(text, days=365, channels=40)
    assert words in str(info.value)


def test_flat_index_is_day_hour_channel_major():
    assert flat_index(0, 0, 0, 12) == 0
    assert flat_index(0, 0, 11, 12) == 11
    assert flat_index(0, 1, 0, 12) == 12
    assert flat_index(1, 0, 0, 12) == 24 * 12
    last = flat_index(364, 23, 11, 12)
    assert last == 365 * 24 * 12 - 1 and unflatten_index(last, 12) == (364, 23, 11)
    assert unflatten_index(flat_index(2, 10, 28, 40), 40) == (2, 10, 28)


def test_feature_spec_and_fingerprint(synthetic_config):
    names = [s.name for s in feature_specs(synthetic_config)]
    assert names[:5] == ["user_id", "purchases/index", "purchases/value", "points/index",
                         "points/value"]
    assert "label/married" in names and "mask/married" in names and "demo/region" in names
    assert feature_specs(synthetic_config)[1].dense_shape == (365, 24, 12)
    doc = spec_document(synthetic_config)
    assert spec_fingerprint(doc) == spec_fingerprint(spec_document(synthetic_config))
    changed = dict(doc, window_days=30)
    assert spec_fingerprint(changed) != spec_fingerprint(doc)
    assert spec_differences(doc, changed) == ["window_days: model expects 365, data has 30"]
    other = dict(doc, modalities={**doc["modalities"], "points": ["a"]})
    assert spec_differences(doc, other)[0].startswith("modalities.points: model expects")


def test_manifests_round_trip_and_name_the_file_and_field():
    from schemas.manifests import EmbeddingsManifest, ManifestError, SupportDocument

    written = EmbeddingsManifest(ds="2026-06-30", engine="spark", model="/m/v1",
                                 model_version="v1", users=3, embedding_dim=8,
                                 features=("purchases/c0",))
    assert EmbeddingsManifest.from_json(written.to_json(), "m.json") == written
    with pytest.raises(ManifestError, match=r"e/_manifest.json: no field 'users'; rewrite it "
                                            r"with jobs/embed.py"):
        EmbeddingsManifest.from_dict({k: v for k, v in written.to_dict().items()
                                      if k != "users"}, "e/_manifest.json")
    with pytest.raises(ManifestError, match="field 'segment_size' is 'ten'"):
        SupportDocument.from_dict({"campaign_id": "c", "name": "n", "status": "ok",
                                   "problems": [], "ds": "d", "model_version": "v",
                                   "segment_size": "ten", "score_threshold": None,
                                   "exclude_campaigns": [], "seeds": {}, "holdout_share": 0.1,
                                   "prototype": None, "negative_prototype": None}, "s.json")
    with pytest.raises(ManifestError, match="s.json: not JSON"):
        SupportDocument.from_json("{", "s.json")
