"""bert_jax.training.optim against independent numpy transcriptions of its references.

- bert_adam: google-research/bert `optimization.py` (create_optimizer +
  AdamWeightDecayOptimizer), transcribed line by line below.
- lamb: You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76
  minutes", Algorithm 2 (per-tensor trust ratio, as optax.lamb implements it).
- adamw: Loshchilov & Hutter's decoupled weight decay with bias-corrected Adam (optax.adamw).
- stable_adamw: optimi's StableAdamW, in test_stable_adamw.py (here only the mask on the real
  model's tree).
- the weight-decay mask on a real model's parameter tree, and the learning-rate schedules
  (wsd against ModernBERT's src/scheduler.py).

References are float64 numpy; bert_jax runs in float32.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

import bert_jax
from bert_jax.training import config as config_lib
from bert_jax.training import optim
from configs import default as default_config
from helpers import tiny_config


# ----------------------------------------------------------------------------------------------
# Helpers.


def _opt_cfg(**overrides):
  """configs/default.py's `optimizer` section with `overrides` (keys must already exist)."""
  cfg = default_config.get_config().optimizer
  for key, value in overrides.items():
    assert key in cfg, f"configs/default.py has no optimizer.{key}"
    cfg[key] = value
  return cfg


def _path_str(path) -> str:
  """'bert/encoder/layers/0/attention/qkv/kernel' from a jax key path."""
  parts = []
  for p in path:
    for attr in ("key", "name", "idx"):
      if hasattr(p, attr):
        parts.append(str(getattr(p, attr)))
        break
    else:
      parts.append(str(p))
  return "/".join(parts)


def _flatten(tree) -> dict[str, np.ndarray]:
  return {_path_str(p): np.asarray(x, np.float64)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflatten_like(tree, flat: dict[str, np.ndarray]):
  leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(flat[_path_str(p)], jnp.float32) for p, _ in leaves_with_paths])


# A small parameter tree with bert_jax's real parameter names (see the printout of
# nnx.to_pure_dict(nnx.state(create_model(...), nnx.Param)) in test_weight_decay_mask_*):
# kernels, embedding tables, Dense biases, LayerNorm scale/bias and the MLM `output_bias`.
_SHAPES = {
    "bert/embeddings/word_embeddings/embedding": (11, 8),
    "bert/embeddings/layer_norm/scale": (8,),
    "bert/embeddings/layer_norm/bias": (8,),
    "bert/encoder/layers/0/attention/qkv/kernel": (8, 3, 2, 4),
    "bert/encoder/layers/0/attention/qkv/bias": (3, 2, 4),
    "bert/encoder/layers/0/attention/layer_norm/scale": (8,),
    "bert/encoder/layers/0/attention/layer_norm/bias": (8,),
    "bert/encoder/layers/0/intermediate/kernel": (8, 16),
    "bert/encoder/layers/0/intermediate/bias": (16,),
    "mlm/output_bias": (11,),
    "nsp/kernel": (8, 2),
    "nsp/bias": (2,),
}


