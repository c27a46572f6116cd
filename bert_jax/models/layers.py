"""Small NNX building blocks with logical axis names on every parameter.

Every parameter is float32 and carries its logical axis names as the `out_sharding` metadata
(Flax's convention; `bert_jax.parallel.sharding` maps them to mesh axes).
Compute happens in `dtype` (float32 or bfloat16); LayerNorm statistics are always float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.parallel import sharding


def param(init, key, shape: Sequence[int], names: Sequence[str | None]) -> nnx.Param:
  """A float32 `nnx.Param` with logical axis names."""
  shape, names = tuple(shape), tuple(names)
  assert len(shape) == len(names), (shape, names)
  return nnx.Param(init(key, shape, jnp.float32), out_sharding=names, eager_sharding=False)


def truncated_normal(stddev: float, cutoff: float = 2.0):
  """N(0, stddev) cut at ±cutoff·stddev, not rescaled: BERT's tf.truncated_normal_initializer
  (cutoff 2) and torch's trunc_normal_(std, a=-c·std, b=c·std) as ModernBERT uses it."""
  return jax.nn.initializers.truncated_normal(stddev=stddev, lower=-cutoff, upper=cutoff)


def activation(name: str):
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_tanh", "gelu_pytorch_tanh"):
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "relu":
    return jax.nn.relu
  if name == "tanh":
    return jnp.tanh
  raise ValueError(f"unknown activation {name!r}")


class Dense(nnx.Module):
  """y = x . kernel + bias, contracting the trailing `len(in_shape)` axes of x.

  kernel: in_shape + out_shape, logical names `names` (in then out); bias: out_shape.
  """

  def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int],
               names: Sequence[str | None], *, rngs: nnx.Rngs, init_std: float = 0.02,
               init_cutoff: float = 2.0, use_bias: bool = True, dtype=jnp.float32):
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    self.num_in = len(in_shape)
    self.dtype = dtype
    self.kernel = param(truncated_normal(init_std, init_cutoff), rngs.params(),
                        in_shape + out_shape, names)
    self.bias = (param(jax.nn.initializers.zeros, None, out_shape, names[self.num_in:])
                 if use_bias else None)

  def __call__(self, x: jax.Array, out_dtype=None) -> jax.Array:
    kernel = self.kernel[...].astype(self.dtype)
    x = x.astype(self.dtype)
    if sharding.tensor_parallel():
      # Keep the head / mlp axes explicit so the partitioner splits them without resharding.
      y = jnp.tensordot(x, kernel, axes=self.num_in, preferred_element_type=out_dtype)
    else:
      # One 2-D matmul over free reshapes, so that XLA handles its transposed uses in the
      # backward pass without copying the weight.
      k_in = math.prod(kernel.shape[:self.num_in])
      out_shape = kernel.shape[self.num_in:]
      lead = x.shape[:x.ndim - self.num_in]
      y = jnp.matmul(x.reshape(-1, k_in), kernel.reshape(k_in, -1),
                     preferred_element_type=out_dtype).reshape(lead + out_shape)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y

  def qkv_heads_major(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A fused QKV projection (kernel [H, 3, N, D]) straight into q, k, v [B, N, L, D], the
    layout of a heads-major attention kernel (splash), instead of [B, L, 3, N, D]."""
    kernel = self.kernel[...].astype(self.dtype)
    qkv = jnp.einsum("blh,htnd->tbnld", x.astype(self.dtype), kernel)
    if self.bias is not None:
      qkv = qkv + self.bias[...].astype(qkv.dtype)[:, None, :, None, :]
    qkv = sharding.constrain(qkv, (None, "activation_batch", "activation_heads", None,
                                   "activation_kv"))
    return qkv[0], qkv[1], qkv[2]

  def from_heads_major(self, ctx: jax.Array) -> jax.Array:
    """The attention output projection (kernel [N, D, H]): a context [B, N, L, D] -> [B, L, H]."""
    kernel = self.kernel[...].astype(self.dtype)
    y = jnp.einsum("bnld,ndh->blh", ctx.astype(self.dtype), kernel)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y


class Embed(nnx.Module):
  """A lookup table [num_embeddings, features]; `attend` is the tied output projection."""

  def __init__(self, num_embeddings: int, features: int, names: Sequence[str], *,
               rngs: nnx.Rngs, init_std: float = 0.02, init_cutoff: float = 2.0):
    self.embedding = param(truncated_normal(init_std, init_cutoff), rngs.params(),
                           (num_embeddings, features), names)

  def __call__(self, ids: jax.Array) -> jax.Array:
    # Gather from a whole (all-gathered) table: a lookup into a vocab/embed-sharded table makes
    # XLA replicate it anyway, less efficiently. The gradient reduce-scatters back to the shards.
    table = sharding.constrain(self.embedding[...], (None, None))
    return jnp.take(table, ids, axis=0)  # float32

  def attend(self, x: jax.Array, dtype) -> jax.Array:
    """[..., features] -> [..., num_embeddings] logits, accumulated and returned in float32."""
    # Pins x (and so its gradient) to (batch, ..., embed): left to propagation, the gradient
    # of x through this matmul came out with H on `tensor`, a layout the XLA partitioner of jax
    # 0.10.2 gets wrong on a mesh with data, fsdp and tensor all > 1 (rows of four devices
    # swapped; tests/training/test_sharded_gradients.py).
    x = sharding.constrain(
        x, ("activation_batch",) + (None,) * (x.ndim - 2) + ("activation_embed",))
    table = self.embedding[...].astype(dtype)
    return jnp.einsum("...h,vh->...v", x.astype(dtype), table,
                      preferred_element_type=jnp.float32)


class LayerNorm(nnx.Module):
  """LayerNorm with float32 statistics; output in `dtype`. BERT uses epsilon 1e-12 and a bias;
  ModernBERT epsilon 1e-5 and no bias (`use_bias=False`)."""

  def __init__(self, features: int, *, epsilon: float, dtype=jnp.float32, use_bias: bool = True):
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale = param(jax.nn.initializers.ones, None, (features,), ("norm",))
    self.bias = (param(jax.nn.initializers.zeros, None, (features,), ("norm",))
                 if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = y * self.scale[...]
    return (y if self.bias is None else y + self.bias[...]).astype(self.dtype)
