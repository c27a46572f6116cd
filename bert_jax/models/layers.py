"""Small NNX building blocks with logical axis names on every parameter.

Every parameter is float32 and carries its logical axis names as the `out_sharding` metadata
(Flax's convention; `bert_jax.sharding` maps them to mesh axes).
Compute happens in `dtype` (float32 or bfloat16); LayerNorm statistics are always float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax import sharding


def param(init, key, shape: Sequence[int], names: Sequence[str | None]) -> nnx.Param:
  """A float32 `nnx.Param` with logical axis names."""
  shape, names = tuple(shape), tuple(names)
  assert len(shape) == len(names), (shape, names)
  return nnx.Param(init(key, shape, jnp.float32), out_sharding=names, eager_sharding=False)


def truncated_normal(stddev: float):
  """BERT's tf.truncated_normal_initializer: N(0, stddev) cut at 2 stddev (no rescaling)."""
  return jax.nn.initializers.truncated_normal(stddev=stddev)


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


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array, rounds: int = 20
                 ) -> tuple[jax.Array, jax.Array]:
  """The Threefry-2x32 hash (20 rounds) that jax.random uses, as plain elementwise uint32 ops.

  Equal to `jax.extend.random.threefry_2x32` (tested). Written out so XLA fuses it into its
  consumer (the dropout mask's row keys): on CPU, jax.random lowers the hash as a rolled loop
  that copies its state every iteration. `rounds` other than 20 is for experiments
  (benchmarks/aot_variants.py); the key is injected after every fourth round, as in Random123."""
  def rotl(v, r):
    return (v << jnp.uint32(r)) | (v >> jnp.uint32(32 - r))
  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for n in range(rounds):
    x1 = x1 + x2
    x2 = rotl(x2, _THREEFRY_ROTATIONS[(n // 4) % 2][n % 4]) ^ x1
    if n % 4 == 3:
      i = n // 4
      x1 = x1 + ks[(i + 1) % 3]
      x2 = x2 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return x1, x2


def _key_words(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Two uint32 words keying the hash: a threefry key's own data, else two draws from it."""
  data = jax.random.key_data(rng)
  if data.shape != (2,):
    data = jax.random.bits(rng, (2,), jnp.uint32)
  return data[0], data[1]


def mix32(x: jax.Array) -> jax.Array:
  """A 32-bit integer finaliser (Wellons' `lowbias32`: xor-shift, multiply, xor-shift, multiply,
  xor-shift), a bijection of uint32 with low avalanche bias; elementwise."""
  x = x ^ (x >> jnp.uint32(16))
  x = x * jnp.uint32(0x21F0AAAD)
  x = x ^ (x >> jnp.uint32(15))
  x = x * jnp.uint32(0x735A2D97)
  return x ^ (x >> jnp.uint32(15))


def hash_counters(shape: Sequence[int], split_first: bool) -> tuple[jax.Array, jax.Array]:
  """(hi, lo) uint32 counters over `shape` for the Threefry hash: hi = the index along axis 0
  if split_first (else 0), lo = the flat index over the other axes (over all, if not)."""
  iota = lambda axis: jax.lax.broadcasted_iota(jnp.uint32, shape, axis)  # noqa: E731
  hi = iota(0) if split_first else jnp.zeros(shape, jnp.uint32)
  lo, stride = jnp.zeros(shape, jnp.uint32), 1
  for axis in range(len(shape) - 1, 0 if split_first else -1, -1):
    if shape[axis] > 1:
      lo = lo + iota(axis) * jnp.uint32(stride)
      stride *= shape[axis]
  return hi, lo


def dropout_keep_mask(rng: jax.Array, shape: Sequence[int], rate: float) -> jax.Array:
  """bool `shape`, True where an element is kept; P(drop) = round(rate * 2**32) / 2**32."""
  return dropout_draws(rng, shape) >= jnp.uint32(min(round(rate * 2**32), 2**32 - 1))


def dropout_draws(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
  """uint32 `shape`: the uniform 32-bit draws behind `dropout_keep_mask`.

  Counter-based in two levels. Each row (all indices but the last) gets two 32-bit words
  (r1, r2), the Threefry-2x32 hash of its counter (leading index, flat index of the other
  leading axes) under `rng`'s key; element j of the row draws
  `mix32(mix32(j * 0x9E3779B9 + r1) ^ r2)`, a keyed permutation of j that is different and
  independent for every row. Per element that is ~20 integer ops, at the tensor's own shape
  (no reshape, so it fuses into its consumer on every backend), where hashing every element
  with Threefry would be ~120 and four 16-bit draws per hash ~33 plus a relayout. Counters are
  iotas over the global shape, so under a sharded jit every device computes exactly its slice
  of the same mask (sharded == unsharded)."""
  *lead, last = shape
  row_shape = (*lead, 1)
  if math.prod(lead[1:]) >= 2**32 or last >= 2**32:
    raise ValueError(f"dropout over shape {tuple(shape)}: more than 2**32 rows per leading index"
                     " or elements per row")
  r1, r2 = threefry2x32(*_key_words(rng), *hash_counters(row_shape, bool(lead)))  # [..., 1]
  j = jax.lax.broadcasted_iota(jnp.uint32, (*[1] * len(lead), last), len(lead))
  return mix32(mix32(j * jnp.uint32(0x9E3779B9) + r1) ^ r2)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when `rng` is None (deterministic) or the rate is 0.

  The mask (`dropout_keep_mask`) is computed in fused elementwise code from counters in x's
  shape: BERT's attention dropout needs B·N·L² draws per layer, so the mask costs ~20 integer
  ops per element and no random-bits array is written to memory. Counters follow x's (global)
  shape, so the draws stay partitioned like x under sharding."""
  if rng is None or rate == 0.0:
    return x
  keep = dropout_keep_mask(rng, x.shape, rate)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class Dense(nnx.Module):
  """y = x . kernel + bias, contracting the trailing `len(in_shape)` axes of x.

  kernel: in_shape + out_shape, logical names `names` (in then out); bias: out_shape.
  """

  def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int],
               names: Sequence[str | None], *, rngs: nnx.Rngs, init_std: float = 0.02,
               use_bias: bool = True, dtype=jnp.float32):
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    self.num_in = len(in_shape)
    self.dtype = dtype
    self.kernel = param(truncated_normal(init_std), rngs.params(), in_shape + out_shape,
                        names)
    self.bias = (param(jax.nn.initializers.zeros, None, out_shape, names[self.num_in:])
                 if use_bias else None)

  def __call__(self, x: jax.Array, out_dtype=None) -> jax.Array:
    kernel = self.kernel[...].astype(self.dtype)
    x = x.astype(self.dtype)
    if sharding.tensor_parallel():
      # Keep the head / mlp axes explicit so the partitioner splits them without resharding.
      y = jnp.tensordot(x, kernel, axes=self.num_in, preferred_element_type=out_dtype)
    else:
      # One 2-D matmul over free reshapes: XLA handles its transposed uses in the backward pass
      # without copying the weight (~12% faster than a multi-axis contraction on CPU).
      k_in = math.prod(kernel.shape[:self.num_in])
      out_shape = kernel.shape[self.num_in:]
      lead = x.shape[:x.ndim - self.num_in]
      y = jnp.matmul(x.reshape(-1, k_in), kernel.reshape(k_in, -1),
                     preferred_element_type=out_dtype).reshape(lead + out_shape)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y


class Embed(nnx.Module):
  """A lookup table [num_embeddings, features]; `attend` is the tied output projection."""

  def __init__(self, num_embeddings: int, features: int, names: Sequence[str], *,
               rngs: nnx.Rngs, init_std: float = 0.02):
    self.embedding = param(truncated_normal(init_std), rngs.params(),
                           (num_embeddings, features), names)

  def __call__(self, ids: jax.Array) -> jax.Array:
    # Gather from a whole (all-gathered) table: a lookup into a vocab/embed-sharded table makes
    # XLA replicate it anyway, less efficiently. The gradient reduce-scatters back to the shards.
    table = sharding.constrain(self.embedding[...], (None, None))
    return jnp.take(table, ids, axis=0)  # float32

  def attend(self, x: jax.Array, dtype) -> jax.Array:
    """[..., features] -> [..., num_embeddings] logits, accumulated and returned in float32."""
    table = self.embedding[...].astype(dtype)
    return jnp.einsum("...h,vh->...v", x.astype(dtype), table,
                      preferred_element_type=jnp.float32)


class LayerNorm(nnx.Module):
  """LayerNorm with float32 statistics; output in `dtype`. BERT uses epsilon 1e-12."""

  def __init__(self, features: int, *, epsilon: float, dtype=jnp.float32):
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale = param(jax.nn.initializers.ones, None, (features,), ("norm",))
    self.bias = param(jax.nn.initializers.zeros, None, (features,), ("norm",))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * self.scale[...] + self.bias[...]).astype(self.dtype)
