"""The typed pipeline config: the shipped configs validate, bad ones name the field."""
from __future__ import annotations

import copy
import datetime as dt
import re

import pytest
import yaml
from conftest import ROOT, SYNTHETIC_CONFIG

from schemas.config import ConfigError, apply_overrides, join_uri, load_config, parse_config

SHIPPED = sorted((ROOT / "conf").glob("*.yaml"))


def raw_synthetic() -> dict:
    return yaml.safe_load(SYNTHETIC_CONFIG.read_text())


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="test.yaml")
    return info.value.problems


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate_and_round_trip(path, tmp_path):
    config = load_config(path, base_dir=tmp_path)
    assert config.source_tasks and config.modalities
    assert parse_config(config.to_dict(), base_dir=tmp_path) == config
    assert parse_config(yaml.safe_load(config.to_yaml()), base_dir=tmp_path) == config


def test_synthetic_config_contents(tmp_path):
    config = load_config(SYNTHETIC_CONFIG, base_dir=tmp_path)
    assert config.window.days == 365 and config.window.timezone == "Europe/Berlin"
    assert config.window.start(dt.date(2026, 6, 30)) == dt.date(2025, 7, 1)
    assert len(config.source_tasks) == 9 and len(config.target_tasks) == 8
    purchases = config.modality("purchases")
    assert purchases.num_channels == 12
    assert purchases.channels[0].name == "fashion_purchase_amount"
    assert config.storage.uri("events") == str(tmp_path / ".work/data/synthetic/events")


def test_genre_routing_is_prefix_based_and_additive(tmp_path):
    raw = raw_synthetic()
    raw["modalities"][0]["channels"].append({"genre": "fashion/shoes", "measure": "quantity"})
    purchases = parse_config(raw, base_dir=tmp_path).modality("purchases")
    # fashion total, the whole-modality count and cancel channels, and the shoes detail.
    assert purchases.channels_for_genre("fashion/shoes/boots") == (0, 10, 11, 12)
    assert purchases.channels_for_genre("fashion/tops") == (0, 10, 11)
    # A prefix matches whole path segments only, and '*' never rescues an unknown genre.
    assert purchases.channels_for_genre("fashionista/tops") == ()
    assert purchases.channels_for_genre("legacy_3/unmapped") == ()
    assert purchases.channels_for_genre(None) == ()