def _make_params(seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
  """(nested pure-dict params like bert_jax's, the same flattened as float64 numpy).

  Layer indices are int dict keys, as nnx.to_pure_dict gives. LayerNorm scales start at 1 and
  LayerNorm / output biases at 0 as in the model (the 0-norm LAMB trust-ratio case);
  `nsp/bias` starts non-zero and gets zero gradients (the 0-update-norm case).
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for name, shape in _SHAPES.items():
    if name.endswith("layer_norm/scale"):
      value = np.ones(shape)
    elif name.endswith("layer_norm/bias") or name == "mlm/output_bias":
      value = np.zeros(shape)
    else:
      value = rng.normal(0.0, 0.5, shape)
    flat[name] = value.astype(np.float32).astype(np.float64)
  nested: dict = {}
  for name, value in flat.items():
    node = nested
    keys = [int(k) if k.isdigit() else k for k in name.split("/")]
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = jnp.asarray(value, jnp.float32)
  assert set(_flatten(nested)) == set(flat)
  return nested, flat


def _make_grads(num_steps: int, big_step: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
  """Random gradients, global norm well below 1 except at `big_step` (norm ~ 6)."""
  rng = np.random.default_rng(seed)
  out = []
  for step in range(num_steps):
    scale = 0.6 if step == big_step else 0.01
    g = {name: rng.normal(0.0, scale, shape).astype(np.float32).astype(np.float64)
         for name, shape in _SHAPES.items()}
    g["nsp/bias"] = np.zeros(_SHAPES["nsp/bias"])
    out.append(g)
  norms = [np.sqrt(sum(np.sum(x ** 2) for x in g.values())) for g in out]
  assert norms[big_step] > 3.0, norms
  assert all(n < 0.5 for i, n in enumerate(norms) if i != big_step), norms
  return out


def _run_bert_jax(tx, params: dict, grads: list[dict[str, np.ndarray]]):
  """Apply `tx` for len(grads) steps; (params after each step, final opt state) flattened."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  history = []
  for g in grads:
    updates, state = update(_unflatten_like(params, g), state, params)
    params = optax.apply_updates(params, updates)
    history.append(_flatten(params))
  return history, state


def _assert_trajectories_close(got: list[dict], want: list[dict], atol: float):
  for step, (g, w) in enumerate(zip(got, want)):
    assert set(g) == set(w)
    for name in w:
      np.testing.assert_allclose(g[name], w[name], rtol=0, atol=atol,
                                 err_msg=f"step {step}: {name}")


def _max_diff(a: list[dict], b: list[dict]) -> float:
  return max(float(np.max(np.abs(x[n] - y[n]))) for x, y in zip(a, b) for n in x)


# ----------------------------------------------------------------------------------------------
# 1. bert_adam vs google-research/bert optimization.py.


class GoogleResearchBertOptimization:
  """numpy transcription of google-research/bert `optimization.py`.

  Source: https://github.com/google-research/bert/blob/master/optimization.py
  (read from the stored copy at commit ea96c0dda296799488cd98c53179f6b1246f24d3):

    create_optimizer(loss, init_lr, num_train_steps, num_warmup_steps, use_tpu):
      learning_rate = tf.train.polynomial_decay(learning_rate, global_step, num_train_steps,
                                                end_learning_rate=0.0, power=1.0, cycle=False)
      if num_warmup_steps:
        warmup_percent_done = global_steps_float / warmup_steps_float
        warmup_learning_rate = init_lr * warmup_percent_done
        is_warmup = tf.cast(global_steps_int < warmup_steps_int, tf.float32)
        learning_rate = (1.0 - is_warmup) * learning_rate + is_warmup * warmup_learning_rate
      optimizer = AdamWeightDecayOptimizer(learning_rate=learning_rate,
          weight_decay_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
          exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"])
      (grads, _) = tf.clip_by_global_norm(grads, clip_norm=1.0)
      train_op = optimizer.apply_gradients(zip(grads, tvars), global_step=global_step)
      new_global_step = global_step + 1        # AFTER the update: step 0 uses lr(0)

    AdamWeightDecayOptimizer.apply_gradients:
      next_m = beta_1 * m + (1.0 - beta_1) * grad
      next_v = beta_2 * v + (1.0 - beta_2) * tf.square(grad)
      update = next_m / (tf.sqrt(next_v) + epsilon)
      if self._do_use_weight_decay(param_name):
        update += self.weight_decay_rate * param
      update_with_lr = self.learning_rate * update
      next_param = param - update_with_lr

    _do_use_weight_decay(param_name):
      if not self.weight_decay_rate: return False
      for r in self.exclude_from_weight_decay:
        if re.search(r, param_name) is not None: return False
      return True

  tf.train.polynomial_decay (cycle=False):
    step = min(global_step, decay_steps)
    (lr - end_lr) * (1 - step / decay_steps) ** power + end_lr
  tf.clip_by_global_norm(t_list, clip_norm):
    t * clip_norm / max(global_norm, clip_norm)

  Parameter names are bert_jax's paths joined by "/" (the original's regexes then see
  ".../layer_norm/scale", ".../bias", "mlm/output_bias" exactly as TF saw
  ".../LayerNorm/gamma", ".../bias", "cls/predictions/output_bias").
  The hyper-parameters are the constructor's arguments so a test can vary them.
  """

  EXCLUDE_FROM_WEIGHT_DECAY = ["LayerNorm", "layer_norm", "bias"]

  def __init__(self, params: dict[str, np.ndarray], *, init_lr: float, num_train_steps: int,
               num_warmup_steps: int, weight_decay_rate: float = 0.01, beta_1: float = 0.9,
               beta_2: float = 0.999, epsilon: float = 1e-6, clip_norm: float | None = 1.0,
               bias_correction: bool = False):
    self.params = {k: v.copy() for k, v in params.items()}
    self.m = {k: np.zeros_like(v) for k, v in params.items()}
    self.v = {k: np.zeros_like(v) for k, v in params.items()}
    self.global_step = 0
    self.init_lr, self.num_train_steps = init_lr, num_train_steps
    self.num_warmup_steps = num_warmup_steps
    self.weight_decay_rate, self.beta_1, self.beta_2 = weight_decay_rate, beta_1, beta_2
    self.epsilon, self.clip_norm = epsilon, clip_norm
    self.bias_correction = bias_correction  # only to show the test can tell (the original: no)

  @staticmethod
  def polynomial_decay(learning_rate, global_step, decay_steps, end_learning_rate=0.0,
                       power=1.0):
    global_step = min(global_step, decay_steps)
    return ((learning_rate - end_learning_rate) * (1 - global_step / decay_steps) ** power
            + end_learning_rate)

  def learning_rate(self, global_step: int) -> float:
    lr = self.polynomial_decay(self.init_lr, global_step, self.num_train_steps,
                               end_learning_rate=0.0, power=1.0)
    if self.num_warmup_steps:
      warmup_percent_done = float(global_step) / float(self.num_warmup_steps)
      warmup_learning_rate = self.init_lr * warmup_percent_done
      is_warmup = float(global_step < self.num_warmup_steps)
      lr = (1.0 - is_warmup) * lr + is_warmup * warmup_learning_rate
    return lr

  def _do_use_weight_decay(self, param_name: str) -> bool:
    if not self.weight_decay_rate:
      return False
    for r in self.EXCLUDE_FROM_WEIGHT_DECAY:
      if re.search(r, param_name) is not None:
        return False
    return True

  @staticmethod
  def clip_by_global_norm(grads: dict[str, np.ndarray], clip_norm: float):
    global_norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
    return {k: g * clip_norm / max(global_norm, clip_norm) for k, g in grads.items()}

  def step(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if self.clip_norm:
      grads = self.clip_by_global_norm(grads, self.clip_norm)
    learning_rate = self.learning_rate(self.global_step)
    for name, grad in grads.items():
      param, m, v = self.params[name], self.m[name], self.v[name]
      next_m = self.beta_1 * m + (1.0 - self.beta_1) * grad
      next_v = self.beta_2 * v + (1.0 - self.beta_2) * np.square(grad)
      if self.bias_correction:
        t = self.global_step + 1
        update = (next_m / (1 - self.beta_1 ** t)) / (
            np.sqrt(next_v / (1 - self.beta_2 ** t)) + self.epsilon)
      else:
        update = next_m / (np.sqrt(next_v) + self.epsilon)
      if self._do_use_weight_decay(name):
        update += self.weight_decay_rate * param
      update_with_lr = learning_rate * update
      self.params[name] = param - update_with_lr
      self.m[name], self.v[name] = next_m, next_v
    self.global_step += 1
    return {k: v.copy() for k, v in self.params.items()}


def _bert_reference_run(flat, grads, **kwargs):
  ref = GoogleResearchBertOptimization(flat, **kwargs)
  return [ref.step(g) for g in grads], ref


# lr 1e-2 and weight decay 0.1 (the original's 0.01 is also run below) so that every
# ingredient moves the parameters by far more than the 1e-6 tolerance.
_BERT_KW = dict(init_lr=1e-2, num_train_steps=10, num_warmup_steps=3, weight_decay_rate=0.1)


def _bert_adam_cfg(init_lr, num_train_steps, num_warmup_steps, weight_decay_rate,
                   clip_norm=1.0):
  del num_train_steps  # passed to create_optimizer
  return _opt_cfg(name="bert_adam", learning_rate=init_lr, warmup_steps=num_warmup_steps,
                  decay="linear", end_learning_rate=0.0, weight_decay=weight_decay_rate,
                  b1=0.9, b2=0.999, eps=1e-6, clip_grad_norm=clip_norm)


@pytest.mark.parametrize("weight_decay_rate", [0.1, 0.01])
def test_bert_adam_matches_google_research_bert_optimization_py(weight_decay_rate):
  """7 steps (3 of warmup, one with gradient global norm ~6 so clipping acts) of bert_jax's
  bert_adam vs the transcription of the original, on params, m and v, to 1e-6."""
  kw = dict(_BERT_KW, weight_decay_rate=weight_decay_rate)
  params, flat = _make_params()
  grads = _make_grads(7, big_step=4)
  tx, schedule = optim.create_optimizer(_bert_adam_cfg(**kw), kw["num_train_steps"])
  got, state = _run_bert_jax(tx, params, grads)
  want, ref = _bert_reference_run(flat, grads, **kw)
  _assert_trajectories_close(got, want, atol=1e-6)

  # The moments too (the no-bias-correction state is the chain's second element).
  adam_state = state[1][0]
  assert isinstance(adam_state, optim.ScaleByAdamNoBiasState)
  for name in flat:
    np.testing.assert_allclose(_flatten(adam_state.mu)[name], ref.m[name], rtol=1e-5,
                               atol=1e-9, err_msg=name)
    np.testing.assert_allclose(_flatten(adam_state.nu)[name], ref.v[name], rtol=1e-5,
                               atol=1e-12, err_msg=name)

  # And the returned schedule is the original's learning rate, step by step.
  for step in range(12):
    np.testing.assert_allclose(float(schedule(step)), ref.learning_rate(step), rtol=1e-6,
                               atol=1e-12, err_msg=f"step {step}")


def test_bert_adam_comparison_is_discriminating():
  """The reference run of the test above differs by far more than its 1e-6 tolerance from
  the same run without clipping, with bias correction, or with decay on every parameter, so
  the match is not vacuous."""
  _, flat = _make_params()
  grads = _make_grads(7, big_step=4)
  want, _ = _bert_reference_run(flat, grads, **_BERT_KW)
  no_clip, _ = _bert_reference_run(flat, grads, **_BERT_KW, clip_norm=None)
  corrected, _ = _bert_reference_run(flat, grads, **_BERT_KW, bias_correction=True)

  class DecayAll(GoogleResearchBertOptimization):
    EXCLUDE_FROM_WEIGHT_DECAY = []

  ref = DecayAll(flat, **_BERT_KW)
  decay_all = [ref.step(g) for g in grads]
  for other in (no_clip, corrected, decay_all):
    assert _max_diff(want, other) > 1e-4


def test_bert_adam_without_clipping():
  """clip_grad_norm = 0 turns clipping off (matches the transcription with clipping off)."""
  params, flat = _make_params()
  grads = _make_grads(6, big_step=3)
  tx, _ = optim.create_optimizer(_bert_adam_cfg(**_BERT_KW, clip_norm=0.0),
                                 _BERT_KW["num_train_steps"])
  got, _ = _run_bert_jax(tx, params, grads)
  want, _ = _bert_reference_run(flat, grads, **_BERT_KW, clip_norm=None)
  _assert_trajectories_close(got, want, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 2. LAMB vs You et al. 2019, Algorithm 2; AdamW vs decoupled weight decay.


def _decays(name: str) -> bool:
  """Whether weight decay applies: the original BERT's exclusion regexes."""
  return not any(re.search(r, name)
                 for r in GoogleResearchBertOptimization.EXCLUDE_FROM_WEIGHT_DECAY)


def _schedule_ref(step, *, peak, warmup, num_steps):
  """Warmup, then linear decay from step 0 (BERT's schedule; see test 4)."""
  if warmup and step < warmup:
    return peak * step / warmup
  return peak * (1 - min(step, num_steps) / num_steps)


def _lamb_reference(flat, grads, *, lr, warmup, num_steps, b1, b2, eps, weight_decay,
                    clip_norm):
  """You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76
  minutes" (arXiv:1904.00962), Algorithm 2 (LAMB), with phi = identity and one "layer" per
  parameter tensor, as optax.lamb:

    m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2
    m^_t = m_t / (1 - b1^t) ;  v^_t = v_t / (1 - b2^t)
    r_t = m^_t / (sqrt(v^_t) + eps)
    x_{t+1} = x_t - eta_t * phi(||x_t||) / ||r_t + lambda x_t|| * (r_t + lambda x_t)

  with the trust ratio taken as 1 where ||x_t|| or ||r_t + lambda x_t|| is 0 (optax's
  scale_by_trust_ratio). lambda = weight_decay where the BERT mask decays the tensor, else 0.
  The gradients are first clipped to global norm `clip_norm` (bert_jax's create_optimizer),
  and eta_t = schedule(t - 1) (optax counts from 0, as the original BERT's global_step).
  """
  x = {k: v.copy() for k, v in flat.items()}
  m = {k: np.zeros_like(v) for k, v in flat.items()}
  v = {k: np.zeros_like(v) for k, v in flat.items()}
  history = []
  for t, g in enumerate(grads, start=1):
    if clip_norm:
      g = GoogleResearchBertOptimization.clip_by_global_norm(g, clip_norm)
    eta = _schedule_ref(t - 1, peak=lr, warmup=warmup, num_steps=num_steps)
    for name in x:
      m[name] = b1 * m[name] + (1 - b1) * g[name]
      v[name] = b2 * v[name] + (1 - b2) * g[name] ** 2
      m_hat = m[name] / (1 - b1 ** t)
      v_hat = v[name] / (1 - b2 ** t)
      lam = weight_decay if _decays(name) else 0.0
      r = m_hat / (np.sqrt(v_hat) + eps) + lam * x[name]
      x_norm, r_norm = np.linalg.norm(x[name]), np.linalg.norm(r)
      ratio = 1.0 if x_norm == 0 or r_norm == 0 else x_norm / r_norm
      x[name] = x[name] - eta * ratio * r
    history.append({k: val.copy() for k, val in x.items()})
  return history


_LAMB_KW = dict(lr=2e-2, warmup=2, num_steps=10, b1=0.9, b2=0.999, eps=1e-6,
                weight_decay=0.1, clip_norm=1.0)


def _lamb_cfg(kw, name="lamb"):
  return _opt_cfg(name=name, learning_rate=kw["lr"], warmup_steps=kw["warmup"],
                  decay="linear", end_learning_rate=0.0, b1=kw["b1"], b2=kw["b2"],
                  eps=kw["eps"], weight_decay=kw["weight_decay"],
                  clip_grad_norm=kw["clip_norm"])


def test_lamb_matches_you_et_al_algorithm_2():
  """6 LAMB steps (warmup 2, gradient norm ~6 at step 3) vs the paper's update, to 1e-6.

  The LayerNorm and output biases start at 0 (||x|| = 0: ratio 1) and nsp/bias gets zero
  gradients and no decay (||r|| = 0: ratio 1, no update)."""
  params, flat = _make_params()
  grads = _make_grads(6, big_step=3)
  tx, _ = optim.create_optimizer(_lamb_cfg(_LAMB_KW), _LAMB_KW["num_steps"])
  got, _ = _run_bert_jax(tx, params, grads)
  want = _lamb_reference(flat, grads, **_LAMB_KW)
  _assert_trajectories_close(got, want, atol=1e-6)
  np.testing.assert_array_equal(got[-1]["nsp/bias"], flat["nsp/bias"])
  assert np.all(got[-1]["mlm/output_bias"] != 0)  # moved off 0 with ratio 1

  # Not vacuous: no decay mask, or no clipping, give a visibly different trajectory.
  no_clip = _lamb_reference(flat, grads, **dict(_LAMB_KW, clip_norm=0.0))
  no_decay = _lamb_reference(flat, grads, **dict(_LAMB_KW, weight_decay=0.0))
  assert _max_diff(want, no_clip) > 1e-4 and _max_diff(want, no_decay) > 1e-4


def test_adamw_matches_decoupled_weight_decay():
  """optax-backed adamw: bias-corrected Adam plus lr * lambda * x on the masked tensors."""
  params, flat = _make_params()
  grads = _make_grads(6, big_step=2)
  kw = _LAMB_KW
  tx, _ = optim.create_optimizer(_lamb_cfg(kw, name="adamw"), kw["num_steps"])
  got, _ = _run_bert_jax(tx, params, grads)

  x = {k: val.copy() for k, val in flat.items()}
  m = {k: np.zeros_like(val) for k, val in flat.items()}
  v = {k: np.zeros_like(val) for k, val in flat.items()}
  want = []
  for t, g in enumerate(grads, start=1):
    g = GoogleResearchBertOptimization.clip_by_global_norm(g, kw["clip_norm"])
    eta = _schedule_ref(t - 1, peak=kw["lr"], warmup=kw["warmup"], num_steps=kw["num_steps"])
    for name in x:
      m[name] = kw["b1"] * m[name] + (1 - kw["b1"]) * g[name]
      v[name] = kw["b2"] * v[name] + (1 - kw["b2"]) * g[name] ** 2
      u = (m[name] / (1 - kw["b1"] ** t)) / (np.sqrt(v[name] / (1 - kw["b2"] ** t)) + kw["eps"])
      if _decays(name):
        u = u + kw["weight_decay"] * x[name]
      x[name] = x[name] - eta * u
    want.append({k: val.copy() for k, val in x.items()})
  _assert_trajectories_close(got, want, atol=1e-6)


def test_unknown_optimizer_name_raises():
  with pytest.raises(ValueError, match="optimizer.name"):
    optim.create_optimizer(_opt_cfg(name="sgd"), 10)


# ----------------------------------------------------------------------------------------------
# 3. The weight-decay mask on a real model's parameter tree.


_TINY_LAYERS = 2  # configs: bert_jax.get_config("tiny") has 2 layers (asserted below)

_DECAYED = sorted([
    "bert/embeddings/position_embeddings/embedding",
    "bert/embeddings/token_type_embeddings/embedding",
    "bert/embeddings/word_embeddings/embedding",
    *[f"bert/encoder/layers/{i}/{m}/kernel" for i in range(_TINY_LAYERS)
      for m in ("attention/qkv", "attention/output", "intermediate", "output")],
    "bert/pooler/dense/kernel",
    "mlm/transform/kernel",
    "nsp/kernel",
])
_EXCLUDED = sorted([
    "bert/embeddings/layer_norm/bias",
    "bert/embeddings/layer_norm/scale",
    *[f"bert/encoder/layers/{i}/{m}" for i in range(_TINY_LAYERS)
      for m in ("attention/layer_norm/bias", "attention/layer_norm/scale",
                "attention/output/bias", "attention/qkv/bias", "intermediate/bias",
                "layer_norm/bias", "layer_norm/scale", "output/bias")],
    "bert/pooler/dense/bias",
    "mlm/layer_norm/bias",
    "mlm/layer_norm/scale",
    "mlm/output_bias",
    "mlm/transform/bias",
    "nsp/bias",
])


@pytest.fixture(scope="module")
def tiny_model():
  """BERT-tiny's pretraining model, abstract (nnx.eval_shape: the real module tree and
  parameter names without spending seconds on initialisation)."""
  config = bert_jax.get_config("tiny", vocab_size=50)
  assert config.num_hidden_layers == _TINY_LAYERS
  return nnx.eval_shape(lambda: bert_jax.create_model(config))


def _random_like(tree, seed: int = 0):
  """Concrete float32 values (N(3, 1): non-zero) with the shapes of an abstract tree."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 1.0, s.shape) + 3.0, jnp.float32), tree)


def _mask_lists(mask) -> tuple[list[str], list[str]]:
  flat = [(_path_str(p), bool(v)) for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]]
  return (sorted(p for p, v in flat if v), sorted(p for p, v in flat if not v))


def test_weight_decay_mask_on_tiny_model(tiny_model):
  """On the pure-dict parameter tree the trainers use (nnx.to_pure_dict(nnx.state(m,
  nnx.Param))): exactly the kernels and embedding tables decay; every bias, the MLM
  output_bias and every LayerNorm scale/bias are excluded; and it agrees with the original
  BERT's regexes ("LayerNorm", "layer_norm", "bias") on the "/"-joined paths."""
  params = nnx.to_pure_dict(nnx.state(tiny_model, nnx.Param))
  decayed, excluded = _mask_lists(optim.weight_decay_mask(params))
  assert decayed == _DECAYED
  assert excluded == _EXCLUDED
  leaf_names = {p.rsplit("/", 1)[1] for p in decayed + excluded}
  assert leaf_names == {"kernel", "embedding", "bias", "scale", "output_bias"}
  assert all(_decays(p) for p in decayed) and not any(_decays(p) for p in excluded)


@pytest.mark.parametrize("task,kwargs", [("classification", {"num_labels": 3}),
                                         ("question_answering", {})])
def test_weight_decay_mask_on_finetuning_models(task, kwargs):
  """The fine-tuning heads' trees: the mask equals the original BERT's regex rule."""
  model = nnx.eval_shape(lambda: bert_jax.create_model(
      bert_jax.get_config("tiny", vocab_size=50), task, **kwargs))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  decayed, excluded = _mask_lists(optim.weight_decay_mask(params))
  assert decayed and excluded
  assert all(p.endswith(("/kernel", "/embedding")) for p in decayed), decayed
  assert all(_decays(p) for p in decayed) and not any(_decays(p) for p in excluded)


def test_weight_decay_mask_on_nnx_state(tiny_model):
  """The same mask on the nnx.State itself (what nnx.Optimizer / nnx.state users pass):
  jax flattens each nnx.Param with a trailing `.value` attribute key, so the mask must not
  judge by the last path element alone."""
  state = nnx.state(tiny_model, nnx.Param)
  decayed, excluded = _mask_lists(optim.weight_decay_mask(state))
  strip = lambda ps: sorted(p.removesuffix("/value") for p in ps)  # noqa: E731
  assert strip(excluded) == _EXCLUDED, sorted(set(_EXCLUDED) - set(strip(excluded)))
  assert strip(decayed) == _DECAYED


@pytest.mark.parametrize("name", ["bert_adam", "adamw", "lamb", "stable_adamw"])
def test_mask_reaches_the_update_on_tiny_model(tiny_model, name):
  """Through create_optimizer on the real tree, with zero gradients and no warmup the only
  update is weight decay: non-zero on every decayed tensor, exactly zero on every excluded
  one (LAMB's trust ratio included; StableAdamW's RMS is 0 there, so no clipping)."""
  params = _random_like(nnx.to_pure_dict(nnx.state(tiny_model, nnx.Param)))
  tx, _ = optim.create_optimizer(_opt_cfg(name=name, warmup_steps=0, learning_rate=1e-3), 10)
  updates = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)[0])(
      params)
  flat_updates, flat_params = _flatten(updates), _flatten(params)
  assert sorted(p for p, u in flat_updates.items() if np.any(u != 0)) == _DECAYED
  for p in _DECAYED:
    if name == "lamb":  # r = lambda x, ratio ||x|| / ||lambda x|| = 1 / lambda: lr * x
      want = -1e-3 * flat_params[p]
    else:
      want = -1e-3 * 0.01 * flat_params[p]
    np.testing.assert_allclose(flat_updates[p], want, rtol=1e-5, atol=1e-12, err_msg=p)


# ----------------------------------------------------------------------------------------------
# 4. The learning-rate schedules.


def _sched(**kw):
  base = dict(learning_rate=2.0, warmup_steps=10, num_steps=100, decay="linear", power=1.0,
              end_learning_rate=0.0)
  base.update(kw)
  return optim.learning_rate_schedule(**base)


def _check(schedule, expected: dict[int, float]):
  for step, want in expected.items():
    np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-6, atol=1e-7,
                               err_msg=f"step {step}")
    np.testing.assert_allclose(float(schedule(jnp.asarray(step, jnp.int32))), want,
                               rtol=1e-6, atol=1e-7, err_msg=f"traced step {step}")


