"""Attention masks and scaled dot-product attention, one function for both model families.

Shapes: B batch, L sequence length, N heads, D head size.

What may attend to what is described once per batch by a `Mask` (the dense boolean mask the
explicit path and XLA use, and the segment ids fused kernels take) plus, per layer, an optional
sliding window (`window`: a token attends to tokens at most `window` positions away, as
ModernBERT's local layers do with window = local_attention // 2 = 64).

Which kernel runs is decided by one pure function, `select_kernel` (backend, dtype, mask kind,
window, attention dropout), and described for the start-up log by `attention_path`. `auto`:
- attention dropout active (training with a positive rate): manual, on every backend (only the
  explicit path has dropout; evaluation has none, so it takes the fused kernel below);
- TPU: splash (Pallas) for padding and packing, global or windowed; XLA when L is not a
  multiple of 128 or the mask is an explicit [B, L, L] one (splash takes segment ids);
- NVIDIA GPU: cuDNN flash attention for bfloat16/float16 with D % 8 == 0 and D <= 128 (and an
  even L where a mask bias is needed); XLA otherwise (float32 included);
- CPU: manual (the same XLA ops; float16 works there); other backends (ROCm): XLA.
The manual path computes a sliding window in query blocks (of 128, `_band_block`) against
their band of block + 2·window keys, [B, nb, N, 128, 256] logits for ModernBERT's ±64 instead
of [B, N, L, L], wherever the block divides L and the band is narrower than L (L = 384, 512,
... at ±64), for padding, packed and explicit masks alike; global layers and other lengths
compute all L keys.
`splash` / `cudnn` run that kernel or raise a one-line ValueError naming the fix; `xla`
(jax.nn.dot_product_attention) and `manual` always run as asked.

cuDNN (through jax.nn.dot_product_attention(implementation="cudnn")) takes padding as key
lengths but has no bidirectional window (only a causal left window) and no segment ids, so:
padded rows of a global layer pass `key_value_seq_lengths` (queries keep their full length, so
a padding query attends the valid keys exactly as the dense mask; a row whose padding is not all
at its end, which the lengths cannot describe, takes cuDNN with the dense mask instead, chosen
per shard by lax.cond); packed rows, sliding windows and explicit masks pass the dense boolean
mask, which jax turns into a [B, 1, L, L] bias (finite large negative: a fully masked row stays
finite). Splash and cuDNN run under shard_map over the mesh being traced for
(`sharding._ACTIVE_MESH`): batch over (data, fsdp), heads over tensor, each device on its shard.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.models import splash as splash_lib
from bert_jax.models.dropout import dropout
from bert_jax.parallel import sharding

# attention_impl values that call a fused kernel, which has no attention-probability dropout.
FUSED_IMPLS = ("xla", "cudnn", "splash")
IMPLS = ("auto", "xla", "cudnn", "splash", "manual")
KERNELS = ("splash", "cudnn", "xla", "manual")  # what select_kernel returns
MASK_KINDS = ("padding", "packed", "explicit")
_FIX = "use attention_impl='auto' or 'xla'"


@flax.struct.dataclass
class Mask:
  """keep: bool [B, 1, L|1, L] (True = may attend); segment_ids: int32 [B, L] (0 = padding,
  1, 2, ... one id per packed sequence; a padded unpacked row is 1 then 0s); packed (static):
  segment_ids came from packing (several sequences per row), not from an attention_mask."""
  keep: jax.Array
  segment_ids: jax.Array | None = None
  packed: bool = flax.struct.field(pytree_node=False, default=False)

  @property
  def kind(self) -> str:
    """'packed', 'padding' (segment ids from a [B, L] attention_mask) or 'explicit' (a
    [B, L, L] per-query mask, no segment ids)."""
    return "packed" if self.packed else "explicit" if self.segment_ids is None else "padding"


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
    return Mask(keep=packed_attention_mask(seg), segment_ids=seg, packed=True)
  if attention_mask is None:
    attention_mask = jnp.ones(shape, jnp.int32)
  keep = attention_mask_to_bool(attention_mask)
  seg = attention_mask.astype(jnp.int32) if attention_mask.ndim == 2 else None
  return Mask(keep=keep, segment_ids=seg)


def window_mask(length: int, window: int) -> jax.Array:
  """bool [1, 1, L, L]: |i - j| <= window (a bidirectional sliding window)."""
  pos = jnp.arange(length)
  return (jnp.abs(pos[:, None] - pos[None, :]) <= window)[None, None]


# ---- which kernel ---------------------------------------------------------------------------
def backend_of(device) -> str:
  """'tpu' | 'gpu' (NVIDIA) | 'rocm' | 'cpu' | ... for a jax Device."""
  platform = device.platform
  if platform in ("gpu", "cuda"):
    version = str(getattr(getattr(device, "client", None), "platform_version", "")).lower()
    return "rocm" if "rocm" in version else "gpu"
  return platform


def current_backend() -> str:
  """The backend being traced for: the active mesh's devices (so an ahead-of-time compile for
  a TPU topology from a CPU host picks the TPU kernels), else `jax.default_device` where set
  (a device or a platform name), else the default backend's first device."""
  mesh = sharding._ACTIVE_MESH.get()
  if mesh is not None:
    return backend_of(mesh.devices.flat[0])
  device = jax.config.jax_default_device
  if isinstance(device, str):
    device = jax.devices(device)[0]
  return backend_of(device if device is not None else jax.devices()[0])