@pytest.mark.parametrize("mutate, field, words", [
    (lambda r: r.update(version=2), "version", "not supported"),
    (lambda r: r["window"].update(days=0), "window.days", "outside"),
    (lambda r: r["window"].update(timezone="Mars/Olympus"), "window.timezone", "unknown time zone"),
    (lambda r: r["window"].update(end="2026-02-30"), "window.end", "expected a date"),
    (lambda r: r["raw"].update(format="xml"), "raw.format", "not one of"),
    (lambda r: r["raw"].update(max_reject_ratio=1.5), "raw.max_reject_ratio", "outside"),
    (lambda r: r["raw"].update(day_hour=24), "raw.day_hour", "24 is outside 0..23"),
    (lambda r: r["raw"].update(event_time_precision="minute"), "raw.event_time_precision",
     "not one of"),
    (lambda r: r["raw"].update(missing_partitions="ignore"), "raw.missing_partitions",
     "not one of"),
    (lambda r: r["raw"].update(engine="arrow"), "raw.engine", "not one of"),
    (lambda r: r["modalities"][0]["channels"][2].update(measure="amout"),
     "modalities[0].channels[2].measure", "'amout' is not one of"),
    (lambda r: r["modalities"][0]["channels"][1].update(point_type="used"),
     "modalities[0].channels[1].point_type", "only applies to a points channel"),
    (lambda r: r["modalities"][1]["channels"][0].pop("point_type"),
     "modalities[1].channels[0].point_type", "is required"),
    (lambda r: r["modalities"][0]["channels"].append({"genre": "beauty",
                                                      "measure": "purchase_amount"}),
     "modalities[0].channels[12]", "repeats the rule of channel 1"),
    (lambda r: r["modalities"][1].update(cancellations="net"),
     "modalities[1].cancellations", "only applies to a purchases modality"),
    (lambda r: r["modalities"].append(copy.deepcopy(r["modalities"][1])), "modalities",
     "duplicate name 'points'"),
    (lambda r: r["demographics"]["categorical"][0].update(vocabulary=[]),
     "demographics.categorical[0].vocabulary", "at least one value"),
    (lambda r: r["tasks"]["target"].append({"name": "married", "label_period_start": "2026-07-01",
                                            "label_period_end": "2026-08-01"}),
     "tasks.target", "must be disjoint"),
    (lambda r: r["tasks"]["target"][0].update(label_period_start=dt.date(2026, 6, 1)),
     "tasks.target[0].label_period_start", "after the feature window"),
    (lambda r: r["tasks"]["target"][1].pop("label_period_end"),
     "tasks.target[1].label_period_end", "is required"),
    (lambda r: r["tasks"]["source"][0].update(rule={"kind": "new_buyer", "genre": "beauty"},
                                              label_period_start="2026-06-01",
                                              label_period_end="2026-06-30"),
     "tasks.source[0].label_period_start", "rule labels must come from after the feature window"),
    (lambda r: r["tasks"]["source"][0].update(rule={"kind": "buys_at_least", "genre": "beauty",
                                                    "times": 0}),
     "tasks.source[0].label_period_start", "is required for a task with a rule"),
    (lambda r: r["tasks"]["source"][0].update(rule={"kind": "buys_at_least", "genre": "beauty",
                                                    "times": 0}),
     "tasks.source[0].rule.times", "0 must be at least 1"),
    (lambda r: r["tasks"]["target"][0].update(rule={"kind": "churn", "genre": "beauty"}),
     "tasks.target[0].rule.kind", "'churn' is not one of"),
    (lambda r: r["tasks"]["source"][0].update(name="Has Children"),
     "tasks.source[0].name", "lower_snake_case"),
    (lambda r: r["tasks"].update(behaviour={"horizon_days": 400}),
     "tasks.behaviour.horizon_days", "must lie in"),
    (lambda r: r["tasks"].update(behaviour={"horizon_days": 30, "kinds": ["churn"]}),
     "tasks.behaviour.kinds", "'churn' is not one of"),
    (lambda r: r["tasks"].update(behaviour={"horizon_days": 30, "channels": ["beauty"]}),
     "tasks.behaviour.channels", "use modality/channel"),
    (lambda r: r["tasks"].update(source=[]), "tasks.source", "or behaviour tasks"),
    (lambda r: r["tasks"].update(behaviour={"horizon_days": 90, "cut_days": [0, 300]}),
     "tasks.behaviour.cut_days", "300: a cut is a whole number of days"),
    (lambda r: r["tasks"].update(behaviour={"horizon_days": 90, "cut_days": [90, 90]}),
     "tasks.behaviour.cut_days", "repeats a cut"),
    (lambda r: r["storage"].update(root="s3://bucket/x"), "storage.root", "use s3a://"),
    (lambda r: r["lookalike"].update(head="centroid"), "lookalike.head", "choose one of probe"),
    (lambda r: r["lookalike"].update(background_users=3), "lookalike.background_users",
     "at least 10"),
    (lambda r: r["lookalike"].update(control_share=0.9), "lookalike.control_share",
     "outside 0..0.5"),
    (lambda r: r.update(windows={}), "windows", "unknown field"),
    (lambda r: r["window"].update(lenght=30), "window.lenght", "unknown field"),
])
def test_bad_config_names_the_field(mutate, field, words):
    raw = raw_synthetic()
    mutate(raw)
    problems = problems_of(raw)
    assert any(p.startswith(f"{field}:") and words in p for p in problems), problems


def test_behaviour_tasks_alone_are_enough_to_meta_train(tmp_path):
    raw = raw_synthetic()
    raw["tasks"]["source"] = []
    raw["tasks"]["behaviour"] = {"horizon_days": 60, "kinds": ["new_buyer", "active"],
                                 "channels": ["purchases/beauty_purchase_amount"]}
    config = parse_config(raw, base_dir=tmp_path)
    assert config.behaviour.enabled and config.behaviour.horizon_days == 60
    assert config.behaviour.channels == ("purchases/beauty_purchase_amount",)
    assert config.behaviour.cut_days == (0,)  # one cut, at the window's end
    raw["tasks"]["behaviour"]["cut_days"] = [0, 90, 180]
    assert parse_config(raw, base_dir=tmp_path).behaviour.cut_days == (0, 90, 180)
    assert parse_config(config.to_dict(), base_dir=tmp_path) == config


