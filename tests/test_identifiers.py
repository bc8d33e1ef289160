"""The identifier rule (schemas/identifiers.py), where values enter: config names, model
versions, and the paths built from campaign ids. The hostile campaign ids run through the
real jobs in tests/test_hostile_inputs.py."""
from __future__ import annotations

import json

import pytest
from conftest import SYNTHETIC_CONFIG
from test_hostile_inputs import HOSTILE_IDS

from common import catalog
from schemas.config import ConfigError, load_config
from schemas.identifiers import IdentifierError, check_identifier, identifier_problem, within


def test_the_rule_refuses_every_hostile_id_in_one_escaped_line():
    for name, value in HOSTILE_IDS.items():
        assert identifier_problem(value) is not None, name
        with pytest.raises(IdentifierError) as caught:
            check_identifier(value, "campaign_id", "fix it in the registry")
        message = str(caught.value)
        assert message.isascii() and message.isprintable(), (name, message)
        assert "campaign_id" in message and "fix it in the registry" in message, message
        assert len(message) < 400, (name, len(message))
    for value in ("cmp_top", "CMP-2026.q3", "7", "c" * 100, "a.b-c_d", "console"):
        assert check_identifier(value, "campaign_id") == value
    assert identifier_problem(None) == "is null, not a string"


def test_paths_built_from_an_id_are_refused_before_anything_is_created(tmp_path):
    root = f"{tmp_path}/supports/ds=2026-06-30"
    assert catalog.campaign_path(root, "cmp_top") == f"{root}/campaign=cmp_top"
    assert catalog.spark_campaign_folder(root, "cmp_top") == f"{root}/campaign_id=cmp_top"
    for value in ("../../x", "a/b", "x\ny"):
        with pytest.raises(catalog.UnsafePathError, match="identifier"):
            catalog.campaign_path(root, value)
    assert not any(tmp_path.iterdir())
    assert within("s3a://b/supports", "s3a://b/supports/campaign=x")
    assert not within("s3a://b/supports", "s3a://b/supports/../x")
    assert not within("/data/supports", "/data/supports")
    assert not within("/data/supports", "file:///data/supports/x")


@pytest.mark.parametrize("name", ["synthetic\n", "s" * 101, "Synthetic", "syn-1"])
def test_a_config_name_that_breaks_the_rule_is_refused_naming_the_field(name, tmp_path):
    text = SYNTHETIC_CONFIG.read_text().replace("\nname: synthetic\n",
                                                f"\nname: {json.dumps(name)}\n", 1)
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    text = str(caught.value)
    assert "name" in text and "lower_snake_case" in text
    assert "\nINFO" not in text and repr(name)[1:-1][:20] in text


def test_a_model_version_that_breaks_the_rule_is_refused_by_train(capsys):
    from metaprofile.cli import main
    with pytest.raises(SystemExit) as caught:
        main(["train", "--config", str(SYNTHETIC_CONFIG), "--version", "../v1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "model version '../v1' holds '/'" in err and "identifier" in err