def _splash_refusal(backend: str, seq_len: int, mask_kind: str) -> tuple[str, str] | None:
  """(short reason, one-line error) why splash cannot run this, or None."""
  if backend != "tpu":
    return ("splash needs a TPU",
            f"attention_impl='splash' needs a TPU; this backend is {backend}: {_FIX}")
  if mask_kind == "explicit":
    return ("splash takes segment ids, not an explicit [B, L, L] mask",
            "attention_impl='splash' takes padding or packing (segment ids), not an explicit "
            f"[B, L, L] attention_mask; {_FIX}")
  if splash_lib.block_size(seq_len) is None:
    return (f"splash needs seq_len a multiple of 128, got {seq_len}",
            f"attention_impl='splash' needs the sequence length to be a multiple of 128 (its "
            f"blocks block_q = block_kv are 512, 256 or 128 and must divide it), got {seq_len}; "
            f"choose seq_len a multiple of 128 (of 512 for the largest blocks), or {_FIX}")
  return None


def _cudnn_refusal(backend: str, dtype, seq_len: int, head_dim: int, mask_kind: str,
                   window: int | None, max_head_dim: int) -> tuple[str, str] | None:
  if backend != "gpu":
    return ("cudnn needs an NVIDIA GPU",
            f"attention_impl='cudnn' needs an NVIDIA GPU; this backend is {backend}: {_FIX}")
  if dtype not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return (f"cudnn needs bfloat16 or float16, got {dtype}",
            f"attention_impl='cudnn' needs bfloat16 or float16 activations, got {dtype}; set "
            f"dtype=bfloat16 or {_FIX}")
  if head_dim % 8 or head_dim > max_head_dim:
    return (f"cudnn needs a head size that is a multiple of 8 and at most {max_head_dim}, got "
            f"{head_dim}",
            "attention_impl='cudnn' needs a head size (hidden_size / num_attention_heads) that "
            f"is a multiple of 8 and at most 256 (128 before Hopper), got {head_dim}; {_FIX}")
  if seq_len % 2 and (mask_kind != "padding" or window is not None):
    what = ("a sliding window" if window is not None else "packed rows"
            if mask_kind == "packed" else "an explicit [B, L, L] mask")
    return (f"cudnn's mask bias needs an even seq_len, got {seq_len}",
            f"attention_impl='cudnn' with {what} needs an even sequence length (cuDNN's mask "
            f"bias), got {seq_len}; choose an even seq_len or {_FIX}")
  return None


