"""models/attention.py: every kernel agrees with the explicit path, which kernel runs where, and
the one-line errors. On this CPU: splash runs in Pallas's interpreter, cuDNN's wiring runs
through XLA (the same jax.nn.dot_product_attention arguments, implementation="xla"), and the
real splash kernel is compiled ahead of time for a v5p topology."""

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import get_config
from bert_jax.models import attention
from bert_jax.models.attention import (Mask, attention_path, describe, dot_product_attention,
                                       make_mask, select_kernel)
from bert_jax.parallel import sharding
from helpers import random_model

B, L, N, D = 4, 256, 2, 16
WINDOWS = (None, 16)


def _qkv(dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=(B, L, N, D)), dtype) for _ in range(3))


def _mask(kind: str) -> Mask:
  """padding: a padded row, a full row, an all-padding row, a left-padded row (its padding is
  not at its end); packed: three sequences and padding, one sequence, two, all padding;
  explicit: a random [B, L, L] mask that keeps the diagonal."""
  if kind == "padding":
    am = np.ones((B, L), np.int32)
    am[0, 200:] = 0
    am[2] = 0
    am[3, :30] = 0
    return make_mask(jnp.asarray(am), None, (B, L))
  if kind == "packed":
    seg = np.zeros((B, L), np.int32)
    seg[0, :100], seg[0, 100:180], seg[0, 180:230] = 1, 2, 3
    seg[1] = 1
    seg[2, :10], seg[2, 10:] = 1, 2
    return make_mask(None, jnp.asarray(seg), (B, L))
  keep = np.random.default_rng(1).random((B, L, L)) < 0.3
  keep |= np.eye(L, dtype=bool)
  return make_mask(jnp.asarray(keep), None, (B, L))


def _valid(mask: Mask) -> np.ndarray:
  """bool [B, L, 1, 1]: the query positions whose outputs are used (all for explicit masks)."""
  if mask.segment_ids is None:
    return np.ones((B, L, 1, 1), bool)
  return (np.asarray(mask.segment_ids) > 0)[:, :, None, None]


def _manual(q, k, v, mask, window):
  return dot_product_attention(q, k, v, mask, impl="manual", dropout_rate=0.0, rng=None,
                               window=window)


def _close_where_used(got, want, mask, atol=1e-6):
  assert np.isfinite(np.asarray(got)).all()
  diff = np.abs(np.asarray(got, np.float32) - np.asarray(want, np.float32))
  assert np.where(_valid(mask), diff, 0).max() <= atol


_splash_interpreted = functools.partial(attention._splash, interpret=True)


# ---- the kernels agree with the explicit path ----
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("kind", ["padding", "packed", "explicit"])
def test_xla_equals_manual(kind, window):
  """jax.nn.dot_product_attention (XLA) is the explicit path at every position, padding's
  included (both keep a fully masked row finite and uniform)."""
  q, k, v = _qkv()
  mask = _mask(kind)
  got = dot_product_attention(q, k, v, mask, impl="xla", dropout_rate=0.0, rng=None,
                              window=window)
  np.testing.assert_allclose(got, _manual(q, k, v, mask, window), atol=1e-6, rtol=0)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("kind", ["padding", "packed", "explicit"])
def test_cudnn_wiring_equals_manual(kind, window):
  """The cuDNN call's arguments (key lengths for padded global rows, lax.cond to the dense mask
  for the left-padded row; the dense mask for packing, windows and explicit masks), run by XLA:
  the explicit path at every used position."""
  q, k, v = _qkv()
  mask = _mask(kind)
  got = attention._cudnn(q, k, v, mask, window, implementation="xla")
  _close_where_used(got, _manual(q, k, v, mask, window), mask)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("kind", ["padding", "packed"])
def test_splash_equals_manual(kind, window):
  """Splash (Pallas interpreter) with SegmentIds and FullMask / LocalMask: the explicit path at
  every used position (a padding query attends padding keys there, see splash.py)."""
  q, k, v = _qkv()
  mask = _mask(kind)
  got = _splash_interpreted(q, k, v, mask.segment_ids, window)
  _close_where_used(got, _manual(q, k, v, mask, window), mask)


