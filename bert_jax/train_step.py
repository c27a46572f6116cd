"""The pretraining step: MLM + NSP loss, gradients, the optimizer update. Pure functions.

`make_train_step(...)` returns `train_step(state, batch) -> (state, metrics)`: the exact
function `bert_jax.train` jits (with shardings and donation) and `benchmarks/train_step.py`
times. Batch (global arrays): input_ids, token_type_ids, attention_mask [B, L] int32;
masked_positions, masked_ids [B, P] int32; masked_weights [B, P] float32;
next_sentence_label [B] int32. Packed rows (several sequences per row, input_pipeline's
`pack`) add PACKED_KEYS: segment_ids, position_ids [B, L] int32 and cls_positions [B, S]
int32, and next_sentence_label becomes [B, S] with nsp_weights [B, S] float32 (1 = a sequence).

Loss (google-research/bert run_pretraining.py): MLM = sum(w * nll) / (sum(w) + 1e-5) over the
gathered masked positions of the whole global batch; NSP = mean cross-entropy over the batch's
sequences; total = MLM + NSP. A packed batch holding the same sequences as an unpacked one gives
the same loss (tests/train/test_train_step.py).
With gradient accumulation each micro-batch's sums are normalised by the WHOLE batch's weight
and size, so accumulated gradients equal the full-batch gradients exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_positions", "masked_ids",
              "masked_weights", "next_sentence_label")
_PACKED_MODEL_INPUTS = ("segment_ids", "position_ids", "cls_positions")  # model(...) kwargs
PACKED_KEYS = _PACKED_MODEL_INPUTS + ("nsp_weights",)


def batch_keys(batch: dict) -> tuple[str, ...]:
  """BATCH_KEYS, plus PACKED_KEYS when `batch` is packed."""
  return BATCH_KEYS + (PACKED_KEYS if "segment_ids" in batch else ())


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []: batches consumed (updates applied + skipped)
  params: dict  # nested dicts of float32 arrays (nnx.to_pure_dict of the model's Params)
  opt_state: Any  # optax state over params
  rng: jax.Array  # uint32 [2]: dropout key data (raw, so Orbax saves it as an array)
  skipped_steps: jax.Array  # int32 []: steps whose non-finite update was not applied


def new_train_state(params: dict, tx: optax.GradientTransformation,
                    rng: jax.Array) -> TrainState:
  """Step 0 around `params` with a fresh optimizer state; rng: uint32 [2] key data."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=rng, skipped_steps=jnp.zeros((), jnp.int32))


def apply_gradients(state: TrainState, grads, loss, tx: optax.GradientTransformation
                    ) -> tuple[TrainState, jax.Array, jax.Array]:
  """The optimizer update, applied only when loss and gradients are finite (otherwise params
  and optimizer state stay as they were and `skipped_steps` counts it). Returns
  (new state, gradient global norm, finite).

  A `lax.cond`, not a select between new and old values: only the taken branch runs, the update
  writes the donated buffers in place, and a select would read the old and new state of every
  parameter and moment (plus copies to keep the old ones alive): ~35% of the optimizer's time
  on CPU for BERT-Base."""
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def update(operands):
    params, opt_state = operands
    updates, new_opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt_state

  params, opt_state = jax.lax.cond(finite, update, lambda operands: operands,
                                   (state.params, state.opt_state))
  return state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      skipped_steps=state.skipped_steps + jnp.where(finite, 0, 1).astype(jnp.int32),
  ), grad_norm, finite


def _pretraining_sums(model, batch, rng):
  """Per-micro-batch sums: weighted MLM nll, weights, correct; NSP nll, correct, count."""
  packed = {k: batch[k] for k in _PACKED_MODEL_INPUTS if k in batch}
  out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
              batch["masked_positions"], deterministic=rng is None, dropout_rng=rng, **packed)
  weights = batch["masked_weights"].astype(jnp.float32)  # [B, P]
  example_weight = batch.get("example_weight")  # eval padding; absent in training
  if example_weight is not None:
    weights = weights * example_weight[:, None]
  mlm_nll = optax.softmax_cross_entropy_with_integer_labels(out.mlm_logits,
                                                            batch["masked_ids"])  # [B, P]
  mlm_correct = (jnp.argmax(out.mlm_logits, -1) == batch["masked_ids"]).astype(jnp.float32)
  nsp_nll = optax.softmax_cross_entropy_with_integer_labels(
      out.nsp_logits, batch["next_sentence_label"])  # [B] ([B, S] packed)
  nsp_correct = (jnp.argmax(out.nsp_logits, -1) == batch["next_sentence_label"]).astype(
      jnp.float32)
  if "nsp_weights" in batch:  # packed: one NSP prediction per sequence in the row
    ew = batch["nsp_weights"].astype(jnp.float32)
  elif example_weight is not None:
    ew = example_weight.astype(jnp.float32)
  else:
    ew = jnp.ones_like(nsp_nll)
  return {
      "mlm_nll": jnp.sum(weights * mlm_nll), "mlm_weight": jnp.sum(weights),
      "mlm_correct": jnp.sum(weights * mlm_correct),
      "nsp_nll": jnp.sum(ew * nsp_nll), "nsp_correct": jnp.sum(ew * nsp_correct),
      "nsp_count": jnp.sum(ew),
  }


