"""Stop at a target (train.target_mlm_accuracy, MLPerf style): the first eval that reaches it ends
the run with a checkpoint there and the time to it; a run resumed where it reached its target
trains no further; one that does not reach it goes to num_steps. (One run, resumed twice: each
run compiles, and this machine is slow.)"""

import json
import os

import ml_collections
import pytest

from bert_jax.training import config as config_lib
from bert_jax.training import loop, trainer
from helpers import tiny_config


def _records(workdir, kind):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == kind]


def _target_json(workdir):
  return json.loads((workdir / "target.json").read_text())


@pytest.fixture
def accuracy_at(monkeypatch):
  """The eval's mlm_accuracy by step (the rest of the eval is real): `table` sets it."""
  table = {}
  real = trainer.PretrainingTask.evaluate

  def evaluate(self, state, step):
    out = real(self, state, step)
    out["mlm_accuracy"] = table.get(step, 0.0)
    return out

  monkeypatch.setattr(trainer.PretrainingTask, "evaluate", evaluate)
  return table


def _config(target, **overrides):
  return tiny_config(**{"train.num_steps": 6, "eval.every_steps": 2, "checkpoint.every_steps": 3,
                        "train.target_mlm_accuracy": target, **overrides})


def test_stops_at_the_first_eval_that_reaches_it_and_a_resume_trains_no_further(
    accuracy_at, tmp_path, caplog):
  accuracy_at.update({2: 0.1, 4: 0.5, 6: 0.2})
  with caplog.at_level("INFO"):
    result = trainer.train_and_evaluate(_config(0.3), str(tmp_path))
  assert result["mlm_accuracy"] == 0.5  # the eval at step 4, not one at num_steps
  assert [r["step"] for r in _records(tmp_path, "eval")] == [2, 4]
  assert [r["step"] for r in _records(tmp_path, "train")] == [2, 4]
  assert sorted(map(int, os.listdir(tmp_path / "checkpoints"))) == [3, 4]  # saved at the target
  assert any(m.startswith("target mlm_accuracy 0.3000 reached at step 4 (eval 0.5000) after ")
             and m.endswith(" s from process start; stopping") for m in caplog.messages)
  (record,) = _records(tmp_path, "target")
  assert record["step"] == record["target_step"] == 4 and record["reached"] is True
  assert record["target_mlm_accuracy"] == 0.3 and record["mlm_accuracy"] == 0.5
  # from the process start (before this test ran) to that eval
  assert 0 < record["time_to_target_s"] < loop.seconds_since_process_start()
  saved = _target_json(tmp_path)
  assert {k: saved[k] for k in record if k != "kind"} == {k: v for k, v in record.items()
                                                          if k != "kind"}
  assert saved["eval"]["mlm_accuracy"] == 0.5 and saved["eval"]["examples"] == 16

  # Resumed: finished at its target, nothing trained, evaluated or written.
  lines = (tmp_path / "metrics.jsonl").read_text()
  caplog.clear()
  with caplog.at_level("INFO"):
    again = trainer.train_and_evaluate(_config(0.3), str(tmp_path))
  assert again == saved["eval"]
  assert (tmp_path / "metrics.jsonl").read_text() == lines
  assert sorted(map(int, os.listdir(tmp_path / "checkpoints"))) == [3, 4]
  assert any("target mlm_accuracy 0.3000 was reached at step 4 (eval 0.5000; " in m
             and "the run is finished, not training further" in m for m in caplog.messages)

  # A higher target trains on from there to num_steps: not reached, its best is step 4's (an
  # eval of the process before the resume).
  caplog.clear()
  with caplog.at_level("INFO"):
    result = trainer.train_and_evaluate(_config(0.9), str(tmp_path))
  assert [r["step"] for r in _records(tmp_path, "eval")] == [2, 4, 6]
  assert sorted(map(int, os.listdir(tmp_path / "checkpoints"))) == [3, 4, 6]
  saved = _target_json(tmp_path)
  assert saved["reached"] is False and saved["step"] == 6 and saved["target_mlm_accuracy"] == 0.9
  assert (saved["best_mlm_accuracy"], saved["best_step"]) == (0.5, 4)
  assert saved["eval"] == result and result["mlm_accuracy"] == 0.2
  assert "time_to_target_s" not in saved
  assert [r["reached"] for r in _records(tmp_path, "target")] == [True, False]
  assert "target mlm_accuracy 0.9000 not reached in 6 steps (best eval 0.5000 at step 4)" in (
      caplog.messages)


def test_config_errors():
  for bad in (1.5, -0.1, float("nan")):
    with pytest.raises(config_lib.ConfigError) as e:
      config_lib.validate_config(_config(bad))
    assert str(e.value) == (f"--config.train.target_mlm_accuracy={bad} must be in (0, 1] (or 0: "
                            "no target)")
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate_config(_config(0.3, **{"eval.every_steps": 0}))
  assert str(e.value) == ("--config.train.target_mlm_accuracy needs eval.every_steps > 0 to stop "
                          "early; set it (e.g. 100)")
  for good in (0.0, 1.0, 0.3):
    config_lib.validate_config(_config(good))
  config_lib.validate_config(_config(0.0, **{"eval.every_steps": 0}))  # no target: no eval needed
  # An older run's config.json (resumed) lacks the key: no target.
  old = ml_collections.ConfigDict(json.loads(_config(0.0).to_json_best_effort()))
  del old.train["target_mlm_accuracy"]
  config_lib.validate_config(old)


def test_a_damaged_or_other_target_file_does_not_finish_a_run(tmp_path):
  target = ("mlm_accuracy", 0.3)
  assert loop.finished_at(tmp_path, target, 4) is None  # none yet
  (tmp_path / "target.json").write_text("{not json")
  assert loop.finished_at(tmp_path, target, 4) is None
  record = {"reached": True, "target_step": 4, "mlm_accuracy": 0.35, "eval": {}}
  (tmp_path / "target.json").write_text(json.dumps(record))
  assert loop.finished_at(tmp_path, target, 4) == record
  assert loop.finished_at(tmp_path, target, 3) is None  # an older checkpoint: train on
  assert loop.finished_at(tmp_path, ("mlm_accuracy", 0.4), 4) is None  # a higher target
  (tmp_path / "target.json").write_text(json.dumps(dict(record, reached=False)))
  assert loop.finished_at(tmp_path, target, 4) is None