def test_splash_gradients_equal_manual():
  """The kernel's backward pass (dq and dkv kernels) against autodiff of the explicit path, for
  a loss on the used positions: packing and a window together."""
  q, k, v = _qkv()
  mask = _mask("packed")
  weight = jnp.asarray(np.random.default_rng(3).normal(size=(B, L, N, D)), jnp.float32)
  weight = weight * _valid(mask)
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * weight)
  want = jax.grad(loss(lambda q, k, v: _manual(q, k, v, mask, 16)), (0, 1, 2))(q, k, v)
  got = jax.grad(loss(lambda q, k, v: _splash_interpreted(q, k, v, mask.segment_ids, 16)),
                 (0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["manual", "xla"])
def test_heads_major_layout_is_the_same_attention(impl):
  """heads_major=True takes and returns [B, N, L, D]; where the kernel is not splash it is
  the [B, L, N, D] call transposed there and back; with splash (interpreted), the same values."""
  q, k, v = _qkv()
  mask = _mask("packed")
  t = lambda x: jnp.swapaxes(x, 1, 2)
  want = dot_product_attention(q, k, v, mask, impl=impl, dropout_rate=0.0, rng=None, window=16)
  got = dot_product_attention(t(q), t(k), t(v), mask, impl=impl, dropout_rate=0.0, rng=None,
                              window=16, heads_major=True)
  np.testing.assert_array_equal(t(got), want)
  splash = attention._splash_heads_major(t(q), t(k), t(v), mask.segment_ids, 16, interpret=True)
  _close_where_used(t(splash), want, mask)


def test_fused_kernels_run_per_shard_on_a_mesh():
  """Under a (data 2, fsdp 2, tensor 2) mesh both kernels run inside shard_map (batch over data
  and fsdp, heads over tensor; the cond per shard) and still equal the explicit path."""
  mesh = sharding.create_mesh(2, 2, 2)
  q, k, v = _qkv()
  for kind, window in (("packed", 16), ("padding", None)):
    mask = _mask(kind)
    want = _manual(q, k, v, mask, window)
    for name, fn in (("splash", lambda q, k, v, m: _splash_interpreted(q, k, v, m.segment_ids,
                                                                       window)),
                     ("splash, heads major", lambda q, k, v, m: jnp.swapaxes(
                         attention._splash_heads_major(*(jnp.swapaxes(x, 1, 2) for x in (q, k, v)),
                                                       m.segment_ids, window, interpret=True),
                         1, 2)),
                     ("cudnn", lambda q, k, v, m: attention._cudnn(q, k, v, m, window,
                                                                   implementation="xla"))):
      step = jax.jit(sharding.under_mesh(fn, mesh))
      assert "shard_map" in str(jax.make_jaxpr(step)(q, k, v, mask)), name
      _close_where_used(step(q, k, v, mask), want, mask)


# ---- auto picks the fused kernel of the backend ----
def test_auto_runs_splash_on_tpu_and_cudnn_on_gpu(monkeypatch):
  q, k, v = _qkv()
  mask = _mask("packed")
  monkeypatch.setattr(attention, "_splash", _splash_interpreted)
  monkeypatch.setattr(attention, "current_backend", lambda: "tpu")
  got = dot_product_attention(q, k, v, mask, impl="auto", dropout_rate=0.0, rng=None, window=16)
  _close_where_used(got, _manual(q, k, v, mask, 16), mask)
  calls = []
  monkeypatch.setattr(attention, "_cudnn", lambda *a, **kw: calls.append(a[3].kind) or
                      attention._manual(a[0], a[1], a[2], a[3].keep, a[4], 0.0, None))
  monkeypatch.setattr(attention, "current_backend", lambda: "gpu")
  qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
  dot_product_attention(qb, kb, vb, mask, impl="auto", dropout_rate=0.0, rng=None)
  dot_product_attention(q, k, v, mask, impl="auto", dropout_rate=0.0, rng=None)  # float32: xla
  dot_product_attention(qb, kb, vb, mask, impl="auto", dropout_rate=0.1,  # dropout: manual
                        rng=jax.random.key(0))
  assert calls == ["packed"]


def test_modernbert_with_splash_equals_the_explicit_path(monkeypatch):
  """ModernBERT tiny (global and window-64 local layers, scanned) on packed rows: the TPU
  path (splash, interpreted, in the heads-major layout) gives the explicit path's logits at
  every used position."""
  config = get_config("modernbert_tiny", vocab_size=300, scan_layers=True)
  model = random_model(config, "masked_lm")
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(5, 300, (2, 128)), jnp.int32)
  seg = np.zeros((2, 128), np.int32)
  seg[0, :90], seg[0, 90:120], seg[1, :128] = 1, 2, 1
  pos = np.concatenate([np.arange(90), np.arange(38)])[None].repeat(2, 0)
  pos[1] = np.arange(128)
  run = lambda m: jax.jit(lambda i, s, p: m(i, segment_ids=s, position_ids=p).mlm_logits)(
      ids, jnp.asarray(seg), jnp.asarray(pos))
  want = run(model)
  # On TPU ModernBERT projects straight into splash's [B, N, L, D] layout (heads_major).
  monkeypatch.setattr(attention, "_splash_heads_major",
                      functools.partial(attention._splash_heads_major, interpret=True))
  monkeypatch.setattr(attention, "current_backend", lambda: "tpu")
  assert select_kernel("auto", "tpu", dropout_rate=0.0, dtype=jnp.float32, seq_len=128,
                       head_dim=config.head_dim, window=64, mask_kind="packed") == "splash"
  got = run(model)
  np.testing.assert_array_equal(run(model), got)  # a second trace reuses the cached kernels
  used = (seg > 0)[:, :, None]
  np.testing.assert_allclose(np.where(used, got, 0), np.where(used, want, 0), atol=2e-5, rtol=0)