def _split_micro(batch: dict, num: int) -> dict:
  """[B, ...] -> [num, B/num, ...], micro-batch i = rows i, i+num, ... (stays spread over
  every data-parallel shard as long as the per-device batch divides by num)."""
  def f(x):
    return x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(f, batch)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, grad_accum_steps: int = 1,
                    dropout: bool = True) -> Callable:
  """train_step(state, batch) -> (new_state, metrics). Non-finite loss or gradients: the update
  is not applied (params and optimizer state stay as they were) and `skipped_steps` counts it;
  the caller decides whether to stop (train.on_nonfinite)."""

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    batch = {k: batch[k] for k in batch_keys(batch)}
    total_weight = jnp.sum(batch["masked_weights"].astype(jnp.float32))
    total_examples = (jnp.sum(batch["nsp_weights"].astype(jnp.float32)) if "nsp_weights" in batch
                      else batch["next_sentence_label"].shape[0])
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params, micro, rng):
      model = nnx.merge(graphdef, params)
      sums = _pretraining_sums(model, micro, rng if dropout else None)
      mlm = sums["mlm_nll"] / (total_weight + 1e-5)
      nsp = sums["nsp_nll"] / total_examples
      return mlm + nsp, sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
      (loss, sums), grads = grad_fn(state.params, batch, step_rng)
    else:
      micro_batches = _split_micro(batch, grad_accum_steps)

      def accumulate(carry, xs):
        micro, index = xs
        (loss_i, sums_i), grads_i = grad_fn(state.params, micro,
                                            jax.random.fold_in(step_rng, index))
        loss, sums, grads = carry
        return (loss + loss_i, jax.tree.map(jnp.add, sums, sums_i),
                jax.tree.map(jnp.add, grads, grads_i)), None

      zeros = (jnp.zeros((), jnp.float32),
               {k: jnp.zeros((), jnp.float32) for k in ("mlm_nll", "mlm_weight",
                                                        "mlm_correct", "nsp_nll",
                                                        "nsp_correct", "nsp_count")},
               jax.tree.map(jnp.zeros_like, state.params))
      (loss, sums, grads), _ = jax.lax.scan(
          accumulate, zeros, (micro_batches, jnp.arange(grad_accum_steps)))

    applied = state.step - state.skipped_steps  # optimizer updates so far
    new_state, grad_norm, finite = apply_gradients(state, grads, loss, tx)
    metrics = {
        "loss": loss,
        "mlm_loss": sums["mlm_nll"] / (sums["mlm_weight"] + 1e-5),
        "mlm_accuracy": sums["mlm_correct"] / (sums["mlm_weight"] + 1e-5),
        "nsp_loss": sums["nsp_nll"] / sums["nsp_count"],
        "nsp_accuracy": sums["nsp_correct"] / sums["nsp_count"],
        "grad_norm": grad_norm,
        "learning_rate": schedule(applied),
        "finite": finite,
        "skipped_steps": new_state.skipped_steps,
        "sequences": sums["nsp_count"],  # sequences in the batch (more than rows when packed)
        "tokens": jnp.sum(batch["attention_mask"].astype(jnp.float32)),  # non-padding tokens
    }
    return new_state, metrics

  return train_step


def make_eval_step(graphdef: nnx.GraphDef) -> Callable:
  """eval_step(params, batch) -> sums (add them over batches; see `eval_summary`).
  `example_weight` [B] (0 for padding examples) is honoured when present."""

  def eval_step(params, batch):
    model = nnx.merge(graphdef, params)
    return _pretraining_sums(model, batch, None)

  return eval_step


def eval_summary(sums: dict) -> dict:
  """Totals of eval_step sums -> mlm/nsp loss and accuracy."""
  w, n = sums["mlm_weight"] + 1e-5, max(sums["nsp_count"], 1e-5)
  return {"mlm_loss": sums["mlm_nll"] / w, "mlm_accuracy": sums["mlm_correct"] / w,
          "nsp_loss": sums["nsp_nll"] / n, "nsp_accuracy": sums["nsp_correct"] / n,
          "loss": sums["mlm_nll"] / w + sums["nsp_nll"] / n}
