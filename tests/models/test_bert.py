"""The model on its own: shapes, config, dtype policy, scan vs loop, masking, dropout."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import BertConfig, create_model, get_config
from bert_jax.models import PRESETS
from helpers import batch, params_of, random_model, small_config


def test_presets_have_the_published_sizes():
  sizes = {name: (c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                  c.intermediate_size) for name, c in PRESETS.items()}
  assert sizes == {"tiny": (2, 128, 2, 512), "mini": (4, 256, 4, 1024),
                   "small": (4, 512, 8, 2048), "medium": (8, 512, 8, 2048),
                   "base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096),
                   # ModernBERT's published base and large (GLU width), and a CPU size
                   "modernbert_tiny": (4, 128, 2, 192), "modernbert_base": (22, 768, 12, 1152),
                   "modernbert_large": (28, 1024, 16, 2624)}
  base = PRESETS["base"]
  assert (base.vocab_size, base.max_position_embeddings, base.type_vocab_size,
          base.layer_norm_eps, base.initializer_range) == (30522, 512, 2, 1e-12, 0.02)


@pytest.mark.parametrize("name,count", [("base", 110_106_428), ("large", 336_226_108)])
def test_parameter_counts_match_hf(name, count):
  # HF BertForPreTraining(bert-base-uncased config) has 110,106,428 parameters.
  abstract = nnx.eval_shape(lambda: create_model(get_config(name)))
  assert sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))) == count


def test_config_json_round_trips_hf_and_tf1_field_names(tmp_path):
  cfg = get_config("mini", vocab_size=28996, hidden_act="gelu")
  (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
  (tmp_path / "bert_config.json").write_text(json.dumps(cfg.to_tf1_dict()))
  arch = dataclasses.asdict(cfg)
  for f in ("config.json", "bert_config.json"):
    loaded = BertConfig.from_json_file(tmp_path / f)
    assert {k: v for k, v in dataclasses.asdict(loaded).items() if k in cfg.to_tf1_dict()} == {
        k: v for k, v in arch.items() if k in cfg.to_tf1_dict()}
  assert BertConfig.from_json_file(tmp_path / "config.json") == cfg
  assert set(cfg.to_tf1_dict()) == {
      "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
      "initializer_range", "intermediate_size", "max_position_embeddings",
      "num_attention_heads", "num_hidden_layers", "type_vocab_size", "vocab_size"}


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="hidden_size 100 is not divisible by num_attention_heads 3"):
    get_config("tiny", hidden_size=100, num_attention_heads=3)
  with pytest.raises(ValueError, match="hidden_act 'swish' is not one of"):
    get_config("tiny", hidden_act="swish")
  with pytest.raises(ValueError, match="unknown model preset 'huge'"):
    get_config("huge")


def test_every_parameter_has_logical_axis_names():
  model = create_model(small_config())
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata()["out_sharding"]
    assert len(names) == var[...].ndim, path
    assert all(isinstance(n, str) for n in names), path
  layer_kernel = model.bert.encoder.layers[1].attention.qkv.kernel
  assert layer_kernel.get_metadata()["out_sharding"] == ("embed", "qkv", "heads", "kv")


def test_output_shapes_gathered_and_full():
  cfg = small_config()
  model = create_model(cfg)
  ids, types, mask = batch(cfg)
  positions = np.array([[1, 2, 3, 0], [4, 5, 0, 0], [1, 0, 0, 0]], np.int32)
  out = model(ids, types, mask, positions)
  assert out.sequence_output.shape == (3, 16, 64)
  assert out.pooled_output.shape == (3, 64)
  assert out.mlm_logits.shape == (3, 4, 120) and out.mlm_logits.dtype == jnp.float32
  assert out.nsp_logits.shape == (3, 2)
  full = model(ids, types, mask)
  assert full.mlm_logits.shape == (3, 16, 120)
  # Gathered logits equal the full logits at those positions.
  np.testing.assert_allclose(out.mlm_logits,
                             np.take_along_axis(np.asarray(full.mlm_logits),
                                                positions[..., None], axis=1), atol=1e-6)


def test_scanned_and_unrolled_layers_compute_the_same_function():
  cfg = small_config()
  scanned = random_model(cfg.replace(scan_layers=True))
  looped = random_model(cfg.replace(scan_layers=False))
  ids, types, mask = batch(cfg)
  a = scanned(ids, types, mask, deterministic=False, dropout_rng=jax.random.key(1))
  b = looped(ids, types, mask, deterministic=False, dropout_rng=jax.random.key(1))
  np.testing.assert_allclose(a.mlm_logits, b.mlm_logits, atol=1e-5)
  np.testing.assert_allclose(a.nsp_logits, b.nsp_logits, atol=1e-5)


def _pretraining_loss(model, ids, types, mask):
  """MLM cross-entropy at 4 positions per row plus NSP, with dropout on (a training step)."""
  positions = np.tile(np.array([[1, 2, 3, 4]], np.int32), (ids.shape[0], 1))
  labels = np.take_along_axis(ids, positions, axis=1)
  nsp = np.arange(ids.shape[0], dtype=np.int32) % 2
  out = model(ids, types, mask, positions, deterministic=False, dropout_rng=jax.random.key(5))
  mlm = jnp.take_along_axis(jax.nn.log_softmax(out.mlm_logits), labels[..., None], axis=-1)
  nsp_lp = jnp.take_along_axis(jax.nn.log_softmax(out.nsp_logits), nsp[:, None], axis=-1)
  return -mlm.mean() - nsp_lp.mean()


def test_remat_lowers_compiled_memory_and_keeps_loss_and_grads():
  """The compiled training gradient's temporary memory (XLA's memory analysis) shrinks with
  rematerialisation, full below save_dots below none, and the loss and gradients stay equal.

  Scanned layers: with unrolled layers XLA:CPU's memory analysis shows no saving (nor for a
  plain stack of jax.checkpoint'ed matmuls: its schedule does not hold the recomputation back
  to the backward pass), while a scan's backward loop can only recompute inside itself.
  test_remat_keeps_results_with_unrolled_layers checks the unrolled results."""
  cfg = small_config(scan_layers=True)
  ids, types, mask = batch(cfg, batch_size=4, length=32)
  temp, results = {}, {}
  for policy in ("none", "full", "save_dots"):
    model = random_model(cfg.replace(remat_policy=policy))
    graphdef, params = nnx.split(model, nnx.Param)
    grad = jax.value_and_grad(
        lambda p: _pretraining_loss(nnx.merge(graphdef, p), ids, types, mask))
    compiled = jax.jit(grad).lower(params).compile()
    temp[policy] = compiled.memory_analysis().temp_size_in_bytes
    results[policy] = compiled(params)
  assert temp["full"] < temp["save_dots"] < temp["none"], temp
  loss, grads = results["none"]
  for policy in ("full", "save_dots"):
    np.testing.assert_allclose(results[policy][0], loss, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(results[policy][1]), jax.tree.leaves(grads)):
      np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("policy", ["full", "save_dots"])
def test_remat_keeps_results_with_unrolled_layers(policy):
  cfg = small_config()
  ids, types, mask = batch(cfg)
  base, remat = random_model(cfg), random_model(cfg.replace(remat_policy=policy))
  l1, g1 = nnx.value_and_grad(_pretraining_loss)(base, ids, types, mask)
  l2, g2 = nnx.value_and_grad(_pretraining_loss)(remat, ids, types, mask)
  np.testing.assert_allclose(l2, l1, rtol=1e-6)
  for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("impl", ["xla", "cudnn"])
def test_library_attention_refuses_attention_dropout(impl):
  """jax.nn.dot_product_attention has no dropout: a training call with attention-probability
  dropout is an error naming both fields and the fix, not a silently different model."""
  cfg = small_config(attention_impl=impl)
  assert cfg.attention_probs_dropout_prob == 0.1
  ids, types, mask = batch(cfg)
  want = (f"attention_impl='{impl}' has no attention-probability dropout but "
          "attention_probs_dropout_prob=0.1; set attention_probs_dropout_prob=0 or "
          "attention_impl='auto'")
  for c in (cfg, cfg.replace(scan_layers=True, remat_policy="full")):
    model = create_model(c)
    with pytest.raises(ValueError) as e:
      jax.jit(lambda i, t, m: model(i, t, m, deterministic=False,
                                    dropout_rng=jax.random.key(0)).mlm_logits)(ids, types, mask)
    assert str(e.value) == want
  for c in (cfg, cfg.replace(scan_layers=True, remat_policy="full")):
    with pytest.raises(ValueError) as e:
      create_model(c, "classification")(ids, types, mask, deterministic=False,
                                        dropout_rng=jax.random.key(0))
    assert str(e.value) == want


def test_xla_attention_serves_inference_and_dropout_free_training():
  """Refused only where dropout would be skipped: deterministic calls, and training with
  attention_probs_dropout_prob=0, run and match the explicit path."""
  cfg = small_config()
  ids, types, mask = batch(cfg)
  xla, manual = (random_model(cfg.replace(attention_impl=i)) for i in ("xla", "manual"))
  np.testing.assert_allclose(xla(ids, types, mask).mlm_logits,
                             manual(ids, types, mask).mlm_logits, atol=1e-5)
  cfg0 = cfg.replace(attention_probs_dropout_prob=0.0)
  xla, manual = (random_model(cfg0.replace(attention_impl=i)) for i in ("xla", "manual"))
  key = jax.random.key(2)
  np.testing.assert_allclose(
      xla(ids, types, mask, deterministic=False, dropout_rng=key).mlm_logits,
      manual(ids, types, mask, deterministic=False, dropout_rng=key).mlm_logits, atol=1e-5)
  # `auto` keeps attention dropout: on every backend it takes the explicit path then.
  auto = random_model(cfg)
  np.testing.assert_array_equal(
      auto(ids, types, mask, deterministic=False, dropout_rng=key).mlm_logits,
      random_model(cfg.replace(attention_impl="manual"))(
          ids, types, mask, deterministic=False, dropout_rng=key).mlm_logits)


def test_padding_does_not_change_real_tokens():
  cfg = small_config()
  model = random_model(cfg)
  ids, types, mask = batch(cfg)
  out = model(ids, types, mask)
  short = model(ids[1:2, :10], types[1:2, :10], mask[1:2, :10])
  np.testing.assert_allclose(out.sequence_output[1, :10], short.sequence_output[0], atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_fully_padded_rows_are_finite(dtype):
  cfg = small_config(dtype=dtype)
  model = random_model(cfg)
  ids = np.zeros((2, 8), np.int32)
  mask = np.zeros((2, 8), np.int32)
  out = model(ids, attention_mask=mask)
  assert np.isfinite(np.asarray(out.mlm_logits, np.float32)).all()
  assert np.isfinite(np.asarray(out.nsp_logits, np.float32)).all()


def test_bfloat16_compute_is_close_to_float32_with_float32_params():
  """Documented tolerance: bf16 compute stays within 0.1 (abs) of fp32 logits of magnitude ~3."""
  cfg = small_config()
  f32 = random_model(cfg)
  bf16 = random_model(cfg.replace(dtype="bfloat16"))
  for _, var in nnx.to_flat_state(nnx.state(bf16, nnx.Param)):
    assert var[...].dtype == jnp.float32
  ids, types, mask = batch(cfg)
  a = f32(ids, types, mask)
  b = bf16(ids, types, mask)
  assert b.sequence_output.dtype == jnp.bfloat16
  assert b.mlm_logits.dtype == jnp.float32 and b.nsp_logits.dtype == jnp.float32
  diff = np.abs(np.asarray(a.mlm_logits) - np.asarray(b.mlm_logits)).max()
  assert diff < 0.1, diff
  assert np.abs(np.asarray(a.mlm_logits)).max() > 1.0  # the tolerance is meaningful
  np.testing.assert_allclose(a.nsp_logits, b.nsp_logits, atol=0.1)


def test_dropout_is_deterministic_per_key_and_needs_a_key():
  cfg = small_config()
  model = random_model(cfg)
  ids, types, mask = batch(cfg)
  det = model(ids, types, mask)
  d1 = model(ids, types, mask, deterministic=False, dropout_rng=jax.random.key(7))
  d2 = model(ids, types, mask, deterministic=False, dropout_rng=jax.random.key(7))
  d3 = model(ids, types, mask, deterministic=False, dropout_rng=jax.random.key(8))
  np.testing.assert_array_equal(d1.mlm_logits, d2.mlm_logits)
  assert not np.allclose(d1.mlm_logits, d3.mlm_logits)
  assert not np.allclose(d1.mlm_logits, det.mlm_logits)
  with pytest.raises(ValueError, match="deterministic=False needs dropout_rng"):
    model(ids, types, mask, deterministic=False)


def test_init_is_truncated_normal_002_with_zero_biases():
  model = create_model(get_config("mini"))
  params = params_of(model)
  word = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
  assert abs(word.std() - 0.02 * 0.8796) < 0.001  # std of N(0, .02) truncated at 2 sigma
  assert np.abs(word).max() <= 0.04 + 1e-6
  layers = params["bert"]["encoder"]["layers"]
  assert not layers[0]["intermediate"]["bias"].any() and not params["mlm"]["output_bias"].any()
  np.testing.assert_array_equal(layers[3]["layer_norm"]["scale"], 1.0)
  # Layers are initialised independently, not copies of each other.
  assert not np.allclose(layers[0]["intermediate"]["kernel"], layers[1]["intermediate"]["kernel"])


def test_sequence_longer_than_position_table_is_a_clear_error():
  cfg = small_config(max_position_embeddings=8)
  model = create_model(cfg)
  with pytest.raises(ValueError, match="sequence length 16 exceeds max_position_embeddings 8"):
    model(np.ones((1, 16), np.int32))


def test_heads_shapes():
  cfg = small_config()
  ids, types, mask = batch(cfg)
  cls = create_model(cfg, "classification", num_labels=5)
  assert cls(ids, types, mask).logits.shape == (3, 5)
  tok = create_model(cfg, "token_classification", num_labels=7)
  assert tok(ids, types, mask).logits.shape == (3, 16, 7)
  assert tok.bert.pooler is None
  qa = create_model(cfg, "question_answering")
  out = qa(ids, types, mask)
  assert out.start_logits.shape == out.end_logits.shape == (3, 16)
  enc = create_model(cfg, "encoder")
  assert enc(ids, types, mask).pooled_output.shape == (3, 64)


def test_packed_rows_compute_each_sequence_as_if_alone():
  """Two sequences packed in one row (block-diagonal attention, positions restarting at 0, one
  [CLS] each) give the same MLM and NSP logits as each in its own padded row."""
  cfg = small_config()
  model = random_model(cfg)
  rng = np.random.default_rng(0)
  lens, L = (5, 9), 16
  seqs = [rng.integers(5, 120, n).astype(np.int32) for n in lens]
  types = [np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(np.int32) for n in lens]
  masked = [np.array([1, 3], np.int32), np.array([2, 4, 7], np.int32)]
  # Unpacked: one sequence per row.
  ids = np.zeros((2, L), np.int32)
  tt = np.zeros((2, L), np.int32)
  am = np.zeros((2, L), np.int32)
  for i, n in enumerate(lens):
    ids[i, :n], tt[i, :n], am[i, :n] = seqs[i], types[i], 1
  pos = np.zeros((2, 3), np.int32)
  pos[0, :2], pos[1, :3] = masked[0], masked[1]
  alone = model(ids, tt, am, pos)
  # Packed: both in one row.
  pids = np.zeros((1, L), np.int32)
  ptt, pam, seg, ppos = (np.zeros((1, L), np.int32) for _ in range(4))
  pids[0, :5], pids[0, 5:14] = seqs
  ptt[0, :5], ptt[0, 5:14] = types
  pam[0, :14] = 1
  seg[0, :5], seg[0, 5:14] = 1, 2
  ppos[0, :5], ppos[0, 5:14] = np.arange(5), np.arange(9)
  mpos = np.array([[1, 3, 5 + 2, 5 + 4, 5 + 7]], np.int32)
  packed = model(pids, ptt, pam, mpos, position_ids=ppos, segment_ids=seg,
                 cls_positions=np.array([[0, 5, 0]], np.int32))
  assert packed.nsp_logits.shape == (1, 3, 2) and packed.pooled_output.shape == (1, 3, 64)
  np.testing.assert_allclose(packed.mlm_logits[0, :2], alone.mlm_logits[0, :2], atol=1e-5)
  np.testing.assert_allclose(packed.mlm_logits[0, 2:], alone.mlm_logits[1, :3], atol=1e-5)
  np.testing.assert_allclose(packed.nsp_logits[0, :2], alone.nsp_logits, atol=1e-5)
  # Without the segment mask the first sequence would see the second: the test can fail.
  leaky = model(pids, ptt, pam, mpos, position_ids=ppos,
                cls_positions=np.array([[0, 5, 0]], np.int32))
  assert np.abs(np.asarray(leaky.mlm_logits[0, :2] - alone.mlm_logits[0, :2])).max() > 1e-3


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_drops_at_the_rate_and_keeps_the_expectation(rate):
  from bert_jax.models.dropout import dropout
  x = jnp.ones((64, 12, 128, 127), jnp.float32)
  key = jax.random.key(3)
  y = np.asarray(dropout(x, rate, key))
  d = y == 0
  assert abs(d.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / d.size)  # within 4 sigma
  np.testing.assert_allclose(y.mean(), 1.0, atol=4e-3)
  # Pairs are independent: neighbours in a row (one row hash, consecutive counters), the same
  # element of neighbouring rows and of neighbouring batch items, and the same element under
  # the next layer's key (bert.py draws layer i from fold_in(key, i)).
  both = rate * rate
  tolerance = 6 * np.sqrt(both * (1 - both) / (d.size * 0.99))  # 6 sigma of a pair frequency
  nxt = np.asarray(dropout(x, rate, jax.random.fold_in(key, 1))) == 0
  pairs = {"in a row": (d[..., :-1], d[..., 1:]), "rows": (d[..., :-1, :], d[..., 1:, :]),
           "batch": (d[:-1], d[1:]), "keys": (d, nxt)}
  for name, (a, b) in pairs.items():
    assert abs(np.mean(a & b) - both) < tolerance, name
  # Within a row the drops are binomial: the variance of a row's count is n p (1 - p). A
  # permutation of the counters that clusters (a weak mix) or spreads (a stratified one) the
  # drops inside a row moves this ratio.
  counts = d.reshape(-1, d.shape[-1]).sum(-1)
  ratio = counts.var() / (d.shape[-1] * rate * (1 - rate))
  assert abs(ratio - 1) < 6 * np.sqrt(2 / counts.size), ratio
  z = np.asarray(dropout(x, rate, jax.random.key(4)))
  assert (y != z).any() and np.array_equal(y, np.asarray(dropout(x, rate, key)))


def test_dropout_statistics_catch_a_weak_generator(monkeypatch):
  """The statistics above are not vacuous: a mask whose row offsets are random but whose
  within-row draws are a plain multiplicative sequence (no mixing) fails them."""
  import bert_jax.models.dropout as dropout_lib
  rows = dropout_lib.dropout_keep_mask

  def weak(rng, shape, rate):
    keep = rows(rng, shape, rate)  # for the shape; the draws below replace it
    j = jax.lax.broadcasted_iota(jnp.uint32, shape, len(shape) - 1)
    r = jax.lax.broadcasted_iota(jnp.uint32, shape, len(shape) - 2) * jnp.uint32(0x9E3779B9)
    draws = j * jnp.uint32(0x9E3779B9) + r
    return (draws >= jnp.uint32(round(rate * 2**32))) | (keep & False)
  monkeypatch.setattr(dropout_lib, "dropout_keep_mask", weak)
  with pytest.raises(AssertionError):
    test_dropout_drops_at_the_rate_and_keeps_the_expectation(0.1)


def test_dropout_draws_depend_on_the_element_index_not_the_shape():
  """An element's draw depends on its global (row, column) only -- what keeps a sharded mask
  equal to the unsharded one: widening the rows leaves their first columns' draws as they were."""
  from bert_jax.models.dropout import dropout_keep_mask
  key = jax.random.key(11)
  full = np.asarray(dropout_keep_mask(key, (4, 6, 40), 0.3))
  again = np.asarray(dropout_keep_mask(key, (4, 6, 40), 0.3))
  np.testing.assert_array_equal(full, again)
  wider = np.asarray(dropout_keep_mask(key, (4, 6, 80), 0.3))
  np.testing.assert_array_equal(wider[..., :40], full)  # a row's draws depend on j, not length