def test_bert_with_splash_equals_the_explicit_path(monkeypatch):
  """BERT tiny without attention dropout on padded rows: the TPU path (splash, interpreted,
  q, k, v projected straight into its [B, N, L, D] layout) gives the explicit path's MLM logits
  at every token."""
  config = get_config("tiny", vocab_size=300, attention_probs_dropout_prob=0.0)
  model = random_model(config, "masked_lm")
  ids = jnp.asarray(np.random.default_rng(1).integers(5, 300, (2, 128)), jnp.int32)
  am = np.ones((2, 128), np.int32)
  am[1, 100:] = 0
  run = lambda: jax.jit(lambda i, a: model(i, attention_mask=a).mlm_logits)(ids, jnp.asarray(am))
  want = run()
  calls, interpreted = [], functools.partial(attention._splash_heads_major, interpret=True)
  monkeypatch.setattr(attention, "_splash_heads_major",
                      lambda *a: calls.append(a[0].shape) or interpreted(*a))
  monkeypatch.setattr(attention, "current_backend", lambda: "tpu")
  got = run()
  assert calls == [(2, config.num_attention_heads, 128, config.head_dim)] * 2  # both layers
  used = (am > 0)[:, :, None]
  np.testing.assert_allclose(np.where(used, got, 0), np.where(used, want, 0), atol=2e-5, rtol=0)


# ---- the banded local path of the explicit kernel ----
BL, BLOCK = 32, 8  # small: block 8 forced; 4 query blocks


def _small_mask(kind: str) -> Mask:
  """[4, 32] rows. padding: rows of 20, 32, 0 tokens and a left-padded one (its first 9
  positions padding); packed: three sequences and padding, one sequence, two, one of 3 tokens;
  explicit: a random [B, L, L] mask that keeps the diagonal."""
  if kind == "padding":
    am = np.ones((B, BL), np.int32)
    am[0, 20:] = 0
    am[2] = 0
    am[3, :9] = 0
    return make_mask(jnp.asarray(am), None, (B, BL))
  if kind == "packed":
    seg = np.zeros((B, BL), np.int32)
    seg[0, :10], seg[0, 10:19], seg[0, 19:27] = 1, 2, 3
    seg[1] = 1
    seg[2, :5], seg[2, 5:] = 1, 2
    seg[3, :3] = 1
    return make_mask(None, jnp.asarray(seg), (B, BL))
  keep = np.random.default_rng(1).random((B, BL, BL)) < 0.3
  keep |= np.eye(BL, dtype=bool)
  return make_mask(jnp.asarray(keep), None, (B, BL))


def _small_qkv(dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=(B, BL, N, D)), dtype) for _ in range(3))