def _check(impl: str, dropout_rate: float, window: int | None, mask_kind: str) -> None:
  if impl not in IMPLS:
    raise ValueError(f"attention_impl={impl!r} is not one of {', '.join(IMPLS)}")
  if mask_kind not in MASK_KINDS:
    raise ValueError(f"mask_kind={mask_kind!r} is not one of {', '.join(MASK_KINDS)}")
  if window is not None and window < 0:
    raise ValueError(f"the sliding window's reach must be >= 0 tokens, got {window}")
  if dropout_rate > 0 and impl in FUSED_IMPLS:
    raise ValueError(f"attention_impl={impl!r} has no attention-probability dropout but "
                     f"attention_probs_dropout_prob={dropout_rate}; set "
                     "attention_probs_dropout_prob=0 or attention_impl='auto'")


def _decide(impl, backend, dropout_rate, window, dtype, seq_len, head_dim, mask_kind
            ) -> tuple[str, str]:
  """(kernel, why) for select_kernel and attention_path."""
  _check(impl, dropout_rate, window, mask_kind)
  dtype = jnp.dtype(dtype)
  if dropout_rate > 0:
    return "manual", f"attention dropout {dropout_rate:g}"
  if impl in ("manual", "xla"):
    return impl, "requested"
  if impl == "splash":
    refused = _splash_refusal(backend, seq_len, mask_kind)
    if refused:
      raise ValueError(refused[1])
    return "splash", "requested"
  if impl == "cudnn":
    refused = _cudnn_refusal(backend, dtype, seq_len, head_dim, mask_kind, window, 256)
    if refused:
      raise ValueError(refused[1])
    return "cudnn", "requested"
  # auto
  if backend == "tpu":
    refused = _splash_refusal(backend, seq_len, mask_kind)
    return ("xla", refused[0]) if refused else ("splash", "auto")
  if backend == "gpu":
    refused = _cudnn_refusal(backend, dtype, seq_len, head_dim, mask_kind, window, 128)
    return ("xla", refused[0]) if refused else ("cudnn", "auto")
  if backend == "cpu":  # the explicit path: the same XLA ops, and float16 works there
    return "manual", "cpu backend"
  return "xla", f"no fused kernel wired for {backend}"


def select_kernel(impl: str, backend: str, *, dropout_rate: float, dtype, seq_len: int,
                  head_dim: int, window: int | None = None, mask_kind: str = "padding") -> str:
  """The kernel `dot_product_attention` runs: 'splash' | 'cudnn' | 'xla' | 'manual'.

  impl: attention_impl (auto | xla | cudnn | splash | manual); backend: 'tpu' | 'gpu' | 'cpu'
  | ... (`current_backend()`); dropout_rate: the attention-probability dropout actually applied
  (0 when deterministic); dtype: q's dtype; window: None (global) or the sliding window's
  reach; mask_kind: 'padding' ([B, L] attention_mask), 'packed' (segment ids) or 'explicit'
  ([B, L, L] mask). A request that cannot run as asked (a fused impl with dropout, splash off
  TPU or at a length its blocks do not divide, cudnn off GPU or in float32, ...) is a one-line
  ValueError naming the fix; `auto` never raises for these, it falls back to xla (or manual).
  """
  return _decide(impl, backend, dropout_rate, window, dtype, seq_len, head_dim, mask_kind)[0]


def attention_path(impl: str, backend: str, dropout_rate: float, window: int | None, dtype, *,
                   seq_len: int, head_dim: int, mask_kind: str = "padding") -> str:
  """One line for the start-up log: which attention runs for these settings (select_kernel's
  arguments; raises its ValueErrors). E.g. 'splash (TPU Pallas, local window ±64, blocks
  512)', 'cudnn flash (global, the dense packed mask as a bias)', 'xla
  (jax.nn.dot_product_attention; splash needs seq_len a multiple of 128, got 200)', 'manual
  (explicit, attention dropout 0.1)'."""
  kernel, why = _decide(impl, backend, dropout_rate, window, dtype, seq_len, head_dim,
                        mask_kind)
  reach = "global" if window is None else f"local window ±{window}"
  if kernel == "splash":
    return f"splash (TPU Pallas, {reach}, blocks {splash_lib.block_size(seq_len)})"
  if kernel == "cudnn":
    if mask_kind == "padding" and window is None:
      return ("cudnn flash (global, padding as key lengths; a row whose padding is not all at "
              "its end: cudnn with the dense mask)")
    return f"cudnn flash ({reach}, the dense {mask_kind} mask as a bias)"
  if kernel == "xla":
    return "xla (jax.nn.dot_product_attention" + ("" if why == "requested" else f"; {why}") + ")"
  return f"manual (explicit, {why})"


