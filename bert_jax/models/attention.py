"""Attention masks and scaled dot-product attention, one function for both model families.

Shapes: B batch, L sequence length, N heads, D head size.

What may attend to what is described once per batch by a `Mask` (the dense boolean mask the
explicit path and XLA use, and the segment ids fused kernels take) plus, per layer, an optional
sliding window (`window`: a token attends to tokens at most `window` positions away, as
ModernBERT's local layers do with window = local_attention // 2 = 64).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from bert_jax.models.dropout import dropout

# attention_impl values that call jax.nn.dot_product_attention, which has no dropout.
LIBRARY_IMPLS = ("xla", "cudnn")
IMPLS = ("auto", "xla", "cudnn", "manual")


@flax.struct.dataclass
class Mask:
  """keep: bool [B, 1, L|1, L] (True = may attend); segment_ids: int32 [B, L] (0 = padding,
  1, 2, ... one id per packed sequence; a padded unpacked row is 1 then 0s)."""
  keep: jax.Array
  segment_ids: jax.Array | None = None


def attention_mask_to_bool(attention_mask: jax.Array) -> jax.Array:
  """[B, L] keep-mask (1 = token, 0 = padding) -> [B, 1, 1, L]; [B, L, L] -> [B, 1, L, L]."""
  mask = attention_mask.astype(bool)
  if mask.ndim == 2:
    return mask[:, None, None, :]
  if mask.ndim == 3:
    return mask[:, None, :, :]
  raise ValueError(f"attention_mask must be [B, L] or [B, L, L], got shape {mask.shape}")


def packed_attention_mask(segment_ids: jax.Array) -> jax.Array:
  """[B, L] segment ids of packed rows (1, 2, ... per sequence, 0 = padding) -> bool
  [B, 1, L, L]: a token attends only to tokens of its own sequence."""
  seg = segment_ids.astype(jnp.int32)
  return ((seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0))[:, None]


def make_mask(attention_mask: jax.Array | None, segment_ids: jax.Array | None,
              shape: tuple[int, int]) -> Mask:
  """The Mask of a batch of `shape` [B, L]: packed rows (segment_ids) or padded rows
  (attention_mask [B, L], or [B, L, L] for an explicit per-query mask; None = no padding)."""
  if segment_ids is not None:
    seg = segment_ids.astype(jnp.int32)
    return Mask(keep=packed_attention_mask(seg), segment_ids=seg)
  if attention_mask is None:
    attention_mask = jnp.ones(shape, jnp.int32)
  keep = attention_mask_to_bool(attention_mask)
  seg = attention_mask.astype(jnp.int32) if attention_mask.ndim == 2 else None
  return Mask(keep=keep, segment_ids=seg)


def window_mask(length: int, window: int) -> jax.Array:
  """bool [1, 1, L, L]: |i - j| <= window (a bidirectional sliding window)."""
  pos = jnp.arange(length)
  return (jnp.abs(pos[:, None] - pos[None, :]) <= window)[None, None]


def dot_product_attention(q, k, v, mask: Mask | jax.Array, *, impl: str, dropout_rate: float,
                          rng: jax.Array | None, window: int | None = None) -> jax.Array:
  """Scaled dot-product attention. q, k, v: [B, L, N, D]; mask: a Mask (or its bool keep
  [B, 1, L|1, L]); window: None (global) or the sliding window's reach in tokens.

  Logits and softmax in float32; masked logits get float32's lowest finite value (never -inf,
  so a fully masked row is uniform, not NaN, in any compute dtype). `auto` uses
  jax.nn.dot_product_attention on GPU/TPU (cuDNN flash attention where it applies) unless
  attention dropout is active, which needs the explicit ("manual") path; on CPU it uses the
  manual path (the same XLA ops, and it also handles float16 there). `xla` and `cudnn` always
  use jax.nn.dot_product_attention, so they refuse active attention dropout (a key and a
  positive rate) rather than skip it.
  """
  keep = mask.keep if isinstance(mask, Mask) else mask
  use_dropout = rng is not None and dropout_rate > 0.0
  if use_dropout and impl in LIBRARY_IMPLS:
    raise ValueError(f"attention_impl={impl!r} has no attention-probability dropout but "
                     f"attention_probs_dropout_prob={dropout_rate}; set "
                     "attention_probs_dropout_prob=0 or attention_impl='auto'")
  library = impl in LIBRARY_IMPLS or (
      impl == "auto" and not use_dropout and jax.default_backend() != "cpu")
  if library:
    return jax.nn.dot_product_attention(
        q, k, v, mask=keep, local_window_size=None if window is None else (window, window),
        implementation=None if impl == "auto" else impl)
  if window is not None:
    keep = keep & window_mask(q.shape[1], window)
  scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32))
  logits = jnp.einsum("btnd,bsnd->bnts", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = dropout(probs, dropout_rate, rng) if use_dropout else probs
  return jnp.einsum("bnts,bsnd->btnd", probs.astype(v.dtype), v)