def _small_valid(mask: Mask) -> np.ndarray:
  if mask.segment_ids is None:
    return np.ones((B, BL, 1, 1), bool)
  return (np.asarray(mask.segment_ids) > 0)[:, :, None, None]


# window 4: bands by strided chunk slices; 5 and 64 (wider than L): by one slice per block
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("window", [4, 5, 64])
@pytest.mark.parametrize("kind", ["padding", "packed", "explicit"])
def test_banded_equals_full_manual(kind, window, dtype):
  """Query blocks against their band of keys give the full [L, L] explicit path: float32
  within 1e-6 at every position (a fully masked padding query takes the mean of all L values
  on both), bfloat16 within one bfloat16 rounding of it at the used positions."""
  q, k, v = _small_qkv(jnp.dtype(dtype))
  mask = _small_mask(kind)
  banded = jax.jit(attention._manual_banded, static_argnums=(4, 5, 7))
  got = banded(q, k, v, mask.keep, window, 0.0, None, BLOCK)
  want = attention._manual_full(q, k, v, mask.keep, window, 0.0, None)
  assert got.dtype == want.dtype == jnp.dtype(dtype) and got.shape == q.shape
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  assert np.isfinite(got).all()
  if dtype == "float32":
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
  else:
    diff = np.where(_small_valid(mask), np.abs(got - want), 0)
    assert (diff <= 2 ** -8 * np.abs(want) + 1e-6).all(), diff.max()


@pytest.mark.parametrize("window", [4, 5, 64])
@pytest.mark.parametrize("kind", ["padding", "packed", "explicit"])
def test_banded_gradients_equal_full_manual(kind, window):
  """dq, dk, dv of a loss over the used query positions: banded == full within 1e-5."""
  q, k, v = _small_qkv()
  mask = _small_mask(kind)
  weight = jnp.asarray(np.random.default_rng(3).normal(size=q.shape), jnp.float32)
  weight = weight * _small_valid(mask)
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * weight)
  full = lambda q, k, v: attention._manual_full(q, k, v, mask.keep, window, 0.0, None)
  banded = lambda q, k, v: attention._manual_banded(q, k, v, mask.keep, window, 0.0, None,
                                                    BLOCK)
  want = jax.grad(loss(full), (0, 1, 2))(q, k, v)
  got = jax.jit(jax.grad(loss(banded), (0, 1, 2)))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_banded_attention_dropout():
  """Attention dropout on the banded probabilities: deterministic per key, a different output
  from the undropped one at the used positions, and unbiased in expectation (the mean over
  many keys approaches the undropped output)."""
  q, k, v = _small_qkv()
  mask = _small_mask("padding")
  run = jax.jit(lambda rng: attention._manual_banded(q, k, v, mask.keep, 4, 0.5, rng, BLOCK))
  plain = np.asarray(attention._manual_banded(q, k, v, mask.keep, 4, 0.0, None, BLOCK))
  a, b = np.asarray(run(jax.random.key(0))), np.asarray(run(jax.random.key(0)))
  np.testing.assert_array_equal(a, b)
  assert np.isfinite(a).all()
  used = _small_valid(mask)[..., 0, 0]
  assert (np.abs(a - plain).max(axis=(2, 3))[used] > 1e-3).mean() > 0.9
  mean = np.mean([np.asarray(run(key)) for key in jax.random.split(jax.random.key(1), 400)], 0)
  assert np.abs(np.where(_small_valid(mask), mean - plain, 0)).max() < 0.25


def test_manual_takes_the_banded_path_where_it_saves_work(monkeypatch):
  """_band_block: 128 (or 2 * window rounded up to 64) where it divides L and the band
  (block + 2 * window keys) is narrower than L; the explicit path then never builds [L, L]
  logits and equals the full one."""
  assert attention._band_block(1024, 64) == attention._band_block(512, 64) == 128
  assert attention._band_block(384, 64) == 128
  assert attention._band_block(256, 64) is None  # a band of 256 keys: no saving at 256
  assert attention._band_block(256, 16) == 128
  assert attention._band_block(1024, 100) == 256
  assert attention._band_block(200, 16) is None  # 128 does not divide 200
  assert attention._band_block(1024, None) is None  # global layers
  length = 512
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, length, 2, 8)), jnp.float32) for _ in range(3))
  am = np.ones((2, length), np.int32)
  am[0, 300:] = 0
  for mask in (make_mask(jnp.asarray(am), None, (2, length)),
               make_mask(None, jnp.asarray(am), (2, length))):  # padding, then packed
    run = lambda q, k, v: _manual(q, k, v, mask, 64)
    hlo = jax.jit(run).lower(q, k, v).as_text()
    assert "2x2x512x512xf32" not in hlo and "2x4x2x128x256xf32" in hlo  # [B, nb, N, 128, 256]
    got = jax.jit(run)(q, k, v)
    monkeypatch.setattr(attention, "_band_block", lambda *a: None)
    want = jax.jit(run)(q, k, v)
    monkeypatch.undo()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


