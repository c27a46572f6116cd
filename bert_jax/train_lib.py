"""Building blocks of a pretraining run, shared by the trainer, the AOT compiler and benchmarks.

`build(config, mesh, vocab_size)` turns a config into: the model config, the optimizer, the
abstract train state with its shardings, and the jitted (sharded, donated) init / train / eval
functions. Nothing here touches data or the filesystem.
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

from bert_jax import flops as flops_lib
from bert_jax import optim, sharding
from bert_jax.models.bert import BertForPreTraining
from bert_jax.models.config import PRESETS, BertConfig
from bert_jax.train_step import TrainState, make_eval_step, make_train_step, new_train_state


class ConfigError(ValueError):
  """A config/flag problem found at start-up; the message names the key and the fix."""


_CHOICES = {
    "model.preset": tuple(PRESETS), "model.dtype": ("float32", "bfloat16"),
    "model.remat_policy": ("none", "full", "save_dots"),
    "model.attention_impl": ("auto", "xla", "cudnn", "manual"),
    "model.hidden_act": ("gelu", "gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "relu"),
    "data.source": ("tfds", "synthetic"),
    "optimizer.name": ("bert_adam", "adamw", "lamb"),
    "optimizer.decay": ("linear", "polynomial", "cosine", "constant"),
    "train.on_nonfinite": ("stop", "skip"),
    "checkpoint.on_save_error": ("stop", "continue"),
}
_POSITIVE = ("train.batch_size", "train.num_steps", "train.grad_accum_steps",
             "train.log_every_steps", "checkpoint.every_steps", "checkpoint.max_to_keep",
             "eval.batch_size", "data.seq_len", "data.max_predictions_per_seq",
             "data.max_sequences_per_row", "data.pack_group")


def _get(config, dotted: str):
  value = config
  for k in dotted.split("."):
    value = value[k]
  return value


def validate_config(config) -> None:
  """Value checks that need no devices or data; raises ConfigError (one line)."""
  for key, choices in _CHOICES.items():
    if _get(config, key) not in choices:
      raise ConfigError(f"--config.{key}={_get(config, key)!r} is not one of "
                        f"{', '.join(choices)}")
  for key in _POSITIVE:
    if _get(config, key) <= 0:
      raise ConfigError(f"--config.{key}={_get(config, key)} must be a positive integer")
  if config.data.max_predictions_per_seq > config.data.seq_len:
    raise ConfigError(f"--config.data.max_predictions_per_seq={config.data.max_predictions_per_seq}"
                      f" exceeds data.seq_len={config.data.seq_len}")
  if config.data.seq_len > config.model.max_position_embeddings:
    raise ConfigError(f"--config.data.seq_len={config.data.seq_len} exceeds "
                      f"model.max_position_embeddings={config.model.max_position_embeddings}; "
                      "prepare shorter sequences or raise max_position_embeddings")
  if not 0 <= config.optimizer.warmup_steps:
    raise ConfigError("--config.optimizer.warmup_steps must be >= 0")
  if config.data.pack and config.data.source != "tfds":
    raise ConfigError("--config.data.pack=True packs a prepared dataset's sequences; it needs "
                      "data.source=tfds (synthetic batches are full rows)")


def bert_config(config, vocab_size: int) -> BertConfig:
  """The model config: the preset with config.model's overrides and the data's vocab size."""
  m = config.model
  if m.vocab_size not in (-1, vocab_size):
    raise ConfigError(f"--config.model.vocab_size={m.vocab_size} but the dataset's vocabulary "
                      f"has {vocab_size} tokens; set it to {vocab_size} or -1 (from the data)")
  return PRESETS[m.preset].replace(
      vocab_size=vocab_size, max_position_embeddings=m.max_position_embeddings,
      hidden_act=m.hidden_act, hidden_dropout_prob=m.hidden_dropout_prob,
      attention_probs_dropout_prob=m.attention_probs_dropout_prob, dtype=m.dtype,
      scan_layers=m.scan_layers, remat_policy=m.remat_policy, attention_impl=m.attention_impl)


def validate_batch(config, mesh: Mesh, process_count: int) -> None:
  b, dp, acc = config.train.batch_size, sharding.data_parallel_size(mesh), \
      config.train.grad_accum_steps
  if b % dp:
    raise ConfigError(f"--config.train.batch_size={b} is not divisible by the data-parallel "
                      f"size {dp} (mesh.data × mesh.fsdp); use a multiple of {dp}")
  if b % process_count:
    raise ConfigError(f"--config.train.batch_size={b} is not divisible by the {process_count} "
                      "processes")
  if (b // dp) % acc:
    raise ConfigError(f"--config.train.grad_accum_steps={acc} does not divide the per-device "
                      f"batch {b // dp} (batch_size / data-parallel size)")
  if config.eval.batch_size % dp or config.eval.batch_size % process_count:
    raise ConfigError(f"--config.eval.batch_size={config.eval.batch_size} is not divisible by "
                      f"the data-parallel size {dp} and the {process_count} processes")


@dataclasses.dataclass
class TrainSetup:
  bert_config: BertConfig
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


@dataclasses.dataclass
class StateLayout:
  """Where every piece of a TrainState lives on the mesh, and its abstract shapes."""
  graphdef: nnx.GraphDef
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
  state_shardings: TrainState
  batch_sharding: NamedSharding
  init_opt_state: Callable  # jitted (params) -> opt_state, sharded


def state_layout(abstract_model: nnx.Module, tx: optax.GradientTransformation,
                 mesh: Mesh) -> StateLayout:
  """Parameters placed by their logical axis names, optimizer state like its parameters,
  step / RNG replicated, batches over data × fsdp (pretraining and fine-tuning alike)."""
  graphdef, abstract_params = nnx.split(abstract_model)
  names = sharding.param_logical_names(nnx.state(abstract_model, nnx.Param))
  param_sh = sharding.param_shardings(names, nnx.to_pure_dict(abstract_params), mesh)
  repl = sharding.replicated(mesh)
  abstract = jax.eval_shape(lambda p: new_train_state(p, tx, jnp.zeros((2,), jnp.uint32)),
                            nnx.to_pure_dict(abstract_params))
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract.opt_state, param_sh,
                                 transform_non_params=lambda _: repl)
  state_sh = TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl,
                        skipped_steps=repl)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, state_sh)
  return StateLayout(graphdef=graphdef, abstract_state=abstract, state_shardings=state_sh,
                     batch_sharding=sharding.batch_sharding(mesh),
                     init_opt_state=jax.jit(tx.init, out_shardings=opt_sh))


def build(config, mesh: Mesh, vocab_size: int) -> TrainSetup:
  bcfg = bert_config(config, vocab_size)
  tx, schedule = optim.create_optimizer(config.optimizer, config.train.num_steps)
  layout = state_layout(
      nnx.eval_shape(lambda: BertForPreTraining(bcfg, rngs=nnx.Rngs(params=0))), tx, mesh)
  state_sh, repl = layout.state_shardings, sharding.replicated(mesh)

  def init_state(key) -> TrainState:
    params_key, dropout_key = jax.random.split(key)
    model = BertForPreTraining(bcfg, rngs=nnx.Rngs(params=params_key))
    return new_train_state(nnx.to_pure_dict(nnx.state(model, nnx.Param)), tx,
                           jax.random.key_data(dropout_key))

  train_step = make_train_step(layout.graphdef, tx, schedule,
                               grad_accum_steps=config.train.grad_accum_steps)
  return TrainSetup(
      bert_config=bcfg, mesh=mesh, graphdef=layout.graphdef, tx=tx, schedule=schedule,
      abstract_state=layout.abstract_state, state_shardings=state_sh,
      batch_sharding=layout.batch_sharding,
      init_state=jax.jit(init_state, out_shardings=state_sh),
      init_opt_state=layout.init_opt_state,
      train_step=jax.jit(sharding.under_mesh(train_step, mesh),
                         in_shardings=(state_sh, layout.batch_sharding),
                         out_shardings=(state_sh, repl), donate_argnums=0),
      eval_step=jax.jit(sharding.under_mesh(make_eval_step(layout.graphdef), mesh),
                        in_shardings=(state_sh.params, layout.batch_sharding),
                        out_shardings=repl),
      flops_per_token=flops_lib.flops_per_token(bcfg, config.data.seq_len,
                                                config.data.max_predictions_per_seq),
  )


def state_from_params(setup, params: dict, seed: int) -> TrainState:
  """A fresh train state (step 0, new optimizer) around given parameters (warm start), placed
  by `setup`'s shardings (a TrainSetup, or any object with state_shardings/init_opt_state)."""
  state_sh = setup.state_shardings
  params = jax.device_put(params, state_sh.params)
  dropout_key = jax.random.split(jax.random.key(seed))[1]
  return TrainState(
      step=jax.device_put(jnp.zeros((), jnp.int32), state_sh.step), params=params,
      opt_state=setup.init_opt_state(params),
      rng=jax.device_put(jax.random.key_data(dropout_key), state_sh.rng),
      skipped_steps=jax.device_put(jnp.zeros((), jnp.int32), state_sh.skipped_steps))


def global_batch(local: dict, sharding_: NamedSharding) -> dict:
  """This process's numpy batch -> global jax.Arrays sharded over the data axes."""
  return {k: jax.make_array_from_process_local_data(sharding_, np.asarray(v))
          for k, v in local.items()}


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
