"""Optimizers and learning-rate schedules: the original BERT recipe, AdamW and LAMB.

- "bert_adam": google-research/bert optimization.py `AdamWeightDecayOptimizer`: Adam WITHOUT
  bias correction, epsilon 1e-6, decoupled weight decay added to the update before the learning
  rate is applied, no decay for LayerNorm parameters and biases.
- "adamw": optax.adamw (bias-corrected; pass eps=1e-8 for its usual default).
- "lamb": optax.lamb (You et al. 2019), for batches of 32k-64k.
All clip the gradient to a global norm first (`clip_grad_norm`; original BERT: 1.0). Note the
original summed gradients per TPU core and clipped per core; we clip the global-mean gradient of
the whole batch (the same thing on one device, slightly different clipping on many).
Schedule (original): lr = peak * step / warmup during warmup, else
(peak - end) * (1 - step / num_steps) ** power + end, decaying from step 0 as optimization.py
does; "cosine" decays from the end of warmup; "constant" holds the peak.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

_NO_DECAY_NAMES = ("bias", "output_bias", "scale")  # biases and LayerNorm gamma (scale)


def learning_rate_schedule(*, learning_rate: float, warmup_steps: int, num_steps: int,
                           decay: str = "linear", power: float = 1.0,
                           end_learning_rate: float = 0.0) -> optax.Schedule:
  if decay not in ("linear", "polynomial", "cosine", "constant"):
    raise ValueError(f"optimizer.decay {decay!r} is not one of linear, polynomial, cosine, "
                     "constant")
  power = 1.0 if decay == "linear" else power

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    if decay in ("linear", "polynomial"):
      frac = 1.0 - jnp.minimum(step, num_steps) / max(num_steps, 1)
      after = (learning_rate - end_learning_rate) * frac ** power + end_learning_rate
    elif decay == "cosine":
      span = max(num_steps - warmup_steps, 1)
      t = jnp.clip((step - warmup_steps) / span, 0.0, 1.0)
      after = end_learning_rate + (learning_rate - end_learning_rate) * 0.5 * (
          1.0 + jnp.cos(jnp.pi * t))
    else:
      after = jnp.asarray(learning_rate, jnp.float32)
    if warmup_steps <= 0:
      return after
    warm = learning_rate * step / warmup_steps
    return jnp.where(step < warmup_steps, warm, after)

  return schedule


def weight_decay_mask(params: Any) -> Any:
  """True where weight decay applies: kernels and embedding tables, not biases / LayerNorm."""
  def decide(path, _):
    names = [getattr(p, "key", getattr(p, "name", str(p))) for p in path]
    if names and names[-1] == "value":  # an nnx.State leaf: the Param's own name comes before
      names = names[:-1]
    return not (names[-1] in _NO_DECAY_NAMES or "layer_norm" in names)
  return jax.tree_util.tree_map_with_path(decide, params)


class ScaleByAdamNoBiasState(NamedTuple):
  mu: Any
  nu: Any


def scale_by_adam_no_bias_correction(b1: float, b2: float, eps: float
                                     ) -> optax.GradientTransformation:
  """m / (sqrt(v) + eps) with m, v updated as Adam but never bias-corrected (BERT's optimizer)."""

  def init(params):
    zeros = jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)
    return ScaleByAdamNoBiasState(mu=zeros, nu=jax.tree.map(jnp.copy, zeros))

  def update(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, updates)
    out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return out, ScaleByAdamNoBiasState(mu=mu, nu=nu)

  return optax.GradientTransformation(init, update)


def create_optimizer(cfg, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer named by config.optimizer (see module docstring) and its schedule."""
  schedule = learning_rate_schedule(
      learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, num_steps=num_steps,
      decay=cfg.decay, power=cfg.power, end_learning_rate=cfg.end_learning_rate)
  if cfg.name == "bert_adam":
    core = optax.chain(
        scale_by_adam_no_bias_correction(cfg.b1, cfg.b2, cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=weight_decay_mask),
        optax.scale_by_learning_rate(schedule))
  elif cfg.name == "adamw":
    core = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay, mask=weight_decay_mask)
  elif cfg.name == "lamb":
    core = optax.lamb(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=weight_decay_mask)
  else:
    raise ValueError(f"optimizer.name {cfg.name!r} is not one of bert_adam, adamw, lamb")
  if cfg.clip_grad_norm > 0:
    core = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), core)
  return core, schedule