# ---- which kernel, for every case ----
BF16, F16, F32 = jnp.bfloat16, jnp.float16, jnp.float32


@pytest.mark.parametrize("backend, dtype, seq_len, head_dim, window, kind, want", [
    # TPU: splash wherever segment ids describe the mask and 128 divides L
    ("tpu", F32, 512, 64, None, "padding", "splash"),
    ("tpu", BF16, 1024, 64, 64, "packed", "splash"),
    ("tpu", BF16, 384, 64, 64, "padding", "splash"),  # 128-blocks
    ("tpu", BF16, 200, 64, None, "padding", "xla"),
    ("tpu", BF16, 64, 64, 64, "packed", "xla"),
    ("tpu", BF16, 512, 64, None, "explicit", "xla"),
    # NVIDIA GPU: cuDNN for bf16/fp16 and head sizes it takes
    ("gpu", BF16, 512, 64, None, "padding", "cudnn"),
    ("gpu", F16, 512, 64, None, "packed", "cudnn"),
    ("gpu", BF16, 1024, 64, 64, "padding", "cudnn"),
    ("gpu", BF16, 512, 64, None, "explicit", "cudnn"),
    ("gpu", BF16, 129, 64, None, "padding", "cudnn"),  # key lengths need no even L
    ("gpu", BF16, 129, 64, 64, "padding", "xla"),  # the window's bias does
    ("gpu", BF16, 129, 64, None, "packed", "xla"),
    ("gpu", F32, 512, 64, None, "padding", "xla"),
    ("gpu", BF16, 512, 20, None, "padding", "xla"),
    ("gpu", BF16, 512, 256, None, "padding", "xla"),  # auto stays within every GPU's 128
    # CPU: the explicit path; other backends: XLA
    ("cpu", F32, 512, 64, None, "padding", "manual"),
    ("cpu", BF16, 512, 64, 64, "packed", "manual"),
    ("cpu", F16, 200, 64, None, "explicit", "manual"),
    ("rocm", BF16, 512, 64, None, "padding", "xla"),
])
def test_auto_kernel(backend, dtype, seq_len, head_dim, window, kind, want):
  args = dict(dtype=dtype, seq_len=seq_len, head_dim=head_dim, window=window, mask_kind=kind)
  assert select_kernel("auto", backend, dropout_rate=0.0, **args) == want
  # Attention dropout: the explicit path on every backend; the fused impls refuse it.
  assert select_kernel("auto", backend, dropout_rate=0.1, **args) == "manual"
  assert select_kernel("manual", backend, dropout_rate=0.1, **args) == "manual"
  assert select_kernel("manual", backend, dropout_rate=0.0, **args) == "manual"
  assert select_kernel("xla", backend, dropout_rate=0.0, **args) == "xla"
  for impl in ("xla", "cudnn", "splash"):
    with pytest.raises(ValueError, match="has no attention-probability dropout"):
      select_kernel(impl, backend, dropout_rate=0.1, **args)
  # Asked for by name, a kernel runs where auto would pick it (and never silently elsewhere).
  # (cudnn by name also takes head size 256, which cuDNN runs on Hopper and newer.)
  for impl in ("splash", "cudnn"):
    if want == impl or (impl == "cudnn" and backend == "gpu" and head_dim == 256):
      assert select_kernel(impl, backend, dropout_rate=0.0, **args) == impl
    else:
      with pytest.raises(ValueError):
        select_kernel(impl, backend, dropout_rate=0.0, **args)


