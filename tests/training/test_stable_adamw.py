"""optimizer.name=stable_adamw (bert_jax.training.optim) against a numpy transcription of optimi's
StableAdamW, the optimizer ModernBERT trains with.

References are float64 numpy; bert_jax runs in float32. The schedules (wsd included) are tested
in test_optim.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax.training import config as config_lib
from bert_jax.training import optim
from configs import default as default_config
from helpers import tiny_config


# ----------------------------------------------------------------------------------------------
# Helpers: a small tree with bert_jax's parameter names, flattened to "a/b/c" for the reference.


_SHAPES = {
    "bert/embeddings/word_embeddings/embedding": (11, 8),
    "bert/embeddings/layer_norm/scale": (8,),
    "bert/embeddings/layer_norm/bias": (8,),
    "bert/encoder/layers/0/attention/qkv/kernel": (8, 3, 2, 4),
    "bert/encoder/layers/0/attention/qkv/bias": (3, 2, 4),
    "bert/encoder/layers/0/intermediate/kernel": (8, 16),
    "bert/encoder/layers/0/intermediate/bias": (16,),
    "mlm/output_bias": (11,),
    "nsp/kernel": (8, 2),
    "nsp/bias": (2,),
}
# The tensors whose gradient jumps 100x at the spike step (clipped there); the others keep
# their scale (not clipped: the same step has clipped and unclipped tensors).
_SPIKED = ("bert/encoder/layers/0/attention/qkv/kernel", "bert/embeddings/layer_norm/scale",
           "nsp/kernel", "mlm/output_bias")


def _path_str(path) -> str:
  return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def _flatten(tree) -> dict[str, np.ndarray]:
  return {_path_str(p): np.asarray(x, np.float64)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflatten_like(tree, flat: dict[str, np.ndarray]):
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(flat[_path_str(p)], jnp.float32) for p, _ in leaves])


def _make_params(seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
  """(nested pure-dict params, the same flattened as float64); layer indices are int keys as
  nnx.to_pure_dict gives, LayerNorm scales start at 1, LayerNorm / output biases at 0."""
  rng = np.random.default_rng(seed)
  flat, nested = {}, {}
  for name, shape in _SHAPES.items():
    if name.endswith("layer_norm/scale"):
      value = np.ones(shape)
    elif name.endswith("layer_norm/bias") or name == "mlm/output_bias":
      value = np.zeros(shape)
    else:
      value = rng.normal(0.0, 0.5, shape)
    flat[name] = value.astype(np.float32).astype(np.float64)
    node = nested
    keys = [int(k) if k.isdigit() else k for k in name.split("/")]
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = jnp.asarray(flat[name], jnp.float32)
  return nested, flat


def _make_grads(num_steps: int, *, spike_step: int | None, shrink: float = 0.8,
                seed: int = 1) -> list[dict[str, np.ndarray]]:
  """g_t = shrink**t * (random signs) * |base|, |base| ~ |N(0, 0.01)| fixed per tensor: every
  element's g_t^2 is below its running average v_hat_t after step 1 (RMS < 1, no clipping),
  except that at `spike_step` the _SPIKED tensors get 100x (RMS > 1: clipped). nsp/bias always
  gets zeros (RMS 0 / eps^2 = 0: no update, no NaN)."""
  rng = np.random.default_rng(seed)
  base = {name: np.abs(rng.normal(0.0, 0.01, shape)) for name, shape in _SHAPES.items()}
  out = []
  for step in range(num_steps):
    g = {}
    for name, shape in _SHAPES.items():
      scale = shrink ** step * (100.0 if step == spike_step and name in _SPIKED else 1.0)
      signs = rng.choice([-1.0, 1.0], shape)
      g[name] = (scale * signs * base[name]).astype(np.float32).astype(np.float64)
    g["nsp/bias"] = np.zeros(_SHAPES["nsp/bias"])
    out.append(g)
  return out


def _run_bert_jax(tx, params: dict, grads: list[dict[str, np.ndarray]]) -> list[dict]:
  state = tx.init(params)
  update = jax.jit(tx.update)
  history = []
  for g in grads:
    updates, state = update(_unflatten_like(params, g), state, params)
    params = optax.apply_updates(params, updates)
    history.append(_flatten(params))
  return history


def _assert_trajectories_close(got: list[dict], want: list[dict], atol: float = 1e-6):
  for step, (g, w) in enumerate(zip(got, want)):
    assert set(g) == set(w)
    for name in w:
      np.testing.assert_allclose(g[name], w[name], rtol=0, atol=atol,
                                 err_msg=f"step {step}: {name}")


def _max_diff(a: list[dict], b: list[dict]) -> float:
  return max(float(np.max(np.abs(x[n] - y[n]))) for x, y in zip(a, b) for n in x)


# ----------------------------------------------------------------------------------------------
# The reference: optimi's StableAdamW, transcribed.


def debias_beta(beta: float, step: int) -> float:
  """optimi/utils.py: `(beta**step - beta) / (beta**step - 1)`, the bias correction folded into
  beta (beta_hat = beta * (1 - beta**(step - 1)) / (1 - beta**step))."""
  return (beta ** step - beta) / (beta ** step - 1)


def modernbert_no_decay(name: str, shape: tuple) -> bool:
  """ModernBERT main.py `param_groups_weight_decay` (filter_bias_norm_wd: true) on a "."-joined
  name: `param.ndim <= 1 or name.endswith(".bias")` goes to the weight_decay=0 group."""
  return len(shape) <= 1 or name.replace("/", ".").endswith(".bias")


class OptimiStableAdamW:
  """numpy transcription of optimi's StableAdamW step (warner-benjamin/optimi,
  optimi/stableadamw.py, read from the stored copy at commit 02d8e75b; ModernBERT's
  src/optimizer.py `_foreach_stableadamw` at AnswerDotAI/ModernBERT 8c57a0f0 is the same):

    stableadamw():   step.add_(1); beta1_hat = debias_beta(beta1, step); beta1_comp = 1 - beta1_hat
                     beta2_hat = debias_beta(beta2, step); beta2_comp = 1 - beta2_hat
    _single_param_stableadamw():
      exp_avg.lerp_(grad, weight=beta1_comp)
      exp_avg_sq.mul_(beta2_hat).addcmul_(grad, grad, value=beta2_comp)
      rms = grad.pow(2).div_(exp_avg_sq.maximum(eps_sq)).mean().sqrt()     # eps_sq = eps**2
      lr = lr / max(1, rms.item())
      if weight_decay != 0:
        if decouple_lr: weight_decay = 1 - (lr / max_lr) * weight_decay
        else:           weight_decay = 1 - lr * weight_decay
        param.mul_(weight_decay)
      param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(eps), value=-lr)

  with max_lr = the constructor's lr when decouple_lr (optimi/optimizer.py), two parameter
  groups as ModernBERT builds them (`modernbert_no_decay`: weight_decay 0), the group lr set by
  the scheduler before each step (`lr_at(k)` for the k-th step, from 0), and, when `clip_norm`,
  the gradients first clipped to that global norm (t * clip / max(norm, clip)). `clip_updates`
  False replaces max(1, rms) by 1 (only to show the test can tell).
  """

  def __init__(self, params, *, lr_at, max_lr, betas, eps, weight_decay, decouple_lr,
               clip_norm=0.0, clip_updates=True):
    self.params = {k: v.copy() for k, v in params.items()}
    self.exp_avg = {k: np.zeros_like(v) for k, v in params.items()}
    self.exp_avg_sq = {k: np.zeros_like(v) for k, v in params.items()}
    self.wd = {k: 0.0 if modernbert_no_decay(k, v.shape) else weight_decay
               for k, v in params.items()}
    self.lr_at, self.max_lr, (self.beta1, self.beta2), self.eps = lr_at, max_lr, betas, eps
    self.decouple_lr, self.clip_norm, self.clip_updates = decouple_lr, clip_norm, clip_updates
    self.step_count = 0
    self.rms_history: list[dict[str, float]] = []

  def step(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if self.clip_norm:
      norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
      grads = {k: g * self.clip_norm / max(norm, self.clip_norm) for k, g in grads.items()}
    group_lr = self.lr_at(self.step_count)
    self.step_count += 1
    beta1_comp = 1 - debias_beta(self.beta1, self.step_count)
    beta2_hat = debias_beta(self.beta2, self.step_count)
    beta2_comp = 1 - beta2_hat
    rms_now = {}
    for name, grad in grads.items():
      exp_avg, exp_avg_sq, param = self.exp_avg[name], self.exp_avg_sq[name], self.params[name]
      exp_avg += beta1_comp * (grad - exp_avg)                       # lerp_
      exp_avg_sq *= beta2_hat
      exp_avg_sq += beta2_comp * grad * grad                        # addcmul_
      rms = float(np.sqrt(np.mean(grad ** 2 / np.maximum(exp_avg_sq, self.eps ** 2))))
      rms_now[name] = rms
      lr = group_lr / max(1.0, rms) if self.clip_updates else group_lr
      weight_decay = self.wd[name]
      if weight_decay != 0:
        if self.decouple_lr:
          weight_decay = 1 - (lr / self.max_lr) * weight_decay
        else:
          weight_decay = 1 - lr * weight_decay
        param *= weight_decay
      param += -lr * exp_avg / (np.sqrt(exp_avg_sq) + self.eps)     # addcdiv_
    self.rms_history.append(rms_now)
    return {k: v.copy() for k, v in self.params.items()}


def _lr_at(step, *, peak, warmup, num_steps):
  """configs' decay=linear schedule (BERT's: warmup, then linear from step 0; test_optim.py)."""
  if warmup and step < warmup:
    return peak * step / warmup
  return peak * (1 - min(step, num_steps) / num_steps)


_KW = dict(lr=2e-2, warmup=2, num_steps=10, b1=0.9, b2=0.98, eps=1e-6)


def _cfg(*, weight_decay, decouple_lr, clip_norm, name="stable_adamw"):
  cfg = default_config.get_config().optimizer
  cfg.update(name=name, learning_rate=_KW["lr"], warmup_steps=_KW["warmup"], decay="linear",
             end_learning_rate=0.0, b1=_KW["b1"], b2=_KW["b2"], eps=_KW["eps"],
             weight_decay=weight_decay, decouple_lr=decouple_lr, clip_grad_norm=clip_norm)
  return cfg


def _reference(flat, grads, **kw):
  ref = OptimiStableAdamW(
      flat, lr_at=lambda s: _lr_at(s, peak=_KW["lr"], warmup=_KW["warmup"],
                                   num_steps=_KW["num_steps"]),
      max_lr=_KW["lr"], betas=(_KW["b1"], _KW["b2"]), eps=_KW["eps"], **kw)
  return [ref.step(g) for g in grads], ref.rms_history


# ----------------------------------------------------------------------------------------------
# The update.


def test_weight_decay_mask_is_modernberts_filter_bias_norm_wd():
  """On bert_jax's names, optim.weight_decay_mask excludes exactly what ModernBERT's
  filter_bias_norm_wd does (1-D tensors and biases), so the reference's groups are ours."""
  params, _ = _make_params()
  mask = _flatten(optim.weight_decay_mask(params))
  assert {k: not bool(v) for k, v in mask.items()} == {
      k: modernbert_no_decay(k, s) for k, s in _SHAPES.items()}


