"""Optimizers and learning-rate schedules: the original BERT recipe, AdamW, LAMB, StableAdamW.

- "bert_adam": google-research/bert optimization.py `AdamWeightDecayOptimizer`: Adam WITHOUT
  bias correction, epsilon 1e-6, decoupled weight decay added to the update before the learning
  rate is applied, no decay for LayerNorm parameters and biases.
- "adamw": optax.adamw (bias-corrected; pass eps=1e-8 for its usual default).
- "lamb": optax.lamb (You et al. 2019), for batches of 32k-64k.
- "stable_adamw": ModernBERT's optimizer (optimi `StableAdamW`, Wortsman et al. 2023): AdamW
  whose learning rate is divided, per tensor, by max(1, RMS(g / sqrt(v_hat)))
  (`scale_by_stable_adam`, docs/formulas.md section 6); `decouple_lr` scales the weight decay by
  lr / peak instead of lr (optimi's fully decoupled weight decay, ModernBERT's setting).
All clip the gradient to a global norm first (`clip_grad_norm`; original BERT: 1.0; ModernBERT
sets 0 with stable_adamw, whose per-tensor clipping replaces it). Note the original summed
gradients per TPU core and clipped per core; we clip the global-mean gradient of the whole batch
(the same thing on one device, slightly different clipping on many).
Schedule (original): lr = peak * step / warmup during warmup, else
(peak - end) * (1 - step / num_steps) ** power + end, decaying from step 0 as optimization.py
does; "cosine" decays from the end of warmup; "constant" holds the peak; "wsd"
(warmup-stable-decay, ModernBERT's trapezoid) holds the peak, then decays to end over the last
`decay_steps` steps, linearly or as 1 - sqrt (`wsd_decay_shape`). Formulas: docs/formulas.md
section 5.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

_NO_DECAY_NAMES = ("bias", "output_bias", "scale")  # biases and LayerNorm gamma (scale)


DECAYS = ("linear", "polynomial", "cosine", "constant", "wsd")
WSD_DECAY_SHAPES = ("linear", "1-sqrt")


def wsd_decay_steps(decay_steps: int, num_steps: int) -> int:
  """optimizer.decay_steps resolved: -1 is the last 10% of the run (composer's
  WarmupStableDecayScheduler default, t_decay="0.1dur"), else the value itself."""
  return num_steps // 10 if decay_steps == -1 else decay_steps


def learning_rate_schedule(*, learning_rate: float, warmup_steps: int, num_steps: int,
                           decay: str = "linear", power: float = 1.0,
                           end_learning_rate: float = 0.0, decay_steps: int = -1,
                           wsd_decay_shape: str = "linear") -> optax.Schedule:
  """lr(step) for `decay` (module docstring; docs/formulas.md section 5). `decay_steps` and
  `wsd_decay_shape` are read by "wsd" only."""
  if decay not in DECAYS:
    raise ValueError(f"optimizer.decay {decay!r} is not one of {', '.join(DECAYS)}")
  if decay == "wsd" and wsd_decay_shape not in WSD_DECAY_SHAPES:
    raise ValueError(f"optimizer.wsd_decay_shape {wsd_decay_shape!r} is not one of "
                     f"{', '.join(WSD_DECAY_SHAPES)}")
  power = 1.0 if decay == "linear" else power
  decay_steps = wsd_decay_steps(decay_steps, num_steps)

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
    elif decay == "wsd" and decay_steps > 0:
      # The fraction of the decay done: 0 until num_steps - decay_steps (the peak held since
      # warmup), 1 from num_steps on (end_learning_rate, as past the end of the others).
      t = jnp.clip((step - (num_steps - decay_steps)) / decay_steps, 0.0, 1.0)
      shape = jnp.sqrt(t) if wsd_decay_shape == "1-sqrt" else t
      after = learning_rate - (learning_rate - end_learning_rate) * shape
    else:  # constant, or wsd without a decay (ModernBERT's pretraining phase: t_decay=0)
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


class ScaleByStableAdamState(NamedTuple):
  adam: optax.ScaleByAdamState  # count, mu, nu: optax.scale_by_adam's own state
  decay: Any  # optax.add_decayed_weights' (empty) state


def scale_by_stable_adam(b1: float, b2: float, eps: float, weight_decay: float = 0.0,
                         mask: Any = None) -> optax.GradientTransformation:
  """StableAdamW's update before the learning rate: (u + weight_decay * x) / max(1, RMS_t) per
  tensor, where u is optax.scale_by_adam's bias-corrected m_hat / (sqrt(v_hat) + eps) and

    RMS_t = sqrt(mean(g_t^2 / max(v_hat_t, eps^2)))      over the tensor's elements

  with g_t this step's (already clipped, if clip_grad_norm > 0) gradient and v_hat_t the
  bias-corrected second moment that includes it (docs/formulas.md section 6). As optimi's
  StableAdamW, the clipping divides the learning rate of the whole tensor, so it scales the
  weight decay too; `weight_decay` applies where `mask` is True (optax.add_decayed_weights).
  Chain optax.scale_by_learning_rate after it. A tensor's RMS only exceeds 1 when g_t^2 outgrows
  its running average (at step 1, v_hat = g^2: RMS <= 1). The second moment is read from
  scale_by_adam's state, so the optimizer state is Adam's (mu, nu), nothing more.
  """
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  decay = optax.add_decayed_weights(weight_decay, mask)

  def init(params):
    return ScaleByStableAdamState(adam=adam.init(params), decay=decay.init(params))

  def update(grads, state, params=None):
    updates, adam_state = adam.update(grads, state.adam, params)
    updates, decay_state = decay.update(updates, state.decay, params)
    # v_hat_t as scale_by_adam computed it for this step (its nu and count now include g_t).
    nu_hat = optax.tree.bias_correction(adam_state.nu, b2, adam_state.count)

    def clip(u, g, v):
      rms = jnp.sqrt(jnp.mean(jnp.square(g) / jnp.maximum(v, eps ** 2)))
      return u / jnp.maximum(1.0, rms).astype(u.dtype)

    updates = jax.tree.map(clip, updates, grads, nu_hat)
    return updates, ScaleByStableAdamState(adam=adam_state, decay=decay_state)

  return optax.GradientTransformation(init, update)


NAMES = ("bert_adam", "adamw", "lamb", "stable_adamw")


def create_optimizer(cfg, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer named by config.optimizer (see module docstring) and its schedule.

  `cfg` is a pretraining or fine-tuning config's `optimizer` section, or one read back from an
  older run's config.json: keys added later (decay_steps, wsd_decay_shape, decouple_lr) may be
  missing and then take their defaults (training/config.py `_ADDED_LATER`).

  stable_adamw with `decouple_lr` (optimi's decouple_lr, ModernBERT's `decoupled_stableadamw`)
  decays by weight_decay * lr_t / learning_rate instead of weight_decay * lr_t, i.e. the
  lr-coupled form with weight_decay / learning_rate (the peak is optimi's max_lr). ModernBERT-base
  (yamls/modernbert/modernbert-base-pretrain.yaml) is name=stable_adamw, decouple_lr=True,
  learning_rate=8e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=1e-5, clip_grad_norm=0, the
  default weight-decay mask (filter_bias_norm_wd: no decay on biases and norms), decay=wsd with
  decay_steps=0 after its warmup (the peak held to the end); its decay phase is a separate run
  (modernbert-base-learning-rate-decay.yaml): warmup_steps=0, decay=wsd, decay_steps=
  train.num_steps, wsd_decay_shape=1-sqrt, end_learning_rate=0.001 * learning_rate.
  """
  schedule = learning_rate_schedule(
      learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, num_steps=num_steps,
      decay=cfg.decay, power=cfg.power, end_learning_rate=cfg.end_learning_rate,
      decay_steps=cfg.get("decay_steps", -1),
      wsd_decay_shape=cfg.get("wsd_decay_shape", "linear"))
  decouple_lr = cfg.get("decouple_lr", False)
  if decouple_lr and cfg.name != "stable_adamw":
    raise ValueError(f"optimizer.decouple_lr applies to stable_adamw only, not {cfg.name!r}")
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
  elif cfg.name == "stable_adamw":
    weight_decay = cfg.weight_decay
    if decouple_lr:  # lr_t * (wd / peak) = wd * lr_t / peak; a zero peak never moves anything
      weight_decay = weight_decay / cfg.learning_rate if cfg.learning_rate > 0 else 0.0
    core = optax.chain(
        scale_by_stable_adam(cfg.b1, cfg.b2, cfg.eps, weight_decay, mask=weight_decay_mask),
        optax.scale_by_learning_rate(schedule))
  else:
    raise ValueError(f"optimizer.name {cfg.name!r} is not one of {', '.join(NAMES)}")
  if cfg.clip_grad_norm > 0:
    core = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), core)
  return core, schedule