def test_warmup_then_linear_decay_exact_values():
  """peak 2, warmup 10, 100 steps: BERT's linear decay runs from step 0 (not from the end of
  warmup), so at the end of warmup the rate is 2 * (1 - 10/100) = 1.8, not the peak."""
  _check(_sched(), {
      0: 0.0,
      5: 1.0,            # mid-warmup: 2 * 5/10
      9: 1.8,            # last warmup step: 2 * 9/10
      10: 1.8,           # warmup end: 2 * (1 - 10/100)
      55: 0.9,           # mid-decay: 2 * (1 - 55/100)
      99: 0.02,
      100: 0.0,          # num_steps
      150: 0.0,          # past the end (cycle=False)
  })
  ref = GoogleResearchBertOptimization({}, init_lr=2.0, num_train_steps=100,
                                       num_warmup_steps=10)
  for step in range(0, 120, 7):
    np.testing.assert_allclose(float(_sched()(step)), ref.learning_rate(step), rtol=1e-6,
                               atol=1e-7, err_msg=f"step {step}")


def test_linear_decay_ignores_power_and_warmup_zero():
  _check(_sched(power=3.0), {50: 1.0})
  _check(_sched(warmup_steps=0), {0: 2.0, 25: 1.5, 100: 0.0})


def test_polynomial_decay():
  """(peak - end) * (1 - step/N) ** power + end, warmup still peak * step / warmup."""
  s = _sched(decay="polynomial", power=2.0, end_learning_rate=0.2)
  _check(s, {
      4: 0.8,                                   # 2 * 4/10
      10: 1.8 * 0.9 ** 2 + 0.2,
      50: 1.8 * 0.25 + 0.2,
      100: 0.2,
      200: 0.2,
  })