def _error(impl, backend, **kw):
  args = dict(dropout_rate=0.0, dtype=BF16, seq_len=512, head_dim=64, window=None,
              mask_kind="padding") | kw
  with pytest.raises(ValueError) as e:
    select_kernel(impl, backend, **args)
  return str(e.value)


def test_one_line_errors():
  assert _error("splash", "gpu") == (
      "attention_impl='splash' needs a TPU; this backend is gpu: use attention_impl='auto' or "
      "'xla'")
  assert _error("splash", "cpu", window=64) == (
      "attention_impl='splash' needs a TPU; this backend is cpu: use attention_impl='auto' or "
      "'xla'")
  assert _error("splash", "tpu", seq_len=200) == (
      "attention_impl='splash' needs the sequence length to be a multiple of 128 (its blocks "
      "block_q = block_kv are 512, 256 or 128 and must divide it), got 200; choose seq_len a "
      "multiple of 128 (of 512 for the largest blocks), or use attention_impl='auto' or 'xla'")
  assert _error("splash", "tpu", mask_kind="explicit") == (
      "attention_impl='splash' takes padding or packing (segment ids), not an explicit "
      "[B, L, L] attention_mask; use attention_impl='auto' or 'xla'")
  assert _error("splash", "tpu", dropout_rate=0.1) == (
      "attention_impl='splash' has no attention-probability dropout but "
      "attention_probs_dropout_prob=0.1; set attention_probs_dropout_prob=0 or "
      "attention_impl='auto'")
  assert _error("cudnn", "tpu") == (
      "attention_impl='cudnn' needs an NVIDIA GPU; this backend is tpu: use "
      "attention_impl='auto' or 'xla'")
  assert _error("cudnn", "cpu") == (
      "attention_impl='cudnn' needs an NVIDIA GPU; this backend is cpu: use "
      "attention_impl='auto' or 'xla'")
  assert _error("cudnn", "gpu", dtype=F32) == (
      "attention_impl='cudnn' needs bfloat16 or float16 activations, got float32; set "
      "dtype=bfloat16 or use attention_impl='auto' or 'xla'")
  assert _error("cudnn", "gpu", head_dim=20) == (
      "attention_impl='cudnn' needs a head size (hidden_size / num_attention_heads) that is a "
      "multiple of 8 and at most 256 (128 before Hopper), got 20; use attention_impl='auto' or "
      "'xla'")
  assert _error("cudnn", "gpu", seq_len=129, window=64) == (
      "attention_impl='cudnn' with a sliding window needs an even sequence length (cuDNN's "
      "mask bias), got 129; choose an even seq_len or use attention_impl='auto' or 'xla'")
  assert _error("cudnn", "gpu", seq_len=129, mask_kind="packed") == (
      "attention_impl='cudnn' with packed rows needs an even sequence length (cuDNN's mask "
      "bias), got 129; choose an even seq_len or use attention_impl='auto' or 'xla'")
  assert _error("auto", "tpu", window=-1) == (
      "the sliding window's reach must be >= 0 tokens, got -1")
  assert _error("flash", "tpu") == (
      "attention_impl='flash' is not one of auto, xla, cudnn, splash, manual")


def test_dot_product_attention_raises_the_same_errors():
  """On this CPU, a kernel asked for by name is refused at trace time, not run elsewhere."""
  q, k, v = _qkv()
  mask = _mask("padding")
  for impl, start in (("splash", "attention_impl='splash' needs a TPU; this backend is cpu"),
                      ("cudnn", "attention_impl='cudnn' needs an NVIDIA GPU; this backend is cpu")):
    with pytest.raises(ValueError) as e:
      jax.jit(lambda q, k, v: dot_product_attention(q, k, v, mask, impl=impl, dropout_rate=0.0,
                                                    rng=None))(q, k, v)
    assert str(e.value).startswith(start)


