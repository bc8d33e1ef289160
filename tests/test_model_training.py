"""Meta-training, resuming, artifacts, adaptation and the CLI, on tiny planted data."""
from __future__ import annotations

import argparse
import glob
import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SYNTHETIC_CONFIG

from model import cli as model_cli
from model.adapt import (
    AdaptConfig,
    Learner,
    embed,
    fine_tune_scores,
    prototype_scores,
    scratch_scores,
)
from model.artifact import ArtifactMismatch, load_artifact, save_artifact
from model.metrics import auroc
from model.settings import ModelConfig, ScheduleConfig, TrainConfig
from model.testing import planted_dataset, planted_users, tiny_spec
from model.train import train
from schemas.input_spec import InputSpec

# Keras' weight saving converts TensorFlow variables with np.array(); numpy 2 warns about it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

SPEC = tiny_spec(days=14)
SMALL = ModelConfig(width=0.25, embedding_dim=32, relation_units=(16, 8), demo_units=4)
FEATURE_SPEC = {"schema_version": 1, "window_days": 14,
                "modalities": {"purchases": ["a", "b"], "points": ["c"]}}


def _train_config(steps: int, **changes) -> TrainConfig:
    values = dict(steps=steps, batch_size=16, pool_per_class=8, pool_batches=10,
                  validate_every=steps // 4, val_batches=None, val_k_shot=8, patience=0,
                  checkpoint_every=steps, keep_checkpoints=2, log_every=steps // 4, seed=1,
                  schedule=ScheduleConfig(base_lr=3e-4, max_lr=3e-3, step_size=max(1, steps // 8),
                                          cycles=2, first_period=max(1, steps // 2),
                                          min_lr=3e-5))
    values.update(changes)
    return TrainConfig(**values)


def _datasets(users: int = 128, val_users: int = 128):
    """Fresh datasets per run, as a fresh process would build them: a shuffle's order
    depends on the global seed at its creation, which earlier runs in this process set."""
    tf.random.set_seed(0)
    return (planted_dataset(SPEC, users, seed=1, batch_size=16, repeat=True),
            planted_dataset(SPEC, val_users, seed=2, batch_size=32, repeat=False, shuffle=False))


@pytest.fixture
def deterministic_ops():
    """Bit-for-bit kernels for the resume test, switched off again afterwards."""
    from tensorflow.python.framework import config as tf_config  # the only off switch

    tf.config.experimental.enable_op_determinism()
    yield
    tf_config.disable_op_determinism()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    lines: list[str] = []
    # 2-shot: with independent planted tasks a 1-shot prototype carries as much noise from
    # the other tasks as signal, and learning within a test's budget becomes a coin flip.
    result = train(SPEC, SMALL, _train_config(200, k_shot=2), *_datasets(), str(out),
                   progress=lines.append)
    return result, lines, out


# --------------------------------------------------------------------------- training


def test_training_learns_the_planted_signal(trained):
    result, lines, out = trained
    losses = [entry["loss"] for entry in result.train_log]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < 0.75 * losses[0]
    assert result.metrics["val_auroc_mean"] > 0.8
    assert len(result.history) == 4 and result.steps == 200
    assert any("examples/s" in line and line.startswith("step 50/200") for line in lines)
    assert any(line.startswith("validation at step 200") for line in lines)
    assert glob.glob(os.path.join(result.log_dir, "events.out.tfevents.*"))
    states = sorted(os.listdir(result.checkpoint_dir))
    assert "state-200.json" in states and "checkpoint" in states
    assert "support_pool.npz" in states


def test_episode_tasks_draws_n_distinct_tasks_or_takes_them_all():
    from model.train import episode_tasks
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    np.testing.assert_array_equal(episode_tasks(5, 5, rng), np.arange(5))
    np.testing.assert_array_equal(episode_tasks(5, 9, rng), np.arange(5))
    assert rng.bit_generator.state == state  # every task: no draw, the supports' stay
    drawn = [episode_tasks(10, 3, rng) for _ in range(50)]
    assert all(len(set(d)) == 3 and list(d) == sorted(d) for d in drawn)
    assert len({int(t) for d in drawn for t in d}) == 10


def test_validation_scores_every_task_or_a_fixed_draw_of_four_times_n():
    from model.train import validation_columns
    np.testing.assert_array_equal(validation_columns(10, None, 0), np.arange(10))
    np.testing.assert_array_equal(validation_columns(10, 3, 0), np.arange(10))
    drawn = validation_columns(500, 9, 0)
    assert len(set(drawn)) == 36 and list(drawn) == sorted(drawn) and drawn.max() < 500
    np.testing.assert_array_equal(drawn, validation_columns(500, 9, 0))


def test_an_n_way_step_scores_the_drawn_tasks_against_their_own_labels():
    from model.episodes import support_order
    from model.losses import masked_multitask_loss
    from model.network import build_meta_model, feature_keys
    from model.train import episode_logits, make_train_step
    keras.utils.set_random_seed(3)
    batch, _ = planted_users(SPEC, 40, seed=5)
    model = build_meta_model(SPEC, SMALL)
    optimizer = keras.optimizers.SGD(learning_rate=0.0)
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), 2, 1, True)
    chosen = np.array([0, 2])
    pos, neg = np.array([[0], [1]]), np.array([[2], [3]])  # rows 0-3 support tasks 0 and 2
    keys = (*feature_keys(SPEC), "user_id")
    support = {k: batch[k][support_order(pos, neg)] for k in keys}
    query = {k: v[8:] for k, v in batch.items()}
    loss = float(step(query, support, tf.constant(chosen, tf.int32)))
    logits = episode_logits(model, support, query, 2, 1, True, training=True)
    expected = masked_multitask_loss(query["labels"][:, chosen], logits,
                                     query["mask"][:, chosen])
    np.testing.assert_allclose(loss, float(expected), rtol=1e-5)
    other = masked_multitask_loss(query["labels"][:, [0, 1]], logits, query["mask"][:, [0, 1]])
    assert abs(loss - float(other)) > 1e-4  # the columns matter


