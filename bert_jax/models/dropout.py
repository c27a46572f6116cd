"""Counter-based inverted dropout whose mask is computed in fused elementwise code.

`dropout(x, rate, rng)` is what the model calls; `dropout_keep_mask` / `dropout_draws` are the
mask and the uniform uint32 draws behind it; `threefry2x32`, `mix32` and `hash_counters` are
their parts. The draws are a function of the key and each element's global index only, so a
sharded computation draws exactly its slice of the unsharded mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array, rounds: int = 20
                 ) -> tuple[jax.Array, jax.Array]:
  """The Threefry-2x32 hash (20 rounds) that jax.random uses, as plain elementwise uint32 ops.

  Equal to `jax.extend.random.threefry_2x32` (tested). Written out so XLA fuses it into its
  consumer (the dropout mask's row keys): on CPU, jax.random lowers the hash as a rolled loop
  that copies its state every iteration. `rounds` other than 20 gives Random123's
  reduced-round variants (e.g. Threefry-2x32-13); the key is injected after every fourth round,
  as in Random123."""
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
  independent for every row. Per element that is ~20 integer ops (hashing every element with
  Threefry would be ~120), computed at the tensor's own shape: no reshape, so it fuses into its
  consumer on every backend. Counters are iotas over the global shape, so under a sharded jit
  every device computes exactly its slice of the same mask (sharded == unsharded)."""
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