def test_cosine_decay():
  """Cosine from the end of warmup (step 10, the peak) to end_learning_rate at num_steps."""
  s = _sched(decay="cosine", num_steps=110, end_learning_rate=0.2)
  _check(s, {
      5: 1.0,
      10: 2.0,
      35: 0.2 + 1.8 * 0.5 * (1 + np.cos(np.pi * 0.25)),
      60: 1.1,                                  # half way: 0.2 + 1.8 / 2
      110: 0.2,
      500: 0.2,
  })


def test_constant_decay():
  _check(_sched(decay="constant"), {0: 0.0, 3: 0.6, 10: 2.0, 100: 2.0, 10_000: 2.0})


def test_unknown_decay_raises():
  with pytest.raises(ValueError, match="optimizer.decay"):
    _sched(decay="exponential")


def test_create_optimizer_schedule_uses_config():
  """create_optimizer's schedule reads learning_rate / warmup_steps / decay / power /
  end_learning_rate from the config and num_steps from its argument."""
  cfg = _opt_cfg(learning_rate=2.0, warmup_steps=10, decay="polynomial", power=2.0,
                 end_learning_rate=0.2)
  _, schedule = optim.create_optimizer(cfg, 100)
  _check(schedule, {5: 1.0, 50: 1.8 * 0.25 + 0.2, 100: 0.2})


