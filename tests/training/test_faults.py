"""Faults: a crash mid-save, a corrupted checkpoint, a full disk. Nothing lost, errors clear."""

import gc
import json
import logging
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import pytest

import helpers
from bert_jax.training import metrics
from bert_jax import errors
from bert_jax.training import trainer
from helpers import tiny_config

CKPT_EVERY_2 = {"train.num_steps": 4, "checkpoint.every_steps": 2, "train.log_every_steps": 2,
                "eval.every_steps": 0}


def _steps(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def test_a_save_killed_midway_is_never_restored(tmp_path, caplog):
  """What kill -9 during an async save leaves (an unfinished Orbax tmp directory) is ignored."""
  trainer.train_and_evaluate(tiny_config(**CKPT_EVERY_2), str(tmp_path))
  ckpts = tmp_path / "checkpoints"
  partial = ckpts / "6.orbax-checkpoint-tmp"
  shutil.copytree(ckpts / "4", partial)
  for f in sorted(partial.rglob("*"))[-5:]:
    if f.is_file():
      f.write_bytes(f.read_bytes()[:3])
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(tiny_config(**{**CKPT_EVERY_2, "train.num_steps": 6}),
                             str(tmp_path))
  assert "resumed from checkpoint at step 4" in caplog.text
  assert _steps(tmp_path) == ["2", "4", "6"]


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, damage,
                                                                  monkeypatch):
  trainer.train_and_evaluate(tiny_config(**CKPT_EVERY_2), str(tmp_path))
  state_dir = tmp_path / "checkpoints" / "4" / "state"
  biggest = max((f for f in state_dir.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
  if damage == "truncate":
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])
  else:
    biggest.unlink()
  stray = []  # what Python would print to stderr as "Exception ignored in: ..."
  monkeypatch.setattr(sys, "unraisablehook", stray.append)
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(tiny_config(**{**CKPT_EVERY_2, "train.num_steps": 6}),
                             str(tmp_path))
    gc.collect()
  assert f"checkpoint {tmp_path / 'checkpoints' / '4'} is unreadable" in caplog.text
  # The reason is TensorStore's own line (which file, what is wrong), not Orbax's wrapper
  assert "See full TensorStore details" not in caplog.text
  assert "resumed from checkpoint at step 2" in caplog.text
  assert _steps(tmp_path) == ["2", "4", "4.corrupt-0", "6"]
  # The aborted restore's pending reads are collected quietly, not dumped on stderr later
  # (pages of TensorStore specs, at a random moment).
  assert not stray, [f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}"[:300] for u in stray]


@pytest.fixture
def tiny_disk(tmp_path):
  """A real 10 MB filesystem (tmpfs): room for one checkpoint of the test model, not two."""
  mnt = tmp_path / "disk"
  mnt.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mnt)],
                        capture_output=True, text=True)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs to fill up ({proc.stderr.strip()}); needs root")
  yield mnt
  subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_disk_full_during_a_save(tiny_disk, policy, caplog):
  # Saves at 2 (fits), 4 (fails in the background), 6 (reports 4's failure: stop, or log and
  # go on), 8 (the final save: always an error when it cannot be written).
  config = tiny_config(**{"train.num_steps": 8, "checkpoint.every_steps": 2,
                          "train.log_every_steps": 2, "eval.every_steps": 0,
                          "checkpoint.max_to_keep": 3,
                          "checkpoint.on_save_error": policy})
  with pytest.raises(errors.SaveError) as e, caplog.at_level(logging.ERROR):
    trainer.train_and_evaluate(config, str(tiny_disk))
  msg = str(e.value)
  assert "\n" not in msg
  assert "failed (" in msg and "No space left on device" in msg
  assert "earlier checkpoints are intact; free disk space or fix the path" in msg
  assert _steps(tiny_disk)[0] == "2"  # the first checkpoint survived
  if policy == "continue":  # logged, trained on, and the final save failed loudly
    assert "training continues (checkpoint.on_save_error=continue)" in caplog.text
  # With more room, the same command resumes from the intact checkpoint and finishes.
  subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
  caplog.clear()
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(config, str(tiny_disk))
  assert "resumed from checkpoint at step 2" in caplog.text
  assert _steps(tiny_disk)[-1] == "8"