def describe(config, *, backend: str, seq_len: int, packed: bool = False,
             training: bool = True) -> str:
  """attention_path for a model config (BertConfig or ModernBertConfig): every distinct layer
  kind (ModernBERT: global and local), and evaluation's path where attention dropout makes
  training's differ. E.g. 'global: splash (TPU Pallas, global, blocks 512); local:
  splash (TPU Pallas, local window ±64, blocks 512)'."""
  rate = getattr(config, "attention_dropout", None)
  rate = config.attention_probs_dropout_prob if rate is None else rate
  windows = [None]
  if hasattr(config, "sliding_window") and any(
      not config.is_global(i) for i in range(config.num_hidden_layers)):
    windows.append(config.sliding_window)
  kind = "packed" if packed else "padding"
  dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32

  def paths(r):
    return "; ".join(
        ("" if len(windows) == 1 else ("global: " if w is None else "local: "))
        + attention_path(config.attention_impl, backend, r, w, dtype, seq_len=seq_len,
                         head_dim=config.head_dim, mask_kind=kind) for w in windows)

  line = paths(rate if training else 0.0)
  if training and rate > 0:
    line += f" (evaluation: {paths(0.0)})"
  return line


# ---- the kernels ----------------------------------------------------------------------------
def _per_device(fn, arrays, names):
  """fn(*arrays) on each device's shard under the active mesh (arrays named by logical axes;
  the output is laid out as arrays[0]); fn(*arrays) itself without a mesh of several devices."""
  mesh = sharding._ACTIVE_MESH.get()
  if mesh is None or mesh.size == 1:
    return fn(*arrays)
  specs = tuple(sharding.fit_spec(sharding.logical_to_spec(n), a.shape, mesh)
                for a, n in zip(arrays, names))
  return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=specs[0],
                       check_vma=False)(*arrays)


_BLND = ("activation_batch", None, "activation_heads", None)  # never shard L: kernels need it
_BNLD = ("activation_batch", "activation_heads", None, None)
_SEG = ("activation_batch", None)
_KEEP = ("activation_batch", None, None, None)


def _splash_heads_major(q, k, v, segment_ids, window, interpret=False):
  """[B, N, L, D] -> [B, N, L, D] through splash_lib on each device's [b, n, L, D] shard."""
  fn = lambda q, k, v, seg: splash_lib.splash_attention(q, k, v, seg, window=window,
                                                        interpret=interpret)
  return _per_device(fn, (q, k, v, segment_ids), (_BNLD, _BNLD, _BNLD, _SEG))


def _splash(q, k, v, segment_ids, window, interpret=False):
  """[B, L, N, D] -> [B, L, N, D] through `_splash_heads_major` (transposed there and back)."""
  t = lambda x: jnp.transpose(x, (0, 2, 1, 3))
  return t(_splash_heads_major(t(q), t(k), t(v), segment_ids, window, interpret))