# ----------------------------------------------------------------------------------------------
# 5. wsd (warmup-stable-decay) against ModernBERT's schedulers; the keys added for it.


def composer_linear_scheduler(t, *, alpha_i, alpha_f, t_max):
  """composer/optim/scheduler.py `LinearScheduler.__call__`:
  frac_of_total = min(1.0, (current_time / t_max).value);
  return alpha_i + frac_of_total * (alpha_f - alpha_i)."""
  return alpha_i + min(1.0, t / t_max) * (alpha_f - alpha_i)


def modernbert_warmup_stable_decay(t, *, t_warmup, t_decay, t_max, alpha_f):
  """AnswerDotAI/ModernBERT src/scheduler.py `WarmupStableDecayScheduler.__call__` (commit
  8c57a0f0), a learning-rate multiplier at `t` batches:

    if state.timestamp < t_warmup: return LinearScheduler(alpha_i=1e-10, alpha_f=1.0,
                                                          t_max=t_warmup)(state)
    elif state.timestamp < t_max - t_decay: return 1.0
    else: current_decay_fraction = (current_time - (t_max - t_decay)) / t_decay
          lr_scale = 1 - current_decay_fraction.value * (1 - self.alpha_f)
          return max(0.0, lr_scale)
  """
  if t < t_warmup:
    return composer_linear_scheduler(t, alpha_i=1e-10, alpha_f=1.0, t_max=t_warmup)
  if t < t_max - t_decay:
    return 1.0
  return max(0.0, 1 - (t - (t_max - t_decay)) / t_decay * (1 - alpha_f))


