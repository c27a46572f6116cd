"""The sharded train step: meshes agree with one device, params really sharded, accumulation."""

import jax
import numpy as np
import pytest

from bert_jax.parallel import sharding
from bert_jax.training import pretraining
from bert_jax.training import train_state
from bert_jax.training import config as config_lib
from helpers import tiny_config

STEPS = 3


def _run(config, mesh_shape, steps=STEPS, vocab=500):
  n = int(np.prod(mesh_shape))
  mesh = sharding.create_mesh(*mesh_shape, devices=jax.devices()[:n])
  setup = pretraining.build(config, mesh, vocab)
  state = setup.init_state(jax.random.key(0))
  losses = []
  for i in range(steps):
    batch = pretraining.synthetic_batch(config.train.batch_size, config.data.seq_len,
                                      config.data.max_predictions_per_seq, vocab, i)
    state, metrics = setup.train_step(state, train_state.global_batch(batch, setup.batch_sharding))
    losses.append(float(metrics["loss"]))
  return losses, state


@pytest.fixture(scope="module")
def single_device():
  return _run(tiny_config(), (1, 1, 1))


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_meshes_match_one_device(single_device, mesh_shape):
  """Tolerance: 1e-5 relative on losses and 1e-4 absolute on parameters after 3 steps
  (reductions happen in a different order across shards)."""
  ref_losses, ref_state = single_device
  losses, state = _run(tiny_config(), mesh_shape)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
  # The parameters really are sharded as the rules say.
  layer = state.params["bert"]["encoder"]["layers"][1]
  qkv = layer["attention"]["qkv"]["kernel"]  # [H, 3, N, D]
  data, fsdp, tensor = mesh_shape
  assert qkv.sharding.spec == jax.sharding.PartitionSpec("fsdp", None, "tensor", None)
  assert qkv.addressable_shards[0].data.shape == (128 // fsdp, 3, 2 // tensor, 64)
  ffn = layer["intermediate"]["kernel"]  # [H, I]
  assert ffn.addressable_shards[0].data.shape == (128 // fsdp, 512 // tensor)
  mu = state.opt_state[1][0].mu["bert"]["encoder"]["layers"][1]["intermediate"]["kernel"]
  assert mu.sharding == ffn.sharding  # optimizer state sharded like its parameter


def test_gradient_accumulation_equals_the_full_batch():
  # Without dropout (micro-batches draw their own masks) the result must be the same function.
  no_dropout = {"model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0}
  ref_losses, ref_state = _run(tiny_config(**no_dropout), (1, 1, 1))
  losses, state = _run(tiny_config(**no_dropout, **{"train.grad_accum_steps": 4}), (2, 1, 1))
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def test_nonfinite_update_is_not_applied_and_counted():
  config = tiny_config()
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  setup = pretraining.build(config, mesh, 500)
  state = setup.init_state(jax.random.key(0))
  batch = pretraining.synthetic_batch(8, 64, 10, 500, 0)
  batch["masked_ids"][0, 0] = 10_000  # out of vocabulary: NaN loss (a vocab_size mismatch)
  before = jax.tree.map(np.asarray, state.params)
  state, metrics = setup.train_step(state, train_state.global_batch(batch, setup.batch_sharding))
  assert not bool(metrics["finite"]) and int(metrics["skipped_steps"]) == 1
  assert int(state.step) == 1
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_mesh_size_errors():
  with pytest.raises(sharding.MeshError, match=r"data×fsdp×tensor = 2×2×1 = 4 but there are 8 "
                     "devices"):
    sharding.mesh_shape(2, 2, 1, 8)
  with pytest.raises(sharding.MeshError, match="3 does not divide the 8 devices"):
    sharding.mesh_shape(-1, 3, 1, 8)


def test_batch_not_divisible_by_data_parallel_size():
  mesh = sharding.create_mesh(8, 1, 1)
  with pytest.raises(config_lib.ConfigError, match="batch_size=12 is not divisible by the "
                     "data-parallel size 8"):
    config_lib.validate_pretraining_batch(tiny_config(**{"train.batch_size": 12}), mesh, 1)


def test_objective_none_trains_the_masked_lm_alone():
  """objective none: a BertForMaskedLM (no pooler / NSP parameters), the MLM loss only, no nsp
  metrics, next_sentence_label not read; accumulation and eval work the same way."""
  no_dropout = {"model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0}
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  runs = []
  for accum in (1, 2):
    setup = pretraining.build(tiny_config(**no_dropout, **{"train.grad_accum_steps": accum}),
                              mesh, 500, "none")
    assert setup.objective == "none" and setup.model_task == "masked_lm"
    state = setup.init_state(jax.random.key(0))
    assert sorted(state.params) == ["bert", "mlm"] and "pooler" not in state.params["bert"]
    batch = pretraining.synthetic_batch(8, 64, 10, 500, 0)
    del batch["next_sentence_label"]  # "none" does not read it
    state, metrics = setup.train_step(state, train_state.global_batch(batch, setup.batch_sharding))
    runs.append((jax.device_get(metrics), jax.device_get(state.params)))
  (m, params), (m2, params2) = runs
  assert sorted(m) == ["batch_size", "finite", "grad_norm", "learning_rate", "loss",
                       "mlm_accuracy", "mlm_loss", "sequences", "skipped_steps", "tokens"]
  assert bool(m["finite"]) and np.isfinite(m["loss"]) and m["loss"] > 0 and m["sequences"] == 8
  np.testing.assert_allclose(m["loss"], m["mlm_loss"], rtol=1e-6)  # no sentence term
  np.testing.assert_allclose(m2["loss"], m["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, atol=2e-5)
  sums = jax.device_get(setup.eval_step(state.params, train_state.global_batch(
      dict(batch, example_weight=np.r_[np.ones(6), np.zeros(2)].astype(np.float32)),
      setup.batch_sharding)))
  assert sorted(sums) == ["mlm_correct", "mlm_nll", "mlm_weight", "sequences", "target_counts"]
  summary = pretraining.eval_summary(sums)
  assert sorted(summary) == ["loss", "mlm_accuracy", "mlm_loss", "unigram_accuracy"]
  assert sums["sequences"] == 6
  # The unigram baseline: the most frequent masked target's share of the 6 real rows' targets.
  targets = batch["masked_ids"][:6][batch["masked_weights"][:6] > 0]
  np.testing.assert_allclose(summary["unigram_accuracy"],
                             np.bincount(targets).max() / len(targets), rtol=1e-5)
  # nsp and sop train the pretraining model (the same head, loss and nsp_* metric names).
  assert pretraining.model_task("nsp") == pretraining.model_task("sop") == "pretraining"
  with pytest.raises(ValueError, match="objective 'rtd' is not one of nsp, sop, none"):
    pretraining.build(tiny_config(), mesh, 500, "rtd")


@pytest.mark.parametrize("objective", ["nsp", "none"])
def test_packed_batch_trains_like_the_same_sequences_unpacked(sample_data, objective):
  """One step on packed rows = one step on the same sequences one per row: same losses, same
  accuracies, same updated parameters (dropout off: it is the same function). For "none" the
  packed rows carry no NSP keys (cls_positions, nsp_weights, next_sentence_label)."""
  from bert_jax.data import input_pipeline
  _, data_dir = sample_data
  # 512 sequences: dozens of at most 32 tokens whatever the sample vocabulary, so rows pack.
  group = next(input_pipeline.train_iterator(data_dir, batch_size=512, seq_len=64,
                                             max_predictions_per_seq=10, seed=0))
  rows = input_pipeline.pack_examples(group, max_sequences_per_row=4, pad_id=0)
  used = rows.pop("row_used")
  rows = {k: v[used] for k, v in rows.items()}
  if objective == "none":
    for k in ("cls_positions", "nsp_weights", "next_sentence_label"):
      del rows[k]
  assert len(rows["input_ids"]) < 512
  config = tiny_config(**{"model.hidden_dropout_prob": 0.0,
                          "model.attention_probs_dropout_prob": 0.0})
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  results = []
  for batch in (group, rows):
    setup = pretraining.build(config, mesh, 2000, objective)
    state = setup.init_state(jax.random.key(0))
    state, metrics = setup.train_step(state, train_state.global_batch(batch, setup.batch_sharding))
    results.append((jax.device_get(metrics), jax.device_get(state.params)))
  (m0, p0), (m1, p1) = results
  assert ("nsp_loss" in m0) == ("nsp_loss" in m1) == (objective == "nsp")
  for k in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "grad_norm"):
    if k in m0:
      np.testing.assert_allclose(m1[k], m0[k], rtol=2e-5, err_msg=k)
  assert m0["sequences"] == m1["sequences"] == 512 and m0["tokens"] == m1["tokens"]
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p0)):
    np.testing.assert_allclose(a, b, atol=1e-5)