def _cudnn(q, k, v, mask: Mask, window, implementation="cudnn"):
  """cuDNN flash attention through jax.nn.dot_product_attention (the wiring in the module
  docstring). `implementation='xla'` runs the same arguments through XLA (tests, on CPU)."""
  length = q.shape[1]
  dense_impl = implementation if length % 2 == 0 else "xla"  # cuDNN's bias needs an even L

  def with_mask(q, k, v, keep):
    keep = keep if window is None else keep & window_mask(length, window)
    keep = jnp.broadcast_to(keep, (q.shape[0], 1, length, length))  # cuDNN's bias is [B,1,L,L]
    return jax.nn.dot_product_attention(q, k, v, mask=keep, implementation=dense_impl)

  if mask.kind != "padding" or window is not None:
    return _per_device(with_mask, (q, k, v, mask.keep), (_BLND, _BLND, _BLND, _KEEP))

  def padded(q, k, v, keep, seg):
    valid = seg > 0
    lengths = valid.sum(axis=1, dtype=jnp.int32)
    at_end = jnp.all(valid == (jnp.arange(length)[None, :] < lengths[:, None]))

    def by_lengths(q, k, v, keep):
      # Query lengths stay L: a padding query attends the valid keys, as in the dense mask.
      # An all-padding row gets length 1 (finite; its outputs are never used).
      return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=jnp.maximum(lengths, 1),
                                          implementation=implementation)
    return jax.lax.cond(at_end, by_lengths, with_mask, q, k, v, keep)

  return _per_device(padded, (q, k, v, mask.keep, mask.segment_ids),
                     (_BLND, _BLND, _BLND, _KEEP, _SEG))


# Query block of the banded local path: 128 (measured on the 2-core CPU, ModernBERT-base at
# 1024: blocks of 128 against their 256 keys, docs/benchmarks.md), larger for wide windows.
_BAND_QUERY_BLOCK = 128