def modernbert_one_minus_sqrt(t, *, t_decay, t_max, alpha_f):
  """The same file's `OneMinusSqrtScheduler.__call__` (no warmup of its own):

    if current_time <= t_max - t_decay: return 1.0
    relative_time = (current_time - (t_max - t_decay)) / t_decay
    lr_scale = self.alpha_f + (1 - self.alpha_f) * (1 - math.sqrt(relative_time.value))
    return max(self.alpha_f, lr_scale)
  """
  if t <= t_max - t_decay:
    return 1.0
  return max(alpha_f, alpha_f + (1 - alpha_f) * (1 - np.sqrt((t - (t_max - t_decay)) / t_decay)))


def test_wsd_linear_exact_values():
  """peak 2, warmup 10, 100 steps, the last 20 decaying linearly to 0.2."""
  _check(_sched(decay="wsd", decay_steps=20, end_learning_rate=0.2), {
      5: 1.0,            # warmup
      10: 2.0,           # warmup end: the peak (held, not decayed from step 0 as "linear")
      50: 2.0,           # plateau
      80: 2.0,           # decay start: num_steps - decay_steps
      90: 1.1,           # half way: 2 - 1.8 / 2
      99: 2.0 - 1.8 * 0.95,
      100: 0.2,          # num_steps
      150: 0.2,          # past the end
  })


