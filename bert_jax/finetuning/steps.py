"""Fine-tuning building blocks: task losses, the sharded train state, jitted train / predict steps.

The same machinery as pretraining (`training.pretraining.build`): parameters placed by their logical axis
names through `sharding.param_shardings` on the (data, fsdp, tensor) mesh, optimizer state
sharded like its parameters, the batch split over data × fsdp, `train_step` jitted with
explicit shardings and the state donated; `TrainState` is pretraining's, so Orbax checkpoints
(`bert_jax.training.checkpointing.Checkpointer`) save and resume it the same way.

Losses (B batch, L length, C classes), each a mean over the GLOBAL batch:
  classification: softmax cross-entropy of logits [B, C] against label [B];
  regression: squared error of logits[:, 0] against label [B] (float);
  token_classification: cross-entropy at each word's first sub-token (label_weights [B, L]),
    averaged over those positions;
  question_answering: (cross-entropy(start_logits [B, L], start_positions) + the same for
    the end) / 2, as run_squad.py.
Eval batches may carry example_weight [B] (0 for padding rows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from bert_jax.models.families import create_model
from bert_jax.models.config import BertConfig
from bert_jax.parallel import sharding
from bert_jax.training import optim
from bert_jax.training.train_state import (TrainState, apply_gradients, state_from_params,
                                           state_layout)

INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def _outputs(task: str, out) -> dict:
  if task == "question_answering":
    return {"start_logits": out.start_logits, "end_logits": out.end_logits}
  return {"logits": out.logits}


def loss_sums(task: str, model, batch: dict, rng) -> tuple[jax.Array, jax.Array, dict]:
  """(sum of weighted losses, sum of weights, outputs) over a batch; rng None = no dropout."""
  out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
              deterministic=rng is None, dropout_rng=rng)
  b = batch["input_ids"].shape[0]
  ew = batch.get("example_weight")
  ew = jnp.ones((b,), jnp.float32) if ew is None else ew.astype(jnp.float32)  # [B]
  if task == "classification":
    per = optax.softmax_cross_entropy_with_integer_labels(out.logits, batch["label"])
  elif task == "regression":
    per = jnp.square(out.logits[:, 0] - batch["label"].astype(jnp.float32))
  elif task == "token_classification":
    w = batch["label_weights"].astype(jnp.float32) * ew[:, None]  # [B, L]
    nll = optax.softmax_cross_entropy_with_integer_labels(out.logits, batch["labels"])
    return jnp.sum(w * nll), jnp.sum(w), _outputs(task, out)
  elif task == "question_answering":
    per = 0.5 * (
        optax.softmax_cross_entropy_with_integer_labels(out.start_logits,
                                                        batch["start_positions"])
        + optax.softmax_cross_entropy_with_integer_labels(out.end_logits,
                                                          batch["end_positions"]))
  else:
    raise ValueError(f"unknown fine-tuning task {task!r}")
  return jnp.sum(ew * per), jnp.sum(ew), _outputs(task, out)


def make_train_step(task: str, graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule) -> Callable:
  """train_step(state, batch) -> (state, metrics). A non-finite loss or gradient leaves params
  and optimizer state unchanged and counts in skipped_steps (the loop stops on it)."""

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      total, weight, _ = loss_sums(task, nnx.merge(graphdef, params), batch, rng)
      return total / jnp.maximum(weight, 1e-6)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    new_state, grad_norm, finite = apply_gradients(state, grads, loss, tx)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite,
                       "learning_rate": schedule(state.step - state.skipped_steps),
                       "skipped_steps": new_state.skipped_steps,
                       "sequences": jnp.sum(batch.get("example_weight", jnp.ones(
                           batch["input_ids"].shape[:1], jnp.float32))),
                       "tokens": jnp.sum(batch["attention_mask"].astype(jnp.float32))}

  return train_step


def make_predict_step(task: str, graphdef: nnx.GraphDef) -> Callable:
  """predict_step(params, batch) -> outputs (logits, or start/end logits), no dropout."""

  def predict_step(params, batch):
    out = nnx.merge(graphdef, params)(batch["input_ids"], batch["token_type_ids"],
                                      batch["attention_mask"], deterministic=True)
    return _outputs(task, out)

  return predict_step


@dataclasses.dataclass
class FinetuneSetup:
  bert_config: BertConfig
  mesh: Mesh
  graphdef: nnx.GraphDef
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings (for restore)
  state_shardings: TrainState
  batch_sharding: NamedSharding
  init_opt_state: Callable  # (params) -> opt_state, sharded
  train_step: Callable  # jitted (state, batch) -> (state, metrics); state donated
  predict_step: Callable  # jitted (params, batch) -> outputs, replicated
  gather_params: Callable  # jitted params -> params replicated on every device (for saving)


def build(task: str, bcfg: BertConfig, head_kwargs: dict, optimizer_cfg, num_steps: int,
          mesh: Mesh) -> FinetuneSetup:
  """The sharded state layout and jitted steps for `task` (training.train_state.state_layout: the same
  placement as pretraining)."""
  model_task = "classification" if task == "regression" else task
  tx, schedule = optim.create_optimizer(optimizer_cfg, num_steps)
  layout = state_layout(
      nnx.eval_shape(lambda: create_model(bcfg, model_task, **head_kwargs)), tx, mesh)
  state_sh, repl = layout.state_shardings, sharding.replicated(mesh)
  return FinetuneSetup(
      bert_config=bcfg, mesh=mesh, graphdef=layout.graphdef, tx=tx, schedule=schedule,
      abstract_state=layout.abstract_state, state_shardings=state_sh,
      batch_sharding=layout.batch_sharding, init_opt_state=layout.init_opt_state,
      train_step=jax.jit(sharding.under_mesh(make_train_step(task, layout.graphdef, tx,
                                                             schedule), mesh),
                         in_shardings=(state_sh, layout.batch_sharding),
                         out_shardings=(state_sh, repl), donate_argnums=0),
      predict_step=jax.jit(sharding.under_mesh(make_predict_step(task, layout.graphdef), mesh),
                           in_shardings=(state_sh.params, layout.batch_sharding),
                           out_shardings=repl),
      gather_params=jax.jit(lambda p: p, in_shardings=(state_sh.params,), out_shardings=repl),
  )


def initial_state(setup: FinetuneSetup, params: dict, seed: int) -> TrainState:
  """Step 0 around the initial parameters (placed by their shardings), a fresh optimizer."""
  return state_from_params(setup, params, seed)