def test_source_tasks_labelled_inside_the_window_must_sit_at_a_backtest_cut(tmp_path):
    from schemas.config import source_cut
    raw = raw_synthetic()  # window ends 2026-06-30
    raw["tasks"]["behaviour"] = {"horizon_days": 90, "kinds": [], "cut_days": [0, 90]}

    def family(start, end):
        return {"name": "nb_books", "label_period_start": start, "label_period_end": end,
                "rule": {"kind": "new_buyer", "genre": "books"}}
    raw["tasks"]["source"] = [family("2026-04-02", "2026-06-30"),
                              family("2026-01-02", "2026-04-01") | {"name": "nb90_books"}]
    config = parse_config(raw, base_dir=tmp_path)
    assert [source_cut(t, config.window.end) for t in config.source_tasks] == [0, 90]
    assert config.behaviour.kinds == ()  # no channel tasks, the shift and cuts stay
    for (start, end), field, words in [
            (("2026-04-01", "2026-06-30"), "label_period_start", "longer than"),
            (("2026-04-02", "2026-06-29"), "label_period_end", "ends at a backtest cut"),
            (("2026-06-01", "2026-07-31"), "label_period_end", "wholly after the window")]:
        raw["tasks"]["source"] = [family(start, end)]
        assert any(p.startswith(f"tasks.source[0].{field}:") and words in p
                   for p in problems_of(raw)), (start, end, problems_of(raw))
    raw["tasks"]["source"] = [family("2026-04-02", "2026-06-30")]
    del raw["tasks"]["behaviour"]
    assert any("at a backtest cut, where the input ends before them" in p
               for p in problems_of(raw))
    raw["tasks"]["source"] = [family("2026-07-01", "2026-09-30")]  # after the window: as ever
    assert source_cut(parse_config(raw, base_dir=tmp_path).source_tasks[0],
                      dt.date(2026, 6, 30)) is None


def test_all_problems_are_reported_at_once():
    raw = raw_synthetic()
    raw["window"]["days"] = -1
    raw["raw"]["format"] = "xml"
    raw["value_transform"] = "sqrt"
    fields = {p.split(":")[0] for p in problems_of(raw)}
    assert {"window.days", "raw.format", "value_transform"} <= fields


def test_error_message_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nname: x\nwindow: [1, 2]\n")
    with pytest.raises(ConfigError, match="broken.yaml") as info:
        load_config(path)
    assert any(p.startswith("window: expected a mapping") for p in info.value.problems)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_storage_uris_resolve(tmp_path):
    raw = raw_synthetic()
    raw["storage"] = {"root": "s3a://bucket/metaprofile", "events": "hdfs://nn:8020/mp/events",
                      "segments": "/mnt/segments", "models": "trained/models"}
    storage = parse_config(raw, base_dir=tmp_path).storage
    assert storage.uri("heatmaps") == "s3a://bucket/metaprofile/heatmaps"
    assert storage.uri("events") == "hdfs://nn:8020/mp/events"
    assert storage.uri("segments") == "/mnt/segments"
    assert storage.uri("models") == "s3a://bucket/metaprofile/trained/models"
    with pytest.raises(KeyError, match="storage.nope"):
        storage.uri("nope")
    assert join_uri(str(tmp_path), "a/b") == str(tmp_path / "a" / "b")


def test_overrides_apply_in_order_and_parse_yaml_values():
    raw = apply_overrides(raw_synthetic(), ["window.days=30", "window.days=31",
                                            "pseudonymisation.enabled=true", "new.key=x"])
    assert raw["window"]["days"] == 31 and raw["pseudonymisation"]["enabled"] is True
    assert raw["new"] == {"key": "x"}
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides(raw_synthetic(), ["window.days"])