def test_wsd_one_minus_sqrt_exact_values():
  s = _sched(decay="wsd", decay_steps=20, end_learning_rate=0.2, wsd_decay_shape="1-sqrt")
  _check(s, {5: 1.0, 10: 2.0, 80: 2.0, 85: 2.0 - 1.8 * 0.5, 95: 2.0 - 1.8 * np.sqrt(0.75),
             100: 0.2, 150: 0.2})


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
@pytest.mark.parametrize("warmup,decay_steps", [(10, 20), (0, 100), (7, 93), (10, 1)])
def test_wsd_matches_modernbert_schedulers(shape, warmup, decay_steps):
  """Every step 0..100: peak * ModernBERT's multiplier, alpha_f = end / peak. linear is its
  WarmupStableDecayScheduler; 1-sqrt is composer's warmup then its OneMinusSqrtScheduler
  (ModernBERT's decay phase: warmup 0, t_decay = t_max = the run). Composer's warmup starts
  at 1e-10 * peak where ours starts at 0, within the tolerance."""
  peak, end, num_steps = 2.0, 0.02, 100
  s = _sched(learning_rate=peak, warmup_steps=warmup, num_steps=num_steps, decay="wsd",
             decay_steps=decay_steps, end_learning_rate=end, wsd_decay_shape=shape)
  for t in range(num_steps + 1):
    if shape == "linear":
      want = modernbert_warmup_stable_decay(t, t_warmup=warmup, t_decay=decay_steps,
                                            t_max=num_steps, alpha_f=end / peak)
    elif t < warmup:
      want = composer_linear_scheduler(t, alpha_i=1e-10, alpha_f=1.0, t_max=warmup)
    else:
      want = modernbert_one_minus_sqrt(t, t_decay=decay_steps, t_max=num_steps,
                                       alpha_f=end / peak)
    np.testing.assert_allclose(float(s(t)), peak * want, rtol=1e-6, atol=1e-6, err_msg=f"{t}")