def test_mix32_is_lowbias32():
  """dropout.mix32 is Wellons' lowbias32 (constants 0x21f0aaad, 0x735a2d97), checked against
  the same function in Python integers."""
  from bert_jax.models.dropout import mix32

  def lowbias32(x):
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x735A2D97) & 0xFFFFFFFF
    return x ^ (x >> 15)
  xs = np.random.default_rng(1).integers(0, 2**32, 512, dtype=np.uint64).tolist() + [0, 1]
  want = np.array([lowbias32(x) for x in xs], np.uint32)
  np.testing.assert_array_equal(np.asarray(mix32(jnp.asarray(np.array(xs, np.uint32)))), want)


def test_dropout_hash_is_jax_threefry():
  """dropout.threefry2x32 is the hash jax.random is built on, bit for bit."""
  from jax.extend.random import threefry_2x32

  from bert_jax.models.dropout import threefry2x32
  key = jnp.array([0x12345678, 0x9ABCDEF0], jnp.uint32)
  count = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, 4096, dtype=np.uint32))
  hi, lo = threefry2x32(key[0], key[1], count[:2048], count[2048:])
  np.testing.assert_array_equal(np.concatenate([hi, lo]), np.asarray(threefry_2x32(key, count)))


def test_masked_lm_is_pretraining_without_pooler_and_nsp():
  """BertForMaskedLM: BertForPreTraining's parameters minus pooler and NSP (same names, shapes
  and axis names), the same MLM logits on them (the tied decoder), gathered / full / packed."""
  cfg = small_config()
  pre = random_model(cfg)
  mlm = create_model(cfg, "masked_lm")
  assert type(mlm).__name__ == "BertForMaskedLM" and mlm.bert.pooler is None
  pre_state = dict(nnx.to_flat_state(nnx.state(pre, nnx.Param)))
  mlm_state = dict(nnx.to_flat_state(nnx.state(mlm, nnx.Param)))
  assert set(mlm_state) == {p for p in pre_state if p[0] != "nsp" and p[:2] != ("bert", "pooler")}
  for path, var in mlm_state.items():
    assert var[...].shape == pre_state[path][...].shape, path
    assert var.get_metadata()["out_sharding"] == pre_state[path].get_metadata()["out_sharding"]
  params = params_of(pre)
  del params["nsp"], params["bert"]["pooler"]
  state = nnx.state(mlm, nnx.Param)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  nnx.update(mlm, state)
  ids, types, mask = batch(cfg)
  positions = np.array([[1, 2, 3, 0], [4, 5, 0, 0], [1, 0, 0, 0]], np.int32)
  out = mlm(ids, types, mask, positions)
  assert out.mlm_logits.shape == (3, 4, 120) and out.mlm_logits.dtype == jnp.float32
  np.testing.assert_allclose(out.mlm_logits, pre(ids, types, mask, positions).mlm_logits,
                             atol=1e-6)
  full = mlm(ids, types, mask)
  assert full.mlm_logits.shape == (3, 16, 120) and full.sequence_output.shape == (3, 16, 64)
  np.testing.assert_allclose(np.take_along_axis(np.asarray(full.mlm_logits),
                                                positions[..., None], axis=1),
                             out.mlm_logits, atol=1e-6)
  # Packed rows: two sequences of 8 in a row, each computed as if alone (cls_positions unused).
  seg = np.repeat(np.r_[np.ones(8), 2 * np.ones(8)][None], 3, 0).astype(np.int32)
  pid = np.repeat(np.r_[np.arange(8), np.arange(8)][None], 3, 0).astype(np.int32)
  ones = np.ones_like(mask)
  packed = mlm(ids, types, ones, positions, segment_ids=seg, position_ids=pid,
               cls_positions=np.array([[0, 8]] * 3, np.int32))
  alone = mlm(ids[:, :8], types[:, :8], ones[:, :8], np.minimum(positions, 7))
  assert packed.mlm_logits.shape == (3, 4, 120)
  np.testing.assert_allclose(packed.mlm_logits[0, :3], alone.mlm_logits[0, :3], atol=1e-5)
  # The decoder is the word-embedding table (tied): scaling it changes the logits.
  table = mlm.bert.embeddings.word_embeddings.embedding
  table[...] = table[...] * 2
  assert np.abs(np.asarray(mlm(ids, types, mask, positions).mlm_logits
                           - out.mlm_logits)).max() > 1e-2
