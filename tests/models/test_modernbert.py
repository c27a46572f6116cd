"""ModernBERT's architecture: published sizes, HF's init, windows, packing, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import create_model, get_config
from bert_jax.models import attention
from bert_jax.models.attention import dot_product_attention, make_mask, window_mask
from helpers import random_model


def _count(config, task="masked_lm"):
  abstract = nnx.eval_shape(lambda: create_model(config, task))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("name", ["modernbert_base", "modernbert_large"])
def test_parameter_counts_equal_transformers(name):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  ours = get_config(name)
  hf_config = transformers.ModernBertConfig(
      num_hidden_layers=ours.num_hidden_layers, hidden_size=ours.hidden_size,
      num_attention_heads=ours.num_attention_heads, intermediate_size=ours.intermediate_size)
  with torch.device("meta"):
    hf = transformers.ModernBertForMaskedLM(hf_config)
  # HF counts the tied decoder once (it is the embedding); ours is the same tensor by design.
  assert _count(ours) == sum(p.numel() for p in hf.parameters())
  assert (ours.vocab_size, ours.max_position_embeddings) == (50368, 8192)


def test_init_follows_hf_init_weights():
  """σ 0.02 for embeddings and input projections, 0.02/sqrt(2·layers) for output projections
  and the head's dense, hidden^-0.5 for a classifier; all cut at 2σ; zero decoder bias."""
  config = get_config("modernbert_tiny", vocab_size=4000, num_hidden_layers=8, hidden_size=256,
                      num_attention_heads=4, intermediate_size=384)
  params = nnx.to_pure_dict(nnx.state(create_model(config, "classification", num_labels=300),
                                      nnx.Param))
  out = 0.02 / math.sqrt(16)
  layer = params["model"]["encoder"]["layers"][1]
  cases = {"embedding": (params["model"]["embeddings"]["tok_embeddings"]["embedding"], 0.02),
           "wqkv": (layer["attn"]["wqkv"]["kernel"], 0.02),
           "attn wo": (layer["attn"]["wo"]["kernel"], out),
           "wi": (layer["mlp"]["wi"]["kernel"], 0.02),
           "mlp wo": (layer["mlp"]["wo"]["kernel"], out),
           "head": (params["head"]["dense"]["kernel"], out),
           "classifier": (params["classifier"]["kernel"], 256 ** -0.5)}
  truncated_std = 0.8796  # std of N(0, 1) cut at ±2
  for name, (w, std) in cases.items():
    w = np.asarray(w)
    assert np.abs(w).max() <= 2 * std + 1e-7, name
    assert abs(w.std() / (std * truncated_std) - 1) < 0.05, name
  assert "attn_norm" not in params["model"]["encoder"]["layers"][0]
  assert "bias" not in params["model"]["final_norm"]  # norm_bias=False
  mlm = nnx.to_pure_dict(nnx.state(create_model(config, "masked_lm"), nnx.Param))
  assert not np.asarray(mlm["decoder_bias"]).any()


def test_sliding_window_reaches_half_the_local_attention_each_side():
  """window=8 (local_attention 16): position 39's output depends on values at 31..39 only,
  on every attention path that runs on this CPU."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 40, 2, 8)), jnp.float32) for _ in range(3))
  mask = make_mask(None, None, (1, 40))
  for impl in ("manual", "xla"):
    base = dot_product_attention(q, k, v, mask, impl=impl, dropout_rate=0.0, rng=None, window=8)
    for pos, moves in ((30, False), (31, True)):
      out = dot_product_attention(q, k, v.at[0, pos].add(1.0), mask, impl=impl,
                                  dropout_rate=0.0, rng=None, window=8)
      assert bool(jnp.any(out[0, 39] != base[0, 39])) == moves, (impl, pos)
  keep = np.asarray(window_mask(40, 8))[0, 0]
  assert keep[39, 31] and not keep[39, 30] and keep[0, 8] and not keep[0, 9]


def test_packed_rows_equal_separate_sequences():
  """Two sequences packed in one row (segment ids, positions restarting) give each one's
  own logits, through global and local layers."""
  config = get_config("modernbert_tiny", vocab_size=100, local_attention=8)
  model = random_model(config, "masked_lm")
  a, b = jnp.arange(3, 23), jnp.arange(30, 55)
  row = jnp.concatenate([a, b, jnp.zeros(3, jnp.int32)])[None]
  seg = jnp.asarray([1] * 20 + [2] * 25 + [0] * 3)[None]
  pos = jnp.asarray(list(range(20)) + list(range(25)) + [0] * 3)[None]
  packed = np.asarray(model(row, segment_ids=seg, position_ids=pos).mlm_logits)[0]
  np.testing.assert_allclose(packed[:20], np.asarray(model(a[None]).mlm_logits)[0], atol=2e-5)
  np.testing.assert_allclose(packed[20:45], np.asarray(model(b[None]).mlm_logits)[0],
                             atol=2e-5)


def test_sequence_longer_than_the_model_is_one_line_error():
  model = create_model(get_config("modernbert_tiny", vocab_size=50, max_position_embeddings=32))
  with pytest.raises(ValueError) as e:
    model(jnp.zeros((1, 40), jnp.int32))
  assert str(e.value) == (
      "sequence length 40 exceeds max_position_embeddings 32 of this ModernBERT; use shorter "
      "sequences or a context-extended model (configs/modernbert_base_8k.py)")


def test_no_sentence_pair_task():
  with pytest.raises(ValueError, match="ModernBERT pretrains with masked_lm alone"):
    create_model(get_config("modernbert_tiny"), "pretraining")


def test_banded_local_attention_equals_the_full_path(monkeypatch):
  """At seq 384 the explicit path (CPU's auto) runs the window-64 local layers in query
  blocks of 128 against their 256 keys: the same MLM logits as over all 384 keys, on padded
  rows (of different lengths) and on packed rows."""
  config = get_config("modernbert_tiny", vocab_size=300, num_hidden_layers=3)
  model = random_model(config, "masked_lm")  # layers: global, local, local
  length = 384
  ids = jnp.asarray(np.random.default_rng(0).integers(5, 300, (2, length)), jnp.int32)
  am = np.ones((2, length), np.int32)
  am[1, 250:] = 0
  seg = np.zeros((2, length), np.int32)
  seg[0, :200], seg[0, 200:350], seg[1, :] = 1, 2, 1
  pos = np.concatenate([np.arange(200), np.arange(184)])[None].repeat(2, 0)
  pos[1] = np.arange(length)
  padded = jax.jit(lambda i, a: model(i, attention_mask=a).mlm_logits)
  packed = jax.jit(lambda i, s, p: model(i, segment_ids=s, position_ids=p).mlm_logits)
  calls = []
  banded = attention._manual_banded
  monkeypatch.setattr(attention, "_manual_banded", lambda *a: calls.append(a[-1]) or banded(*a))
  got = (padded(ids, jnp.asarray(am)), packed(ids, jnp.asarray(seg), jnp.asarray(pos)))
  assert calls == [128] * 4  # the 2 local layers of each trace
  monkeypatch.setattr(attention, "_band_block", lambda *a: None)
  want = (padded(ids, jnp.asarray(am)), packed(ids, jnp.asarray(seg), jnp.asarray(pos)))
  for g, w, used in zip(got, want, (am > 0, seg > 0)):
    used = used[:, :, None]
    np.testing.assert_allclose(np.where(used, g, 0), np.where(used, w, 0), atol=1e-5, rtol=0)
