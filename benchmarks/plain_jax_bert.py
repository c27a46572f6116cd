"""A plain, hand-written JAX BERT pretraining step: the "no framework tax" reference.

Plain dicts of arrays, gathered MLM positions, fused QKV projection, lax.scan over layers,
optax.adamw, dropout in BERT's places (same rates as ours). No modules, no shardings, no
metrics beyond the loss. benchmarks/train_step.py times it beside ours.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512),
         "base": (12, 768), "large": (24, 1024)}
DROPOUT = 0.1


def init(key, layers: int, h: int, vocab: int, positions: int = 512):
  n = lambda k, *s: 0.02 * jax.random.truncated_normal(k, -2, 2, s)
  ks = jax.random.split(key, 10)
  return {
      "word": n(ks[0], vocab, h), "pos": n(ks[1], positions, h), "type": n(ks[2], 2, h),
      "emb_ln": (jnp.ones(h), jnp.zeros(h)),
      "layers": {
          "qkv_w": n(ks[3], layers, h, 3 * h), "qkv_b": jnp.zeros((layers, 3 * h)),
          "out_w": n(ks[4], layers, h, h), "out_b": jnp.zeros((layers, h)),
          "ln1": (jnp.ones((layers, h)), jnp.zeros((layers, h))),
          "ff1_w": n(ks[5], layers, h, 4 * h), "ff1_b": jnp.zeros((layers, 4 * h)),
          "ff2_w": n(ks[6], layers, 4 * h, h), "ff2_b": jnp.zeros((layers, h)),
          "ln2": (jnp.ones((layers, h)), jnp.zeros((layers, h)))},
      "pool_w": n(ks[7], h, h), "pool_b": jnp.zeros(h),
      "mlm_w": n(ks[8], h, h), "mlm_b": jnp.zeros(h), "mlm_ln": (jnp.ones(h), jnp.zeros(h)),
      "mlm_bias": jnp.zeros(vocab), "nsp_w": n(ks[9], h, 2), "nsp_b": jnp.zeros(2),
  }


def _ln(x, p):
  m = x.mean(-1, keepdims=True)
  v = ((x - m) ** 2).mean(-1, keepdims=True)
  return (x - m) * jax.lax.rsqrt(v + 1e-12) * p[0] + p[1]


def _drop(x, key):
  return jnp.where(jax.random.bernoulli(key, 1 - DROPOUT, x.shape), x / (1 - DROPOUT), 0)


def loss_fn(params, batch, key, heads: int, dtype):
  ids, b = batch["input_ids"], batch["input_ids"].shape[0]
  x = params["word"][ids] + params["pos"][: ids.shape[1]] + params["type"][batch["token_type_ids"]]
  x = _drop(_ln(x, params["emb_ln"]), jax.random.fold_in(key, 0)).astype(dtype)
  mask = batch["attention_mask"][:, None, None, :].astype(bool)

  def layer(x, xs):
    p, i = xs
    k = jax.random.split(jax.random.fold_in(key, i + 1), 3)
    qkv = x @ p["qkv_w"].astype(dtype) + p["qkv_b"].astype(dtype)
    q, kk, v = jnp.split(qkv.reshape(*x.shape[:2], 3, heads, -1), 3, axis=2)
    s = jnp.einsum("bqnd,bknd->bnqk", q[:, :, 0], kk[:, :, 0],
                   preferred_element_type=jnp.float32) / jnp.sqrt(q.shape[-1])
    a = _drop(jax.nn.softmax(jnp.where(mask, s, -1e9), -1), k[0]).astype(dtype)
    ctx = jnp.einsum("bnqk,bknd->bqnd", a, v[:, :, 0]).reshape(x.shape)
    x = _ln((_drop(ctx @ p["out_w"].astype(dtype) + p["out_b"], k[1]) + x).astype(jnp.float32),
            p["ln1"]).astype(dtype)
    f = jax.nn.gelu(x @ p["ff1_w"].astype(dtype) + p["ff1_b"].astype(dtype))
    f = _drop(f @ p["ff2_w"].astype(dtype) + p["ff2_b"], k[2])
    return _ln((f + x).astype(jnp.float32), p["ln2"]).astype(dtype), None

  n_layers = params["layers"]["qkv_w"].shape[0]
  x, _ = jax.lax.scan(layer, x, (params["layers"], jnp.arange(n_layers)))
  pooled = jnp.tanh(x[:, 0] @ params["pool_w"].astype(dtype) + params["pool_b"])
  h = jnp.take_along_axis(x, batch["masked_positions"][..., None], axis=1)
  h = _ln(jax.nn.gelu(h @ params["mlm_w"].astype(dtype) + params["mlm_b"]).astype(jnp.float32),
          params["mlm_ln"])
  logits = h @ params["word"].T + params["mlm_bias"]
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["masked_ids"])
  w = batch["masked_weights"]
  nsp = optax.softmax_cross_entropy_with_integer_labels(
      pooled.astype(jnp.float32) @ params["nsp_w"] + params["nsp_b"],
      batch["next_sentence_label"])
  return jnp.sum(nll * w) / (jnp.sum(w) + 1e-5) + nsp.sum() / b


def make(model: str, dtype: str, vocab: int):
  """(step(state, batch) -> (state, loss), initial state)."""
  layers, h = SIZES[model]
  tx = optax.adamw(1e-4, eps=1e-6, weight_decay=0.01)
  params = init(jax.random.key(0), layers, h, vocab)
  dt = jnp.dtype(dtype)

  def step(state, batch):
    params, opt_state, key = state
    key, sub = jax.random.split(key)
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, sub, h // 64, dt)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, key), loss

  return step, (params, tx.init(params), jax.random.key(1))