# ---- the start-up log line ----
def test_attention_path_strings():
  path = lambda impl, backend, rate=0.0, window=None, dtype=BF16, seq_len=512, kind="padding": (
      attention_path(impl, backend, rate, window, dtype, seq_len=seq_len, head_dim=64,
                     mask_kind=kind))
  assert path("auto", "tpu") == "splash (TPU Pallas, global, blocks 512)"
  assert path("splash", "tpu", window=64, seq_len=384) == (
      "splash (TPU Pallas, local window ±64, blocks 128)")
  assert path("auto", "tpu", seq_len=200) == (
      "xla (jax.nn.dot_product_attention; splash needs seq_len a multiple of 128, got 200)")
  assert path("auto", "gpu") == (
      "cudnn flash (global, padding as key lengths; a row whose padding is not all at its end: "
      "cudnn with the dense mask)")
  assert path("cudnn", "gpu", window=64) == (
      "cudnn flash (local window ±64, the dense padding mask as a bias)")
  assert path("auto", "gpu", kind="packed") == (
      "cudnn flash (global, the dense packed mask as a bias)")
  assert path("auto", "gpu", dtype=F32) == (
      "xla (jax.nn.dot_product_attention; cudnn needs bfloat16 or float16, got float32)")
  assert path("xla", "gpu") == "xla (jax.nn.dot_product_attention)"
  assert path("auto", "tpu", rate=0.1) == "manual (explicit, attention dropout 0.1)"
  assert path("auto", "cpu") == "manual (explicit, cpu backend)"
  assert path("manual", "tpu") == "manual (explicit, requested)"


def test_describe_a_model_config():
  bert = get_config("tiny")  # attention dropout 0.1
  assert describe(bert, backend="tpu", seq_len=128) == (
      "manual (explicit, attention dropout 0.1) (evaluation: splash (TPU Pallas, global, "
      "blocks 128))")
  assert describe(bert, backend="tpu", seq_len=128, training=False) == (
      "splash (TPU Pallas, global, blocks 128)")
  modern = get_config("modernbert_base", dtype="bfloat16")
  assert describe(modern, backend="tpu", seq_len=1024, packed=True) == (
      "global: splash (TPU Pallas, global, blocks 512); local: splash (TPU Pallas, local window "
      "±64, blocks 512)")
  assert describe(modern, backend="gpu", seq_len=1024, packed=True) == (
      "global: cudnn flash (global, the dense packed mask as a bias); local: cudnn flash (local "
      "window ±64, the dense packed mask as a bias)")


def test_mask_kinds():
  assert _mask("padding").kind == "padding" and _mask("packed").kind == "packed"
  assert _mask("explicit").kind == "explicit"
  assert make_mask(None, None, (B, L)).kind == "padding"
  assert Mask(keep=jnp.ones((1, 1, 1, L), bool)).kind == "explicit"


# ---- the real kernel, compiled for a TPU from this CPU ----
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install 'bert_jax[tpu]')")
def test_splash_compiles_for_a_v5p_2x2x1():
  """dot_product_attention(impl='splash') traced for a (data 2, tensor 2) mesh of v5p:2x2x1
  devices: the backend is the mesh's (tpu, though this host is a CPU), and the forward and both
  backward Mosaic kernels (LocalMask + SegmentIds under shard_map) compile. L=1024, 2 heads,
  D=64, bf16: a few seconds."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from bert_jax.training import aot
  _, _, devices = aot.topology_devices("v5p:2x2x1")
  mesh = sharding.create_mesh(2, 1, 2, devices=devices)
  with sharding.activation_sharding(mesh):
    assert attention.current_backend() == "tpu"
  assert attention.current_backend() == "cpu"
  b, length, n, d = 4, 1024, 2, 64

  def loss(q, k, v, seg):
    out = dot_product_attention(q, k, v, make_mask(None, seg, (b, length)), impl="auto",
                                dropout_rate=0.0, rng=None, window=64)
    return jnp.sum(out.astype(jnp.float32) ** 2)

  step = jax.jit(sharding.under_mesh(jax.value_and_grad(loss, (0, 1, 2)), mesh))
  x = jax.ShapeDtypeStruct((b, length, n, d), jnp.bfloat16,
                           sharding=NamedSharding(mesh, P("data", None, "tensor", None)))
  seg = jax.ShapeDtypeStruct((b, length), jnp.int32, sharding=NamedSharding(mesh, P("data")))
  lowered = step.lower(x, x, x, seg)
  text = lowered.as_text()
  assert text.count("tpu_custom_call") == 2  # forward and the fused backward (dkv computes dq)
  assert "splash_mha_dkv" in text and "splash_mha_dq" not in text
  compiled = lowered.compile()
  assert compiled.memory_analysis().temp_size_in_bytes < 64 * 2 ** 20