def test_n_way_episodes_learn_every_source_task(tmp_path):
    lines: list[str] = []
    result = train(SPEC, SMALL, _train_config(400, k_shot=2, way=2), *_datasets(),
                   str(tmp_path), progress=lines.append)
    assert any("2-way 2-shot" in line for line in lines)
    # validation scores all three tasks with one fixed episode, though each step saw two
    aurocs = result.metrics["val_auroc"]
    assert len(aurocs) == 3 and result.metrics["val_auroc_mean"] > 0.75, aurocs


@pytest.mark.slow
def test_resume_after_a_kill_continues_exactly(tmp_path, deterministic_ops):
    config = _train_config(6, validate_every=3, checkpoint_every=3, log_every=3,
                           restore_best=False)
    first = train(SPEC, SMALL, config, *_datasets(64, 32), str(tmp_path / "straight"),
                  progress=print)
    resumed_lines: list[str] = []
    interrupted = train(SPEC, SMALL, TrainConfig.from_dict({**config.to_dict(), "steps": 3}),
                        *_datasets(64, 32), str(tmp_path / "killed"), progress=print)
    resumed = train(SPEC, SMALL, TrainConfig.from_dict({**config.to_dict(), "resume": True}),
                    *_datasets(64, 32), str(tmp_path / "killed"), progress=resumed_lines.append)
    assert interrupted.steps == 3 and resumed.steps == 6
    assert any(line.startswith("resumed from") for line in resumed_lines)
    for straight, continued in zip(first.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(continued, straight, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([h["auroc"] for h in resumed.history],
                               [h["auroc"] for h in first.history], rtol=1e-6)
    np.testing.assert_allclose([e["loss"] for e in resumed.train_log],
                               [e["loss"] for e in first.train_log], rtol=1e-6)


def test_existing_checkpoints_need_resume_and_the_same_config(trained):
    result, _, out = trained
    with pytest.raises(ValueError, match="pass --resume"):
        train(SPEC, SMALL, _train_config(200, k_shot=2), *_datasets(), str(out),
              progress=print)
    changed = _train_config(300, k_shot=1, resume=True)
    with pytest.raises(ValueError, match=r"train_config\.k_shot: checkpoint has 2, now 1"):
        train(SPEC, SMALL, changed, *_datasets(), str(out), progress=print)


def test_too_few_labels_for_the_shots_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="cannot sample 20-shot supports"):
        train(SPEC, SMALL, _train_config(8, k_shot=20), *_datasets(64), str(tmp_path),
              progress=print)


# --------------------------------------------------------------------------- artifacts


def test_artifact_round_trip(trained, tmp_path):
    result = trained[0]
    path = save_artifact(result.model, result.model_config, SPEC, FEATURE_SPEC,
                         result.metrics, "ab" * 32, str(tmp_path / "models"), version="v1")
    assert sorted(os.listdir(path)) == sorted(
        ["model.keras", "model_config.json", "input_spec.json", "feature_spec.json",
         "metrics.json", "normalisation.json", "data_manifest_sha256", "_SUCCESS"])
    assert not [n for n in os.listdir(tmp_path / "models") if n.startswith(".")]  # no staging
    artifact = load_artifact(path, SPEC, FEATURE_SPEC)
    assert artifact.version == "v1" and artifact.model_config == result.model_config
    assert artifact.data_manifest_sha256 == "ab" * 32
    assert artifact.metrics["val_auroc_mean"] == pytest.approx(result.metrics["val_auroc_mean"])
    users = planted_users(SPEC, 8, seed=4)[0]
    np.testing.assert_allclose(embed(artifact.model, users), embed(result.model, users),
                               rtol=1e-5, atol=1e-6)
    reloaded = keras.saving.load_model(os.path.join(path, "model.keras"), safe_mode=True)
    assert reloaded.relation.units == SMALL.relation_units
    with pytest.raises(FileExistsError, match="immutable"):
        save_artifact(result.model, result.model_config, SPEC, FEATURE_SPEC, {}, "x",
                      str(tmp_path / "models"), version="v1")


def test_artifact_refuses_a_mismatched_spec(trained, tmp_path):
    result = trained[0]
    path = save_artifact(result.model, result.model_config, SPEC, FEATURE_SPEC, {}, "0" * 64,
                         str(tmp_path / "models"), version="v2")
    longer = InputSpec.from_dict({**SPEC.to_dict(), "days": 28})
    with pytest.raises(ArtifactMismatch, match=r"input_spec\.days: model expects 14, data has 28"):
        load_artifact(path, longer)
    other_channels = {**FEATURE_SPEC, "modalities": {"purchases": ["a", "z"], "points": ["c"]}}
    with pytest.raises(ArtifactMismatch, match=r"feature_spec\.modalities\.purchases\[1\]"):
        load_artifact(path, SPEC, other_channels)
    os.remove(os.path.join(path, "_SUCCESS"))
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        load_artifact(path, SPEC)


# --------------------------------------------------------------------------- adaptation


@pytest.mark.slow
def test_adaptation_scores_an_unseen_target_task(trained):
    model, model_cfg = trained[0].model, trained[0].model_config
    labelled, labels = planted_users(SPEC, 64, seed=10)
    query, truth = planted_users(SPEC, 96, seed=11)
    before = model.get_weights()
    budget = AdaptConfig(max_epochs=8, patience=8, batch_size=16, learning_rate=2e-3)

    zero_shot = prototype_scores(model, labelled, labels, query)
    tuned = fine_tune_scores(model, model_cfg, labelled, labels, query, budget)
    baseline = scratch_scores(SPEC, model_cfg, labelled, labels, query, budget)

    for scores in (zero_shot, tuned, baseline):
        assert scores.shape == (96,) and np.isfinite(scores).all()
    assert auroc(truth, tuned) > 0.75
    assert auroc(truth, baseline) > 0.6  # the from-scratch baseline learns too
    for kept, now in zip(before, model.get_weights()):  # fine-tuning worked on a copy
        np.testing.assert_array_equal(kept, now)


@pytest.mark.slow
def test_a_reused_learner_starts_every_run_afresh(trained):
    """Evaluation reuses one traced learner per method; a run after another must score
    exactly like a run on a new model and optimizer."""
    model, model_cfg = trained[0].model, trained[0].model_config
    labelled, labels = planted_users(SPEC, 24, seed=13)
    other, other_labels = planted_users(SPEC, 20, seed=14)
    query, _ = planted_users(SPEC, 16, seed=15)
    budget = AdaptConfig(max_epochs=2, batch_size=8, learning_rate=2e-3, seed=3)
    learner = Learner(SPEC, model_cfg, budget.learning_rate, budget.bn_momentum)

    fresh_tuned = fine_tune_scores(model, model_cfg, labelled, labels, query, budget)
    fresh_scratch = scratch_scores(SPEC, model_cfg, labelled, labels, query, budget)
    scratch_scores(SPEC, model_cfg, other, other_labels, query, budget, learner)  # moves state
    reused_tuned = fine_tune_scores(model, model_cfg, labelled, labels, query, budget, learner)
    reused_scratch = scratch_scores(SPEC, model_cfg, labelled, labels, query, budget, learner)

    np.testing.assert_allclose(reused_tuned, fresh_tuned, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reused_scratch, fresh_scratch, rtol=1e-5, atol=1e-5)
    assert not np.allclose(fresh_tuned, fresh_scratch)  # the two starts really differ


def test_early_stopping_keeps_the_best_epoch_of_its_curve(trained):
    _, model_cfg = trained[0].model, trained[0].model_config
    labelled, labels = planted_users(SPEC, 48, seed=16)
    budget = AdaptConfig(max_epochs=6, patience=2, batch_size=8, learning_rate=2e-3, seed=4)
    learner = Learner(SPEC, model_cfg, budget.learning_rate, budget.bn_momentum)
    scratch_scores(SPEC, model_cfg, labelled, labels, labelled, budget, learner)
    epochs = [e for e, _ in learner.curve]
    values = [v for _, v in learner.curve]
    assert epochs == list(range(len(epochs))) and 2 <= len(epochs) <= 7
    assert values[learner.best_epoch] == max(values)
    # stopped early only after `patience` epochs without a better value
    assert len(epochs) == 7 or len(epochs) - 1 - learner.best_epoch == budget.patience


def test_validation_split_is_stratified_or_absent():
    from model.adapt import validation_split
    labels = np.array([1] * 10 + [0] * 40)
    train, validation = validation_split(labels, 0.2, np.random.default_rng(0))
    assert labels[validation].sum() == 2 and (labels[validation] == 0).sum() == 8
    assert not set(train) & set(validation) and len(train) + len(validation) == 50
    assert validation_split(np.array([1, 1, 0, 0, 0]), 0.2, np.random.default_rng(0))[1] is None


def test_prototype_scores_need_a_positive(trained):
    labelled, _ = planted_users(SPEC, 8, seed=12)
    with pytest.raises(ValueError, match="no positive"):
        prototype_scores(trained[0].model, labelled, np.zeros(8), labelled)


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaprofile")
    model_cli.add_subparsers(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_model_summary_prints_the_full_size_count(capsys):
    args = _parser().parse_args(["model-summary", "--config", str(SYNTHETIC_CONFIG)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "1,612,745" in out and "52x12x64 -> 13x6x128 -> 4x3x256 -> 1x1x512" in out
    assert "about 2 million" in out


def test_cli_train_writes_an_artifact(tmp_path, monkeypatch, capsys):
    """``metaprofile train`` end to end, with planted data behind the input-pipeline seam."""
    calls = []

    def make_dataset(uri, split, spec, batch_size, *, shuffle, repeat, seed,
                     value_transform=None):
        calls.append((uri, split, batch_size, shuffle, repeat, value_transform))
        return planted_dataset(spec, 64, seed=1 if split == "train" else 2,
                               batch_size=batch_size, repeat=repeat, shuffle=shuffle)

    manifest = {"spec": {"window_days": 14}, "sha256": "cd" * 32}
    fake = types.ModuleType("model.inputs")
    fake.make_dataset = make_dataset
    fake.read_manifest = lambda uri: manifest
    fake.check_manifest = lambda manifest, config: None
    monkeypatch.setitem(__import__("sys").modules, "model.inputs", fake)
    args = _parser().parse_args([
        "train", "--config", str(SYNTHETIC_CONFIG), "--set", f"storage.root={tmp_path}",
        "--set", "window.days=14",
        "--width", "0.0625", "--embedding-dim", "8", "--relation-units", "8,4",
        "--steps", "4", "--validate-every", "4", "--log-every", "2", "--val-batches", "2",
        "--pool-per-class", "6", "--batch-size", "16", "--version", "test",
        "--work-dir", str(tmp_path / "work")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "step 4/4" in out
    artifact_dir = tmp_path / "models" / "test"
    assert out.strip().splitlines()[-1] == str(artifact_dir)  # the path is the last line
    heatmaps = f"{tmp_path}/heatmaps/ds=2026-06-30"
    assert calls == [(heatmaps, "train", 16, True, True, "log1p"),
                     (heatmaps, "validation", 16, False, False, "log1p")]
    metrics = json.loads((artifact_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["ds"] == "2026-06-30"
    assert (artifact_dir / "data_manifest_sha256").read_text().strip() == "cd" * 32
    spec = InputSpec.from_dict(json.loads((artifact_dir / "input_spec.json").read_text()))
    assert spec.days == 14 and len(spec.tasks) == 9
    assert load_artifact(str(artifact_dir), spec, manifest["spec"]).model.spec == spec