def test_wsd_decay_steps_default_and_zero():
  """decay_steps -1: the last 10% (composer's t_decay="0.1dur"); 0: no decay at all, the peak
  held after warmup (ModernBERT's pretraining phase, t_decay: 0tok)."""
  _check(_sched(decay="wsd", decay_steps=-1), {85: 2.0, 90: 2.0, 95: 1.0, 100: 0.0})
  _check(_sched(decay="wsd", decay_steps=0), {5: 1.0, 10: 2.0, 99: 2.0, 100: 2.0, 500: 2.0})


def test_unknown_wsd_shape_raises():
  with pytest.raises(ValueError, match="optimizer.wsd_decay_shape 'cosine' is not one of "
                     "linear, 1-sqrt"):
    _sched(decay="wsd", wsd_decay_shape="cosine")


def test_create_optimizer_reads_the_wsd_keys():
  cfg = _opt_cfg(learning_rate=2.0, warmup_steps=10, decay="wsd", decay_steps=20,
                 wsd_decay_shape="1-sqrt", end_learning_rate=0.2)
  _, schedule = optim.create_optimizer(cfg, 100)
  _check(schedule, {50: 2.0, 85: 1.1, 100: 0.2})


def test_configs_without_the_keys_added_later():
  """A fine-tuning optimizer section and an older run's config.json (resumed) lack
  decay_steps, wsd_decay_shape and decouple_lr: create_optimizer and validate_config take
  their defaults (training/config.py _ADDED_LATER)."""
  from configs.finetune import default as finetune_default
  new_keys = ("decay_steps", "wsd_decay_shape", "decouple_lr")
  finetune = finetune_default.get_config().optimizer
  assert not any(k in finetune for k in new_keys)
  finetune.decay = "wsd"
  _, schedule = optim.create_optimizer(finetune, 100)  # decay_steps -1: the last 10 steps
  _check(schedule, {89: finetune.learning_rate, 100: 0.0})

  old = tiny_config(**{"optimizer.decay": "wsd"})
  old = ml_collections.ConfigDict(json.loads(old.to_json_best_effort()))  # a config.json
  for k in new_keys:
    del old.optimizer[k]
  config_lib.validate_config(old)
  optim.create_optimizer(old.optimizer, old.train.num_steps)


def test_wsd_config_errors():
  """tiny_config: 6 steps, warmup 2, so at most 4 decay steps."""
  config_lib.validate_config(tiny_config(**{"optimizer.decay": "wsd",
                                            "optimizer.decay_steps": 4}))
  config_lib.validate_config(tiny_config(**{"optimizer.decay_steps": 50}))  # not wsd: unread
  cases = [
      ({"optimizer.decay_steps": 5},
       "--config.optimizer.decay_steps=5 exceeds train.num_steps - optimizer.warmup_steps = 4; "
       "shorten the decay or the warmup"),
      ({"optimizer.decay_steps": -1, "train.num_steps": 100, "optimizer.warmup_steps": 95},
       "--config.optimizer.decay_steps=-1 (the last 10%: 10) exceeds train.num_steps - "
       "optimizer.warmup_steps = 5; shorten the decay or the warmup"),
      ({"optimizer.decay_steps": -2},
       "--config.optimizer.decay_steps=-2 must be >= 0 (or -1: the last 10% of "
       "train.num_steps)"),
      ({"optimizer.wsd_decay_shape": "sqrt"},
       "--config.optimizer.wsd_decay_shape='sqrt' is not one of linear, 1-sqrt"),
  ]
  for overrides, message in cases:
    with pytest.raises(config_lib.ConfigError) as e:
      config_lib.validate_config(tiny_config(**{"optimizer.decay": "wsd", **overrides}))
    assert str(e.value) == message
