"""Model FLOPs per trained token and the peak rate they are measured against (MFU).

F = 6·N + 12·L·s·d + 6·(d² + d·V)·f per token (docs/formulas.md), with
N = L·(4d² + 2dI) the non-embedding weights, s the sequence length, f = P/s the fraction of
positions through the MLM head (gathered). Attention is bidirectional (not halved). Counts what
the model needs, not what rematerialisation recomputes.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from bert_jax.models.config import ModelConfig

# Dense bf16 peak FLOP/s per JAX device (datasheets), matched on device_kind substrings.
PEAK_FLOPS = (
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v5", 459e12), ("TPU v4", 275e12), ("TPU v3", 61.5e12), ("TPU v2", 22.5e12),
)


def flops_per_token(config: ModelConfig, seq_len: int, max_predictions: int | None) -> float:
  """Training FLOPs per token (forward + backward) of masked-LM pretraining, either family.

  ModernBERT (docs/formulas.md §1b): N = L·(4d² + 3dI) (GeGLU: Wi is d × 2I), and attention
  counts the keys a query needs: s on global layers, min(s, 2w + 1) on local layers with
  window w (a kernel that skips masked blocks does about that; the explicit path computes all
  s keys, which MFU does not credit)."""
  layers, d, inter, vocab = (config.num_hidden_layers, config.hidden_size,
                             config.intermediate_size, config.vocab_size)
  f = 1.0 if max_predictions is None else max_predictions / seq_len
  head = 6 * (d * d + d * vocab) * f
  if config.model_type == "modernbert":
    n = layers * (4 * d * d + 3 * d * inter)
    num_global = sum(config.is_global(i) for i in range(layers))
    keys = (num_global * seq_len
            + (layers - num_global) * min(seq_len, 2 * config.sliding_window + 1))
    return 6 * n + 12 * keys * d + head
  n = layers * (4 * d * d + 2 * d * inter)
  return 6 * n + 12 * layers * seq_len * d + head


def measure_matmul_peak(n: int = 2048, repeats: int = 5, dtype=jnp.float32,
                        device=None) -> float:
  """Best-of-`repeats` FLOP/s of an n³ matrix product on one device (random data)."""
  device = device or jax.devices()[0]
  keys = jax.random.split(jax.random.key(0), 2)
  a = jax.device_put(jax.random.normal(keys[0], (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(keys[1], (n, n), dtype), device)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def peak_flops(devices, override_tflops_per_device: float = 0.0) -> tuple[float, str]:
  """(total peak FLOP/s of `devices`, how it was found): the per-device override, the chip
  table, or on CPU one measured matmul rate for the whole host (fake CPU devices share cores)."""
  devices = list(devices)
  if override_tflops_per_device > 0:
    return override_tflops_per_device * 1e12 * len(devices), "config"
  kind = devices[0].device_kind
  for name, peak in PEAK_FLOPS:
    if name.lower() in kind.lower():
      return peak * len(devices), f"{kind} bf16 datasheet"
  if devices[0].platform == "cpu":
    hosts = len({d.process_index for d in devices})
    return measure_matmul_peak() * hosts, "measured fp32 2048³ matmul per host"
  return float("nan"), f"unknown device {kind}"
