"""Batch-size warmup: ModernBERT's schedule, the train step at each size, logging, exact resume,
and its config errors."""

import json
import math
import os

import jax
import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.parallel import sharding
from bert_jax.training import batch_warmup, pretraining, train_state, trainer
from bert_jax.training import config as config_lib
from helpers import tiny_config


class _ModernBertScheduler:
  """Transcribed from AnswerDotAI/ModernBERT src/sequence_packer.py BatchSizeWarmupScheduler
  (world_size 1, integer warmup_tokens): the batch (in units) for a count of tokens seen."""

  def __init__(self, min_batch_size, max_batch_size, warmup_tokens):
    self.min_batch_size, self.max_batch_size = min_batch_size, max_batch_size
    self.warmup_tokens = math.ceil(warmup_tokens / 1)
    total_batch_sizes = sum(range(self.min_batch_size, self.max_batch_size))
    steps_per_unit = self.warmup_tokens / total_batch_sizes
    self._step_thresholds, cumsum = [], 0
    for batch_size in range(self.min_batch_size, self.max_batch_size):
      cumsum += batch_size
      self._step_thresholds.append(math.ceil(steps_per_unit * cumsum))

  def __call__(self, current_step):
    if current_step >= self.warmup_tokens:
      return self.max_batch_size
    for i, threshold in enumerate(self._step_thresholds):
      if current_step < threshold:
        return self.min_batch_size + i
    return self.max_batch_size


@pytest.mark.parametrize("min_size,max_size,warmup_tokens,seq_len", [
    (768, 4608, 50_000_000_000, 1024),  # ModernBERT-base's recipe
    (2, 8, 1000, 64), (3, 12, 10_000, 16), (1, 7, 12_345, 5), (4, 8, 1, 32)])
def test_schedule_is_modernberts_step_by_step(min_size, max_size, warmup_tokens, seq_len):
  """Our phases against ModernBERT's scheduler run step by step on the tokens so far (its
  per-device units: one unit = min_size sequences)."""
  schedule = batch_warmup.BatchSizeSchedule(min_size, max_size, warmup_tokens, seq_len)
  reference = _ModernBertScheduler(1, max_size // min_size, warmup_tokens)
  tokens, checked = 0, 0
  for step in range(schedule.warmup_steps + 3):
    units = reference(tokens)
    assert schedule.rows(step) == units * min_size, step
    assert schedule.positions_before(step) == tokens
    tokens += units * min_size * seq_len
    checked += 1
    if step > 10_000:  # the recipe's 66k steps: check the phase boundaries instead
      break
  for first, rows, before in schedule.phases:
    assert reference(before) * min_size == rows
    if first:
      assert schedule.rows(first - 1) < rows
  assert schedule.rows(schedule.warmup_steps) == max_size
  assert schedule.rows(schedule.warmup_steps - 1) < max_size


def test_recipe_numbers():
  """768 -> 4,608 sequences of 1,024 over 50B tokens: sizes 768 .. 3,840 (five), 4,239 steps
  each (50B / 15 units / 786,432 tokens per unit), then the full batch."""
  s = batch_warmup.BatchSizeSchedule(768, 4608, 50_000_000_000, 1024)
  assert [rows for _, rows, _ in s.phases] == [768, 1536, 2304, 3072, 3840, 4608]
  steps = np.diff([first for first, _, _ in s.phases])
  assert steps.min() >= 4238 and steps.max() <= 4239
  assert s.positions_before(s.warmup_steps) >= 50_000_000_000
  # 3B tokens of LR warmup fall in the first phase (768 x 1024 per step).
  assert s.steps_for_tokens(3e9) == math.ceil(3e9 / (768 * 1024))


def test_steps_for_tokens_inverts_positions_before():
  s = batch_warmup.BatchSizeSchedule(2, 8, 1000, 64)
  for tokens in [0, 1, 127, 128, 129, 500, 1000, 5000, 123_456]:
    n = s.steps_for_tokens(tokens)
    assert s.positions_before(n) >= tokens
    assert n == 0 or s.positions_before(n - 1) < tokens


def test_a_smaller_batch_accumulates_fewer_micro_batches():
  """The step's accumulation follows the batch's rows: a 4-row batch with 2-row micro-batches
  (2 micro-batches) equals the same batch in one piece."""
  no_dropout = {"model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0}
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  results = []
  for accum in (1, 4):
    config = tiny_config(**no_dropout, **{"train.grad_accum_steps": accum})
    setup = pretraining.build(config, mesh, 500)
    state = setup.init_state(jax.random.key(0))
    batch = pretraining.synthetic_batch(4, 64, 10, 500, 0)  # half of batch_size 8
    state, metrics = setup.train_step(state, train_state.global_batch(batch,
                                                                      setup.batch_sharding))
    assert float(metrics["batch_size"]) == 4
    results.append((float(metrics["loss"]), jax.tree.map(np.asarray, state.params)))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1])):
    np.testing.assert_allclose(a, b, atol=2e-6)