@pytest.mark.parametrize("decouple_lr,weight_decay,clip_norm", [
    (False, 0.1, 0.0),    # optimi's default (ModernBERT's `stableadamw`)
    (True, 2e-3, 0.0),    # fully decoupled (ModernBERT's `decoupled_stableadamw`)
    (False, 0.1, 1.0),    # with our global-norm clipping first
])
def test_matches_optimi_with_update_clipping_active(decouple_lr, weight_decay, clip_norm):
  """8 steps (warmup 2, linear decay) whose step 5 multiplies four tensors' gradients by 100:
  their RMS exceeds 1 there (clipped) while the others' stays below (not clipped); to 1e-6."""
  params, flat = _make_params()
  grads = _make_grads(8, spike_step=5)
  cfg = _cfg(weight_decay=weight_decay, decouple_lr=decouple_lr, clip_norm=clip_norm)
  tx, _ = optim.create_optimizer(cfg, _KW["num_steps"])
  got = _run_bert_jax(tx, params, grads)
  kw = dict(weight_decay=weight_decay, decouple_lr=decouple_lr, clip_norm=clip_norm)
  want, rms = _reference(flat, grads, **kw)
  _assert_trajectories_close(got, want)

  # The clipping is active where intended, and only there.
  assert all(rms[5][n] > 1.5 for n in _SPIKED), rms[5]
  assert all(r < 1.0 for step in rms[1:] for n, r in step.items() if n not in _SPIKED), rms
  assert rms[0]["nsp/kernel"] <= 1.0 + 1e-12  # step 1: v_hat = g^2, RMS <= 1
  np.testing.assert_array_equal(got[-1]["nsp/bias"], flat["nsp/bias"])  # zero grads, no decay
  # Not vacuous: without the clipping, or with the other weight-decay coupling, it differs.
  no_clip, _ = _reference(flat, grads, **kw, clip_updates=False)
  other, _ = _reference(flat, grads, **dict(kw, decouple_lr=not decouple_lr))
  assert _max_diff(want, no_clip) > 1e-4 and _max_diff(want, other) > 1e-4