def test_an_unfinished_save_is_removed_while_its_last_writes_land(tmp_path, monkeypatch):
  """A failed save's writes are not cancelled by Orbax and can land while the next Checkpointer
  (a restart in the same process) removes the save's temporary directory: the removal must
  outlast them (ENOTEMPTY), not fail every later save of the run."""
  from bert_jax.training.checkpointing import Checkpointer
  ckpts = tmp_path / "checkpoints"
  d = ckpts / "8.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp" / "ocdbt.process_0" / "d"
  d.mkdir(parents=True)
  late = []
  real_rmdir = os.rmdir

  def rmdir(path, *args, **kwargs):  # three late writes land in d just before it is removed
    if os.path.basename(path) == "d" and len(late) < 3:
      late.append(d / f"late{len(late)}")
      late[-1].write_bytes(b"x")
    return real_rmdir(path, *args, **kwargs)

  monkeypatch.setattr(os, "rmdir", rmdir)
  ckpt = Checkpointer(ckpts)
  ckpt.save(8, {"w": jnp.arange(4.0)})
  ckpt.wait()
  assert len(late) == 3 and _steps(tmp_path) == ["8"]
  ckpt.close()


def test_resuming_with_another_model_size_is_an_error_not_corruption(tmp_path):
  trainer.train_and_evaluate(tiny_config(**CKPT_EVERY_2), str(tmp_path))
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  config_before = (tmp_path / "config.json").read_text()
  with pytest.raises(errors.UserError) as e:
    trainer.train_and_evaluate(tiny_config(**{**CKPT_EVERY_2, "model.preset": "mini"}),
                             str(tmp_path))
  msg = str(e.value)
  assert msg.startswith(f"{tmp_path / 'checkpoints' / '4'}: ")
  assert "has shape [128] but this config needs [256]" in msg
  assert msg.endswith(f"resume with the config this run was started with (see "
                      f"{tmp_path / 'config.json'}) or use a new --workdir")
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # untouched
  assert (tmp_path / "config.json").read_text() == config_before


@pytest.mark.slow
def test_resuming_after_the_dataset_was_re_prepared_is_a_clear_error(tmp_path):
  """Saved input positions are file offsets into one build of the dataset: another build
  (re-prepared with other settings) must be refused, and the checkpoints left alone."""
  from bert_jax.data import prepare
  from bert_jax.data import SAMPLE_CORPUS
  vocab_path = helpers.sample_vocab()
  data = str(tmp_path / "data")
  build = dict(input=str(SAMPLE_CORPUS), vocab=vocab_path, data_dir=data, max_seq_length=64,
               max_predictions_per_seq=10)
  prepare.prepare(**build, validation_fraction=0.1)
  work = tmp_path / "w"
  trainer.train_and_evaluate(tiny_config(data, **CKPT_EVERY_2), str(work))
  prepare.prepare(**build, validation_fraction=0.2, overwrite=True)
  with pytest.raises(errors.UserError, match=r"input pipeline state in .*/checkpoints/4/data "
                     r"belongs to a different build of the dataset in .* \(re-prepared since\?\); "
                     r"resume with the data it was trained on, or start a new --workdir"):
    trainer.train_and_evaluate(tiny_config(data, **{**CKPT_EVERY_2, "train.num_steps": 6}),
                             str(work))
  assert _steps(work) == ["2", "4"]


def test_only_orbax_debris_is_kept_off_stderr(monkeypatch):
  """The filter behind the test above passes every other 'Exception ignored' report through."""
  from bert_jax.training import checkpointing
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  checkpointing._keep_orbax_debris_off_stderr()
  checkpointing._keep_orbax_debris_off_stderr()  # idempotent: one filter, not a chain

  class Noisy:
    def __del__(self):
      raise RuntimeError("Event loop is closed")  # the same words, but not from asyncio

  Noisy()
  gc.collect()
  assert [str(u.exc_value) for u in seen] == ["Event loop is closed"]


def test_metrics_on_a_full_disk_warn_once_and_catch_up(tiny_disk, caplog):
  """A full disk costs the metrics files a warning, not the run; they continue where they stopped."""
  from etils import epath
  filler = tiny_disk / "filler"
  writer = metrics.MetricWriter(epath.Path(tiny_disk))
  writer.write("train", 0, {"loss": 1.0})
  with open(filler, "wb") as f, pytest.raises(OSError):
    while True:
      f.write(b"\0" * (1 << 16))
      f.flush()
  with caplog.at_level(logging.INFO):
    for step in range(1, 4):  # big enough lines to hit the full disk at once
      writer.write("train", step, {f"metric_{i}": 0.5 for i in range(500)})
    filler.unlink()
    writer.write("train", 4, {"loss": 0.5})
    writer.close()
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith("metrics of step 1 could not be written to ")
  assert "(No space left on device); training goes on" in warnings[0]
  assert "metrics are written to" in caplog.text and "again (metrics of step 4)" in caplog.text
  lines = (tiny_disk / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3, 4]