# On the 8 fake devices (data parallel): sizes 8, 16 (one step each), then 24.
_WARMUP = {"train.batch_size": 24, "train.batch_size_warmup_min": 8,
           "train.batch_size_warmup_tokens": 3 * 8 * 64, "optimizer.decay": "constant",
           "eval.every_steps": 0, "eval.num_batches": 1, "train.log_every_steps": 1}


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == "train"]


def test_the_batch_grows_each_size_is_logged_and_resume_is_exact(tmp_path, caplog):
  """4 steps in one run (batches 8, 16, 24, 24) == 2 steps, then a second run resuming to 4
  (the checkpoint sits inside the warmup: the data position and the schedule's step both come
  back); a resume with another schedule is refused."""
  config = tiny_config(**_WARMUP, **{"train.num_steps": 4, "checkpoint.every_steps": 2})
  schedule = batch_warmup.schedule_from_config(config)
  assert [rows for _, rows, _ in schedule.phases] == [8, 16, 24]
  with caplog.at_level("INFO"):
    trainer.train_and_evaluate(config, str(tmp_path / "a"))
  train = _metrics(tmp_path / "a")
  assert [r["step"] for r in train] == [4]  # steps 1-3 each compiled a new size
  assert train[0]["batch_size"] == 24 and train[0]["tokens_per_s"] > 0
  assert "step 3: batch size 24 (was 16), compiling its train step" in caplog.text
  assert "| batch 24" in caplog.text

  first = tiny_config(**_WARMUP, **{"train.num_steps": 2, "checkpoint.every_steps": 2})
  trainer.train_and_evaluate(first, str(tmp_path / "b"))
  trainer.train_and_evaluate(config, str(tmp_path / "b"))
  for x, y in zip(jax.tree.leaves(_final_params(str(tmp_path / "a"), config)),
                  jax.tree.leaves(_final_params(str(tmp_path / "b"), config))):
    np.testing.assert_array_equal(x, y)

  other = tiny_config(**{**_WARMUP, "train.batch_size_warmup_tokens": 9999,
                         "train.num_steps": 9})
  with pytest.raises(UserError) as e:
    trainer.train_and_evaluate(other, str(tmp_path / "b"))
  assert "saved with batch-size warmup" in str(e.value)
  assert "resume with the same train.batch_size_warmup_* or start a new --workdir" in str(e.value)


def _final_params(workdir, config):
  from bert_jax.training.checkpointing import Checkpointer
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  setup = pretraining.build(config, mesh, 500)
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    state, _ = ckpt.restore(setup.abstract_state)
  return jax.tree.map(np.asarray, state.params)


@pytest.mark.parametrize("overrides,message", [
    ({"train.batch_size_warmup_min": 3, "train.batch_size_warmup_tokens": 100},
     "--config.train.batch_size_warmup_min=3 must divide train.batch_size=8 and be smaller (the "
     "batch grows in steps of it), or 0 for no batch-size warmup"),
    ({"train.batch_size_warmup_min": 8, "train.batch_size_warmup_tokens": 100},
     "--config.train.batch_size_warmup_min=8 must divide train.batch_size=8"),
    ({"train.batch_size_warmup_min": 2, "train.batch_size_warmup_tokens": 0},
     "--config.train.batch_size_warmup_tokens=0 must be > 0 with batch_size_warmup_min=2: the "
     "tokens over which the batch grows"),
    ({"train.batch_size_warmup_min": 2, "train.batch_size_warmup_tokens": 100,
      "train.grad_accum_steps": 2},
     "--config.train.batch_size_warmup_min=2 is not a multiple of the micro-batch 4 "
     "(batch_size / grad_accum_steps); use a multiple"),
])
def test_config_errors(overrides, message):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate_config(tiny_config(**overrides))
  assert message in str(e.value)


def test_the_warmup_start_must_divide_over_the_mesh():
  config = tiny_config(**{"train.batch_size_warmup_min": 2, "train.batch_size_warmup_tokens": 9})
  mesh = sharding.create_mesh(4, 1, 1, devices=jax.devices()[:4])
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate_pretraining_batch(config, mesh, 1)
  assert str(e.value) == ("--config.train.batch_size_warmup_min=2 is not divisible by the "
                          "data-parallel size 4 (mesh.data × mesh.fsdp) and the 1 processes; "
                          "use a multiple of 4")