def test_matches_optimi_and_adamw_with_update_clipping_inactive():
  """Gradients that shrink each step never outgrow their running average (RMS <= 1):
  StableAdamW is then AdamW, optax's (optimizer.name=adamw) and optimi's alike."""
  params, flat = _make_params()
  grads = _make_grads(8, spike_step=None)
  got = _run_bert_jax(optim.create_optimizer(
      _cfg(weight_decay=0.1, decouple_lr=False, clip_norm=0.0), _KW["num_steps"])[0],
      params, grads)
  want, rms = _reference(flat, grads, weight_decay=0.1, decouple_lr=False)
  assert all(r <= 1.0 + 1e-12 for step in rms for r in step.values()), rms
  _assert_trajectories_close(got, want)
  adamw = _run_bert_jax(optim.create_optimizer(
      _cfg(name="adamw", weight_decay=0.1, decouple_lr=False, clip_norm=0.0),
      _KW["num_steps"])[0], params, grads)
  _assert_trajectories_close(got, adamw)


def test_state_is_adams_moments_placed_like_the_params():
  """The state is scale_by_adam's (count, mu, nu) and the schedule's count, nothing more;
  optax.tree_map_params (what train_state.state_layout shards the state with) finds mu and nu
  as parameter-shaped."""
  params, _ = _make_params()
  tx, _ = optim.create_optimizer(_cfg(weight_decay=0.1, decouple_lr=False, clip_norm=1.0), 10)
  state = tx.init(params)
  marked = optax.tree_map_params(tx, lambda _: "param", state,
                                 transform_non_params=lambda _: "other")
  leaves = jax.tree.leaves(marked)
  assert leaves.count("param") == 2 * len(_SHAPES) and leaves.count("other") == 2


def test_decouple_lr_needs_stable_adamw():
  cfg = _cfg(name="adamw", weight_decay=0.1, decouple_lr=True, clip_norm=0.0)
  with pytest.raises(ValueError, match="optimizer.decouple_lr applies to stable_adamw only"):
    optim.create_optimizer(cfg, 10)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate_config(tiny_config(**{"optimizer.decouple_lr": True}))
  assert str(e.value) == ("--config.optimizer.decouple_lr=True needs optimizer.name=stable_adamw "
                          "(not 'bert_adam'); set decouple_lr=False")
  config_lib.validate_config(tiny_config(**{"optimizer.decouple_lr": True,
                                            "optimizer.name": "stable_adamw"}))


def test_unknown_name_lists_stable_adamw():
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate_config(tiny_config(**{"optimizer.name": "sgd"}))
  assert str(e.value) == ("--config.optimizer.name='sgd' is not one of bert_adam, adamw, lamb, "
                          "stable_adamw")