def test_overrides_address_list_elements_and_say_when_one_is_missing():
    raw = apply_overrides(raw_synthetic(), ["tasks.target[1].label_period_start=2026-07-02",
                                            "modalities[0].channels[2].measure=quantity"])
    assert raw["tasks"]["target"][1]["label_period_start"] == "2026-07-02"
    assert raw["modalities"][0]["channels"][2]["measure"] == "quantity"
    targets = len(raw["tasks"]["target"])
    for override, words in [
            (f"tasks.target[{targets}].name=x", f"tasks.target has {targets} element(s)"),
            ("tasks.target.name=x", "tasks.target is a list; address one element"),
            ("window[0]=1", "window is not a list"),
            ("tasks.target[x]=1", "is not a field name"),
            ("window.days=[1, 2", "the value is not valid YAML")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            apply_overrides(raw_synthetic(), [override])


@pytest.mark.parametrize("override, field", [
    ("window.end=2011-09-31", "window.end"),
    ("tasks.target[0].label_period_start=2026-06-31", "tasks.target[0].label_period_start")])
def test_an_impossible_date_names_its_field_from_the_file_and_from_set(tmp_path, override, field):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as raised:
        load_config(SYNTHETIC_CONFIG, overrides=[override], base_dir=tmp_path)
    assert raised.value.problems == [f"{field}: expected a date YYYY-MM-DD, got {value!r}"]
    written = tmp_path / "bad.yaml"
    written.write_text(SYNTHETIC_CONFIG.read_text().replace("end: 2026-06-30", "end: 2011-09-31"))
    with pytest.raises(ConfigError, match=re.escape("window.end: expected a date YYYY-MM-DD, "
                                                    "got '2011-09-31'")):
        load_config(written, base_dir=tmp_path)


# --------------------------------------------------------------------------- run settings


def test_settings_sections_type_over_the_defaults_and_flags_override_them(tmp_path):
    import argparse

    from evaluation.cli import eval_config_from_args
    from model.cli import model_config_from_args, train_config_from_args
    from model.settings import TrainConfig

    raw = raw_synthetic()
    raw.update(model={"width": 0.125, "relation_units": [64, 16]},
               train={"steps": 300, "schedule": {"max_lr": 0.002}},
               evaluate={"repeats": 2, "seed_counts": [5, 50]})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, overrides=["train.batch_size=8", "evaluate.methods=cosine,hgb"])
    args = argparse.Namespace(config=str(path), resume=False, quick=False, steps=None,
                              width=None, embedding_dim=64, relation_units=None,
                              totals_units=None, max_lr=None, base_lr=None, repeats=3)
    model = model_config_from_args(args, config)
    assert (model.width, model.relation_units, model.embedding_dim) == (0.125, (64, 16), 64)
    train = train_config_from_args(args, config, str(tmp_path / "work"))
    assert (train.steps, train.batch_size, train.schedule.max_lr) == (300, 8, 0.002)
    assert train.schedule.base_lr == TrainConfig().schedule.base_lr  # untouched default
    assert train.checkpoint_dir == str(tmp_path / "work" / "checkpoints")
    args.steps, args.max_lr = 50, 0.005  # a flag given on the command line wins
    train = train_config_from_args(args, config, str(tmp_path / "work"))
    assert (train.steps, train.schedule.max_lr) == (50, 0.005)
    evaluation = eval_config_from_args(args, config)
    assert evaluation.repeats == 3 and evaluation.seed_counts == (5, 50)
    assert evaluation.methods == ("cosine", "hgb")
    assert "steps: 300" in config.to_yaml()  # the sections survive show / round trips


@pytest.mark.parametrize("section, values, words", [
    ("train", {"steps": "many"}, "train.steps: expected an integer, got 'many'"),
    ("train", {"stepz": 3}, "train.stepz: unknown setting; allowed: batch_size"),
    ("train", {"checkpoint_dir": "/x"}, "train.checkpoint_dir: unknown setting"),
    ("train", {"schedule": {"max_lr": "fast"}}, "train.schedule.max_lr: expected a number"),
    ("train", {"steps": 0}, "train: invalid train config: steps: 0 must be at least 1"),
    ("model", {"relation_units": ["a"]}, "model.relation_units: expected a list of integers"),
    ("evaluate", {"scratch_cache": "yes"}, "evaluate.scratch_cache: expected true or false"),
])
def test_bad_settings_name_the_field(tmp_path, capsys, section, values, words):
    from metaprofile.cli import main

    raw = raw_synthetic()
    raw[section] = values
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["config", "validate", "--config", str(path)]) == 2
    assert words in capsys.readouterr().err


def test_a_settings_section_must_be_a_mapping():
    raw = raw_synthetic()
    raw["train"] = 300
    assert any(p.startswith("train: expected a mapping") for p in problems_of(raw))