def _band_block(length: int, window: int | None) -> int | None:
  """The query block `_manual` uses for a sliding window of this reach at this length, or None
  for the full [L, L] path. The block is max(128, 2 * window rounded up to a multiple of 64): a
  band of block + 2 * window keys is then at most two blocks wide (the gathered k, v at most
  twice k, v), and the dots at least 128 queries by 128 keys. It is taken only where it
  divides L and the band is narrower than L (fewer logits than the full path): ModernBERT's
  window 64 bands at L = 384, 512, 640, ... (256 keys per query block)."""
  if window is None:
    return None
  block = max(_BAND_QUERY_BLOCK, -(-2 * window // 64) * 64)
  if length % block or block + 2 * window >= length:
    return None
  return block


def _bands(x: jax.Array, axis: int, block: int, width: int) -> jax.Array:
  """x (padded along `axis` to nb * block + width - block) -> that axis replaced by
  (nb, width): band i = x[i * block : i * block + width], the bands overlapping by
  width - block. Static slices and a concatenation only (plain copies on XLA:CPU; their
  transpose in the backward is pads and adds, where a jnp.take would be a gather and a
  scatter-add): cut x into chunks of c = gcd(block, width - block) and concatenate the
  width / c strided slices of chunks, or the nb band slices themselves where those are fewer."""
  size = x.shape[axis]
  nb = (size - width) // block + 1
  chunk = math.gcd(block, width - block)
  pieces = width // chunk
  if pieces > nb:
    return jnp.stack([jax.lax.slice_in_dim(x, i * block, i * block + width, axis=axis)
                      for i in range(nb)], axis=axis)
  xc = x.reshape(x.shape[:axis] + (size // chunk, chunk) + x.shape[axis + 1:])
  step = block // chunk
  return jnp.concatenate(
      [jax.lax.slice_in_dim(xc, o, o + (nb - 1) * step + 1, stride=step, axis=axis)
       for o in range(pieces)], axis=axis + 1)


def _manual_full(q, k, v, keep, window, dropout_rate, rng):
  """The explicit path over all L keys: [B, N, L, L] float32 logits (a window as a mask)."""
  if window is not None:
    keep = keep & window_mask(q.shape[1], window)
  scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32))
  logits = jnp.einsum("btnd,bsnd->bnts", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = dropout(probs, dropout_rate, rng) if rng is not None and dropout_rate > 0 else probs
  return jnp.einsum("bnts,bsnd->btnd", probs.astype(v.dtype), v)


def _manual_banded(q, k, v, keep, window, dropout_rate, rng, block):
  """The explicit path for a sliding window, in query blocks: block i (queries
  [i * block, (i + 1) * block)) attends its band of keys [i * block - window, (i + 1) * block
  + window) (k, v and keep padded by the window on both sides, padding masked out), logits
  [B, nb, N, block, block + 2 * window] in float32 masked by |i - j| <= window and keep's band
  (keep [B, 1, 1, L] padding, or [B, 1, L, L] packed / explicit: each query block's rows of
  the band). Equal to `_manual_full` up to float rounding at every position: a query with no
  kept key in its window (only padding queries, or an explicit mask's empty row) is uniform
  over all L keys there, so it takes the mean of v over all L here too. With attention
  dropout the draws are over the banded probabilities, so they differ from `_manual_full`'s
  (the same rate and distribution), and those fully masked rows take the undropped mean."""
  b, length, n, d = q.shape
  nb = length // block
  pad = min(window, length)  # keys further than L away do not exist
  width = block + 2 * pad
  scale = 1.0 / jnp.sqrt(jnp.asarray(d, jnp.float32))
  padded = lambda x: jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)))
  kb = _bands(padded(k), 1, block, width)  # [B, nb, K, N, D]
  vb = _bands(padded(v), 1, block, width)
  keep = jnp.pad(keep, ((0, 0), (0, 0), (0, 0), (pad, pad)))  # padded keys: False
  if keep.shape[2] == 1:  # [B, H, 1, L + 2p] -> [B, nb, H, 1, K]
    band = jnp.moveaxis(_bands(keep, 3, block, width), 3, 1)
  else:  # [B, H, L, L + 2p] -> [B, nb, H, block, K]: query block i's rows of band i
    rows = keep.reshape(keep.shape[:2] + (nb, block, keep.shape[-1]))
    band = jnp.stack([rows[:, :, i, :, i * block:i * block + width] for i in range(nb)], 1)
  offset = jnp.arange(block)[:, None] + pad - jnp.arange(width)[None, :]  # query - key
  band = band & (jnp.abs(offset) <= window)
  logits = jnp.einsum("bcqnd,bcknd->bcnqk", q.reshape(b, nb, block, n, d), kb,
                      preferred_element_type=jnp.float32) * scale
  logits = jnp.where(band, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = dropout(probs, dropout_rate, rng) if rng is not None and dropout_rate > 0 else probs
  out = jnp.einsum("bcnqk,bcknd->bcqnd", probs.astype(v.dtype), vb).reshape(b, length, n, d)
  # A fully masked row: uniform over the band here, over all L keys in _manual_full.
  kept = jnp.moveaxis(jnp.any(band, axis=-1), 2, 3)  # [B, nb, block, H]
  kept = kept.reshape(kept.shape[0], length, kept.shape[-1], 1)
  uniform = jnp.full((length,), np.float32(1) / np.float32(length)).astype(v.dtype)
  mean = jnp.einsum("s,bsnd->bnd", uniform, v)[:, None]
  return jnp.where(kept, out, mean)


def _manual(q, k, v, keep, window, dropout_rate, rng):
  """The explicit path: banded (`_manual_banded`) for a sliding window where `_band_block`
  gives a block, else over all L keys (`_manual_full`)."""
  block = _band_block(q.shape[1], window)
  if block is not None and keep.ndim == 4 and keep.shape[-1] == q.shape[1]:
    return _manual_banded(q, k, v, keep, window, dropout_rate, rng, block)
  return _manual_full(q, k, v, keep, window, dropout_rate, rng)


def _active_rate(dropout_rate: float, rng: jax.Array | None) -> float:
  """The attention-dropout rate that applies: the rate with a key, else 0."""
  return dropout_rate if rng is not None and dropout_rate > 0.0 else 0.0


def runs_heads_major(impl: str, *, dropout_rate: float, rng: jax.Array | None, dtype,
                     seq_len: int, head_dim: int, window: int | None, mask: Mask) -> bool:
  """Whether `dot_product_attention` runs a kernel whose own layout is [B, N, L, D] (splash):
  a model can then project straight into that layout (`heads_major=True`), so that no
  [B, L, N, D] <-> [B, N, L, D] transposes are materialised around the kernel (on TPU they were
  the largest XLA-visible cost of ModernBERT at 8,192 tokens, docs/benchmarks.md)."""
  return select_kernel(impl, current_backend(), dropout_rate=_active_rate(dropout_rate, rng),
                       dtype=dtype, seq_len=seq_len, head_dim=head_dim, window=window,
                       mask_kind=mask.kind) == "splash"


def self_attention(x, qkv, out, mask: Mask | jax.Array, *, impl: str, dropout_rate: float,
                   rng: jax.Array | None, window: int | None = None, rotate=None) -> jax.Array:
  """Both families' attention between its projections: x [B, L, H] -> [B, L, H].

  qkv: the fused QKV Dense (kernel [H, 3, N, D]); out: the output Dense (kernel [N, D, H]);
  rotate(t, heads_major): applied to q and k (ModernBERT's RoPE), or None. Where the kernel is
  splash, q, k, v and the context are in its [B, N, L, D] layout (`Dense.qkv_heads_major`,
  `Dense.from_heads_major`); elsewhere in [B, L, N, D]."""
  mask = mask if isinstance(mask, Mask) else Mask(keep=mask)
  heads_major = runs_heads_major(impl, dropout_rate=dropout_rate, rng=rng, dtype=qkv.dtype,
                                 seq_len=x.shape[1], head_dim=qkv.kernel.shape[-1],
                                 window=window, mask=mask)
  if heads_major:
    q, k, v = qkv.qkv_heads_major(x)
  else:
    y = sharding.constrain(qkv(x), ("activation_batch", "activation_length", None,
                                    "activation_heads", "activation_kv"))  # [B, L, 3, N, D]
    q, k, v = y[:, :, 0], y[:, :, 1], y[:, :, 2]
  if rotate is not None:
    q, k = rotate(q, heads_major), rotate(k, heads_major)
  ctx = dot_product_attention(q, k, v, mask, impl=impl, dropout_rate=dropout_rate, rng=rng,
                              window=window, heads_major=heads_major)
  return out.from_heads_major(ctx) if heads_major else out(ctx)


def dot_product_attention(q, k, v, mask: Mask | jax.Array, *, impl: str, dropout_rate: float,
                          rng: jax.Array | None, window: int | None = None,
                          heads_major: bool = False) -> jax.Array:
  """Scaled dot-product attention. q, k, v: [B, L, N, D] ([B, N, L, D] and so the output with
  `heads_major`); mask: a Mask (or its bool keep [B, 1, L|1, L], taken as an explicit mask);
  window: None (global) or the sliding window's reach in tokens. The kernel is
  `select_kernel`'s (module docstring); attention dropout is active with a key and a positive
  rate, and only the explicit ("manual") path has it.

  manual: logits and softmax in float32; masked logits get float32's lowest finite value (never
  -inf, so a fully masked row is uniform, not NaN, in any compute dtype); a sliding window in
  query blocks where that saves work (`_manual_banded`, the same outputs).
  """
  mask = mask if isinstance(mask, Mask) else Mask(keep=mask)
  rate = _active_rate(dropout_rate, rng)
  kernel = select_kernel(impl, current_backend(), dropout_rate=rate, dtype=q.dtype,
                         seq_len=q.shape[2 if heads_major else 1], head_dim=q.shape[-1],
                         window=window, mask_kind=mask.kind)
  if heads_major:
    if kernel == "splash":
      return _splash_heads_major(q, k, v, mask.segment_ids, window)
    t = lambda x: jnp.swapaxes(x, 1, 2)
    return t(dot_product_attention(t(q), t(k), t(v), mask, impl=impl, dropout_rate=dropout_rate,
                                   rng=rng, window=window))
  if kernel == "splash":
    return _splash(q, k, v, mask.segment_ids, window)
  if kernel == "cudnn":
    return _cudnn(q, k, v, mask, window)
  if kernel == "xla":
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask.keep, local_window_size=None if window is None else (window, window),
        implementation="xla")
  return _manual(q, k, v, mask.keep, window, rate, rng)
