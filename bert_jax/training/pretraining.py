"""Pretraining: the MLM (+ NSP / SOP) loss, the train and eval steps, and `build` (config -> steps).

`build(config, mesh, vocab_size, objective)` turns a config into the model config, the optimizer,
the abstract train state with its shardings, and the jitted (sharded, donated) init / train / eval
functions; nothing here touches data or the filesystem.

The objective (OBJECTIVES, the dataset's `objective` metadata) picks the model: "nsp" (BERT's
next-sentence prediction) and "sop" (ALBERT's sentence-order prediction: the same [H, 2] head on
the pooled [CLS], the label in `next_sentence_label`, 1 = swapped) train BertForPreTraining on
MLM + the sentence loss, with metrics nsp_loss / nsp_accuracy for both; "none" (RoBERTa-style)
trains BertForMaskedLM on the MLM loss alone, and its metrics have no nsp_* keys.

`make_train_step(...)` returns `train_step(state, batch) -> (state, metrics)`: the exact
function `bert_jax.train` jits (with shardings and donation) and `benchmarks/train_step.py`
times. Batch (global arrays): input_ids, token_type_ids, attention_mask [B, L] int32;
masked_positions, masked_ids [B, P] int32; masked_weights [B, P] float32;
next_sentence_label [B] int32 (not read for "none"). Packed rows (several sequences per row,
input_pipeline's `pack`) add PACKED_KEYS: segment_ids, position_ids [B, L] int32 and
cls_positions [B, S] int32, and next_sentence_label becomes [B, S] with nsp_weights [B, S]
float32 (1 = a sequence); "none" reads only segment_ids and position_ids of them.

Loss (google-research/bert run_pretraining.py): MLM = sum(w * nll) / (sum(w) + 1e-5) over the
gathered masked positions of the whole global batch; NSP = mean cross-entropy over the batch's
sequences (SOP the same, on its label); total = MLM + NSP, or MLM alone for "none". A packed
batch holding the same sequences as an unpacked one gives the same loss
(tests/training/test_pretraining.py).
With gradient accumulation each micro-batch's sums are normalised by the WHOLE batch's weight
and size, so accumulated gradients equal the full-batch gradients exactly. Batch-size warmup
(training/batch_warmup.py) feeds smaller batches early on: the step is compiled once per size,
and accumulates rows / micro-batch micro-batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from bert_jax.models import flops as flops_lib
from bert_jax.models import families
from bert_jax.models.config import ModelConfig
from bert_jax.parallel import sharding
from bert_jax.training import optim
from bert_jax.training.config import ConfigError, model_config
from bert_jax.training.train_state import (TrainState, apply_gradients, new_train_state,
                                           state_layout)

OBJECTIVES = ("nsp", "sop", "none")  # the dataset's `objective` (a missing key: "nsp")
MLM_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_positions", "masked_ids",
            "masked_weights")
BATCH_KEYS = MLM_KEYS + ("next_sentence_label",)
_PACKED_MODEL_INPUTS = ("segment_ids", "position_ids", "cls_positions")  # model(...) kwargs
PACKED_KEYS = _PACKED_MODEL_INPUTS + ("nsp_weights",)
_MLM_SUMS = ("mlm_nll", "mlm_weight", "mlm_correct", "sequences")
_SENTENCE_SUMS = ("nsp_nll", "nsp_correct")


def check_objective(objective: str) -> str:
  if objective not in OBJECTIVES:
    raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
  return objective


def has_sentence_task(objective: str) -> bool:
  """nsp and sop train the [CLS] sentence head (BertForPreTraining); none does not."""
  return check_objective(objective) != "none"


def model_task(objective: str) -> str:
  """The models.TASKS name an objective trains: "pretraining" (nsp, sop) or "masked_lm"."""
  return "pretraining" if has_sentence_task(objective) else "masked_lm"


def batch_keys(batch: dict, objective: str = "nsp") -> tuple[str, ...]:
  """The keys of `batch` the train step reads: BATCH_KEYS (+ PACKED_KEYS when packed); for
  "none" MLM_KEYS (+ segment_ids, position_ids when packed)."""
  packed = "segment_ids" in batch
  if has_sentence_task(objective):
    return BATCH_KEYS + (PACKED_KEYS if packed else ())
  return MLM_KEYS + (("segment_ids", "position_ids") if packed else ())


def _pretraining_sums(model, batch, rng, sentence_task: bool = True):
  """Per-micro-batch sums: weighted MLM nll, weights, correct; the number of sequences; and
  with the sentence task its nll and correct (over those sequences)."""
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
  # ew: one weight per sequence ([B], or [B, S] for packed rows).
  if "nsp_weights" in batch and sentence_task:  # packed: one prediction per sequence in a row
    ew = batch["nsp_weights"].astype(jnp.float32)
  elif "segment_ids" in batch:  # packed without the sentence task: segments 1..k per row
    ew = jnp.max(batch["segment_ids"], axis=-1).astype(jnp.float32)
  elif example_weight is not None:
    ew = example_weight.astype(jnp.float32)
  else:
    ew = jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
  sums = {"mlm_nll": jnp.sum(weights * mlm_nll), "mlm_weight": jnp.sum(weights),
          "mlm_correct": jnp.sum(weights * mlm_correct), "sequences": jnp.sum(ew)}
  if sentence_task:
    nsp_nll = optax.softmax_cross_entropy_with_integer_labels(
        out.nsp_logits, batch["next_sentence_label"])  # [B] ([B, S] packed)
    nsp_correct = (jnp.argmax(out.nsp_logits, -1) == batch["next_sentence_label"]).astype(
        jnp.float32)
    sums.update(nsp_nll=jnp.sum(ew * nsp_nll), nsp_correct=jnp.sum(ew * nsp_correct))
  return sums


def _split_micro(batch: dict, num: int) -> dict:
  """[B, ...] -> [num, B/num, ...], micro-batch i = rows i, i+num, ... (stays spread over
  every data-parallel shard as long as the per-device batch divides by num)."""
  def f(x):
    return x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(f, batch)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, micro_batch_rows: int | None = None,
                    dropout: bool = True, objective: str = "nsp") -> Callable:
  """train_step(state, batch) -> (new_state, metrics). Non-finite loss or gradients: the update
  is not applied (params and optimizer state stay as they were) and `skipped_steps` counts it;
  the caller decides whether to stop (train.on_nonfinite). `graphdef` is the objective's model
  (model_task: BertForPreTraining, or BertForMaskedLM for "none").

  micro_batch_rows: None, the whole batch at once; else gradient accumulation over micro-batches
  of that many global rows (rows / micro_batch_rows of them, read from the batch's shape, so a
  batch-size warmup's smaller batches accumulate fewer)."""
  sentence_task = has_sentence_task(objective)
  sum_keys = _MLM_SUMS + (_SENTENCE_SUMS if sentence_task else ())

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    batch = {k: batch[k] for k in batch_keys(batch, objective)}
    total_weight = jnp.sum(batch["masked_weights"].astype(jnp.float32))
    if sentence_task:
      total_examples = (jnp.sum(batch["nsp_weights"].astype(jnp.float32))
                        if "nsp_weights" in batch else batch["next_sentence_label"].shape[0])
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    rows = batch["input_ids"].shape[0]
    grad_accum_steps = 1 if micro_batch_rows is None else max(1, rows // micro_batch_rows)

    def loss_fn(params, micro, rng):
      model = nnx.merge(graphdef, params)
      sums = _pretraining_sums(model, micro, rng if dropout else None, sentence_task)
      loss = sums["mlm_nll"] / (total_weight + 1e-5)
      if sentence_task:
        loss = loss + sums["nsp_nll"] / total_examples
      return loss, sums

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

      zeros = (jnp.zeros((), jnp.float32), {k: jnp.zeros((), jnp.float32) for k in sum_keys},
               jax.tree.map(jnp.zeros_like, state.params))
      (loss, sums, grads), _ = jax.lax.scan(
          accumulate, zeros, (micro_batches, jnp.arange(grad_accum_steps)))

    applied = state.step - state.skipped_steps  # optimizer updates so far
    new_state, grad_norm, finite = apply_gradients(state, grads, loss, tx)
    metrics = {
        "loss": loss,
        "mlm_loss": sums["mlm_nll"] / (sums["mlm_weight"] + 1e-5),
        "mlm_accuracy": sums["mlm_correct"] / (sums["mlm_weight"] + 1e-5),
    }
    if sentence_task:  # nsp and sop alike (the same head and label field)
      metrics.update(nsp_loss=sums["nsp_nll"] / sums["sequences"],
                     nsp_accuracy=sums["nsp_correct"] / sums["sequences"])
    metrics.update({
        "grad_norm": grad_norm,
        "learning_rate": schedule(applied),
        "finite": finite,
        "skipped_steps": new_state.skipped_steps,
        "sequences": sums["sequences"],  # sequences in the batch (more than rows when packed)
        "tokens": jnp.sum(batch["attention_mask"].astype(jnp.float32)),  # non-padding tokens
        "batch_size": jnp.float32(rows),  # rows (grows under batch-size warmup)
    })
    return new_state, metrics

  return train_step


def make_eval_step(graphdef: nnx.GraphDef, objective: str = "nsp") -> Callable:
  """eval_step(params, batch) -> sums (add them over batches; see `eval_summary`).
  `example_weight` [B] (0 for padding examples) is honoured when present."""
  sentence_task = has_sentence_task(objective)

  def eval_step(params, batch):
    model = nnx.merge(graphdef, params)
    sums = _pretraining_sums(model, batch, None, sentence_task)
    # How often each vocabulary id is a masked target (weighted): the unigram baseline, the
    # accuracy of always predicting the most frequent target (eval_summary).
    weights = batch["masked_weights"].astype(jnp.float32)
    if "example_weight" in batch:
      weights = weights * batch["example_weight"][:, None]
    vocab_size = model.config.vocab_size
    sums["target_counts"] = jnp.zeros((vocab_size,), jnp.float32).at[
        batch["masked_ids"].reshape(-1)].add(weights.reshape(-1))
    return sums

  return eval_step


def eval_summary(sums: dict) -> dict:
  """Totals of eval_step sums -> mlm (and, with the sentence task, nsp) loss and accuracy, and
  unigram_accuracy: the MLM accuracy of always predicting the eval set's most frequent target
  (the best constant guess; a model that learned only token frequencies sits there)."""
  w, n = sums["mlm_weight"] + 1e-5, max(sums["sequences"], 1e-5)
  out = {"mlm_loss": sums["mlm_nll"] / w, "mlm_accuracy": sums["mlm_correct"] / w,
         "loss": sums["mlm_nll"] / w}
  if "target_counts" in sums:
    out["unigram_accuracy"] = float(np.max(sums["target_counts"])) / w
  if "nsp_nll" in sums:
    out.update(nsp_loss=sums["nsp_nll"] / n, nsp_accuracy=sums["nsp_correct"] / n,
               loss=out["loss"] + sums["nsp_nll"] / n)
  return out


@dataclasses.dataclass
class TrainSetup:
  bert_config: ModelConfig  # the model's config, of either family (BERT or ModernBERT)
  objective: str  # nsp | sop | none (OBJECTIVES)
  model_task: str  # "pretraining" (BertForPreTraining) | "masked_lm" (Bert/ModernBertForMaskedLM)
  mesh: Mesh
  graphdef: nnx.GraphDef
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
  state_shardings: TrainState
  batch_sharding: NamedSharding
  init_state: Callable  # (key) -> TrainState, materialised already sharded
  init_opt_state: Callable  # (params) -> opt_state, sharded
  train_step: Callable  # jitted (state, batch) -> (state, metrics); state donated
  eval_step: Callable  # jitted (params, batch) -> sums
  flops_per_token: float


def build(config, mesh: Mesh, vocab_size: int, objective: str | None = None) -> TrainSetup:
  """objective: nsp | sop | none (what the dataset was prepared for; the trainer passes it);
  None: config.data.objective, or "nsp" when that is "" (synthetic data, benchmarks, AOT)."""
  if objective is None:
    objective = config.data.get("objective", "") or "nsp"
  task = model_task(objective)
  bcfg = model_config(config.model, vocab_size)
  if task not in families.tasks(bcfg):
    raise ConfigError(f"--config.model.preset={config.model.preset} has no sentence-pair head "
                      f"for objective {objective}; prepare the data with --objective=none "
                      "(ModernBERT pretrains on masked-LM alone)")
  model_cls = families.tasks(bcfg)[task]
  tx, schedule = optim.create_optimizer(config.optimizer, config.train.num_steps)
  layout = state_layout(nnx.eval_shape(lambda: model_cls(bcfg, rngs=nnx.Rngs(params=0))), tx,
                        mesh)
  state_sh, repl = layout.state_shardings, sharding.replicated(mesh)

  def init_state(key) -> TrainState:
    params_key, dropout_key = jax.random.split(key)
    model = model_cls(bcfg, rngs=nnx.Rngs(params=params_key))
    return new_train_state(nnx.to_pure_dict(nnx.state(model, nnx.Param)), tx,
                           jax.random.key_data(dropout_key))

  accum = config.train.grad_accum_steps
  train_step = make_train_step(
      layout.graphdef, tx, schedule, objective=objective,
      micro_batch_rows=config.train.batch_size // accum if accum > 1 else None)
  return TrainSetup(
      bert_config=bcfg, objective=objective, model_task=task, mesh=mesh,
      graphdef=layout.graphdef, tx=tx, schedule=schedule,
      abstract_state=layout.abstract_state, state_shardings=state_sh,
      batch_sharding=layout.batch_sharding,
      init_state=jax.jit(init_state, out_shardings=state_sh),
      init_opt_state=layout.init_opt_state,
      train_step=jax.jit(sharding.under_mesh(train_step, mesh),
                         in_shardings=(state_sh, layout.batch_sharding),
                         out_shardings=(state_sh, repl), donate_argnums=0),
      eval_step=jax.jit(sharding.under_mesh(make_eval_step(layout.graphdef, objective), mesh),
                        in_shardings=(state_sh.params, layout.batch_sharding),
                        out_shardings=repl),
      flops_per_token=flops_lib.flops_per_token(bcfg, config.data.seq_len,
                                                config.data.max_predictions_per_seq),
  )


def synthetic_batch(batch_size: int, seq_len: int, max_predictions: int, vocab_size: int,
                    seed: int) -> dict:
  """A random but well-formed batch (benchmarks, AOT shapes, smoke tests)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab_size, (batch_size, seq_len), dtype=np.int32)
  positions = np.sort(np.argsort(rng.random((batch_size, seq_len - 1)), axis=-1)[
      :, :max_predictions] + 1, axis=-1).astype(np.int32)  # distinct, never [CLS] at 0
  masked = ids.copy()
  np.put_along_axis(masked, positions, 4, axis=1)  # 4: [MASK] in our vocabularies
  return {
      "input_ids": masked,
      "token_type_ids": (np.arange(seq_len)[None] >= seq_len // 2).astype(np.int32).repeat(
          batch_size, 0),
      "attention_mask": np.ones((batch_size, seq_len), np.int32),
      "masked_positions": positions,
      "masked_ids": np.take_along_axis(ids, positions, axis=1),
      "masked_weights": np.ones((batch_size, max_predictions), np.float32),
      "next_sentence_label": rng.integers(0, 2, (batch_size,), dtype=np.int32),
  }
