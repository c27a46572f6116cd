"""Splash attention (TPU Pallas), on one device's shard: the kernel `attention.py` runs on TPU.

Shapes: b local batch, n local heads, L sequence length, D head size.

`jax.experimental.pallas.ops.tpu.splash_attention`: `make_splash_mha` builds a kernel for one
[n, L, D] example from a static per-head mask (`FullMask` for global layers, `LocalMask` with
window (w, w) for a sliding window) and takes the packing / padding as `SegmentIds` at run time;
we vmap it over the batch. It does not scale q (we multiply q by 1/sqrt(D) first), has no
attention-probability dropout, and needs L to be a multiple of its blocks (multiples of 128 that
divide L; we take the largest of 512, 256, 128). Called inside `shard_map` (`attention.py`), so
`head_shards = q_seq_shards = 1` and the mask covers this shard's n heads.

The backward pass is the kernel's fused one (`use_fused_bwd_kernel`, as MaxText's tuned TPU
recipes run splash): one `dkv` kernel recomputes S and computes dV, dP, dK and each kv block's
partial dQ (5 matrix products per tile, 2.5x the forward's 2), and XLA sums the partials
([L / block, n, L, D]). The unfused backward runs a separate `dq` kernel that recomputes S and
dP again (7 products, 3.5x).

`interpret=True` runs the same kernel in Pallas's interpreter (on CPU, for tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# The kernel's tiles: multiples of the TPU's 128 lanes that divide L (MaxText's default is 512).
BLOCKS = (512, 256, 128)


def block_size(seq_len: int) -> int | None:
  """The largest of BLOCKS that divides seq_len, or None when 128 does not."""
  return next((b for b in BLOCKS if seq_len % b == 0), None)


@functools.lru_cache(maxsize=32)
def _kernel(heads: int, seq_len: int, window: int | None, block: int, interpret: bool):
  # Imported here: the Pallas TPU package is only needed where the kernel runs.
  from jax.experimental.pallas.ops.tpu import splash_attention as sa
  if window is None:
    head_mask = sa.FullMask((seq_len, seq_len))
  else:
    head_mask = sa.LocalMask(shape=(seq_len, seq_len), window_size=(window, window), offset=0)
  sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                        use_fused_bwd_kernel=True)
  # The kernel holds its mask's block tables as arrays: make them concrete (eagerly), or the
  # cached kernel would hold the tracers of the trace that first built it.
  with jax.ensure_compile_time_eval():
    return sa.make_splash_mha(sa.MultiHeadMask([head_mask] * heads), block_sizes=sizes,
                              head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                     window: int | None = None, interpret: bool = False) -> jax.Array:
  """q, k, v: [b, n, L, D]; segment_ids: int32 [b, L] (0 = padding, 1, 2, ... per sequence)
  -> [b, n, L, D] in q's dtype. A query attends keys of its own segment id (and, with `window`,
  at most `window` positions away).

  Every row of the mask keeps its diagonal (a token's own id, distance 0), so no row is fully
  masked. Padding differs from the dense mask of `attention.py`: under SegmentIds a padding
  query (id 0) attends the padding keys, where the dense padding mask lets it attend all valid
  keys. Valid queries get the same result either way, and outputs at padding positions are
  never used (valid queries never attend them; losses and pooling skip them).
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds
  _, n, length, d = q.shape
  block = block_size(length)
  if block is None:  # attention.select_kernel refuses this first, with the fix
    raise ValueError(f"splash attention needs L a multiple of 128, got {length}")
  kernel = _kernel(n, length, window, block, interpret)
  q = (q.astype(jnp.float32) * (1.0 / d ** 0.5)).astype(q.dtype)  # splash does not scale q
  seg = segment_ids.astype(jnp.int32)
  return jax.vmap(kernel)(q, k, v, segment_ids=SegmentIds(q=seg, kv=seg))
