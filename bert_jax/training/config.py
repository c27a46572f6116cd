"""Checks on a run's config that need no data, and the one mapping from config to model config.

Pretraining (`configs/default.py`) and fine-tuning (`configs/finetune/default.py`) configs both
have a `model` section; `model_config` turns either into the model config of the preset's (or the
checkpoint's) family, a `BertConfig` or a `ModernBertConfig`; `validate_batch` checks
a batch size against the mesh and processes, `check_architecture` compares a warm start's
architecture with the run's. Errors are `ConfigError` (a `UserError`): one line naming the key.
"""

from __future__ import annotations

import math

from jax.sharding import Mesh

from bert_jax.errors import UserError
from bert_jax.models.config import ATTENTION_IMPLS, PRESETS, BertConfig, ModelConfig
from bert_jax.parallel import sharding
from bert_jax.training import optim


class ConfigError(UserError):
  """A config/flag problem found at start-up; the message names the key and the fix."""


_CHOICES = {
    "model.preset": tuple(PRESETS), "model.dtype": ("float32", "bfloat16"),
    "model.remat_policy": ("none", "full", "save_dots"),
    "model.attention_impl": ATTENTION_IMPLS,
    "model.hidden_act": ("", "gelu", "gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "relu"),
    "data.source": ("tfds", "synthetic"), "data.objective": ("", "nsp", "sop", "none"),
    "data.masking_strategy": ("", "token", "whole_word", "span", "ngram"),
    "optimizer.name": optim.NAMES, "optimizer.decay": optim.DECAYS,
    "optimizer.wsd_decay_shape": optim.WSD_DECAY_SHAPES,
    "train.on_nonfinite": ("stop", "skip"),
    "checkpoint.on_save_error": ("stop", "continue"),
}
_POSITIVE = ("train.batch_size", "train.num_steps", "train.grad_accum_steps",
             "train.log_every_steps", "checkpoint.every_steps", "checkpoint.max_to_keep",
             "eval.batch_size", "data.seq_len", "data.max_predictions_per_seq",
             "data.max_sequences_per_row", "data.pack_group")


# Keys a run's config.json from before they existed lacks (resuming one reads it): their default.
_ADDED_LATER = {"data.objective": "", "data.masking_strategy": "", "data.mask_token_prob": 0.8,
                "data.random_token_prob": 0.1, "optimizer.decay_steps": -1,
                "optimizer.wsd_decay_shape": "linear", "optimizer.decouple_lr": False,
                "train.batch_size_warmup_min": 0, "train.batch_size_warmup_tokens": 0,
                "train.target_mlm_accuracy": 0.0}


def _get(config, dotted: str):
  value = config
  try:
    for k in dotted.split("."):
      value = value[k]
  except KeyError:
    if dotted in _ADDED_LATER:
      return _ADDED_LATER[dotted]
    raise
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
  mcfg = model_config(config.model)  # the preset with the section's overrides
  if config.data.seq_len > mcfg.max_position_embeddings:
    raise ConfigError(f"--config.data.seq_len={config.data.seq_len} exceeds "
                      f"model.max_position_embeddings={mcfg.max_position_embeddings}; "
                      "prepare shorter sequences or raise max_position_embeddings")
  if not 0 <= config.optimizer.warmup_steps:
    raise ConfigError("--config.optimizer.warmup_steps must be >= 0")
  _validate_wsd_and_decouple_lr(config)
  _validate_batch_warmup(config)
  _validate_target(config)
  if config.data.pack and config.data.source != "tfds":
    raise ConfigError("--config.data.pack=True packs a prepared dataset's sequences; it needs "
                      "data.source=tfds (synthetic batches are full rows)")


def _validate_target(config) -> None:
  """train.target_mlm_accuracy: 0 (off) or in (0, 1], checked at the eval cadence."""
  target = _get(config, "train.target_mlm_accuracy")
  if target == 0:
    return
  if not 0 < target <= 1:  # NaN too
    raise ConfigError(f"--config.train.target_mlm_accuracy={target} must be in (0, 1] (or 0: "
                      "no target)")
  if config.eval.every_steps <= 0:
    raise ConfigError("--config.train.target_mlm_accuracy needs eval.every_steps > 0 to stop "
                      "early; set it (e.g. 100)")


def _validate_batch_warmup(config) -> None:
  """train.batch_size_warmup_min: 0 (off), or a smaller divisor of train.batch_size (a multiple
  of the accumulation micro-batch) with batch_size_warmup_tokens > 0."""
  start, tokens = (_get(config, "train.batch_size_warmup_min"),
                   _get(config, "train.batch_size_warmup_tokens"))
  if start == 0:
    return
  b = config.train.batch_size
  if not 0 < start < b or b % start:
    raise ConfigError(f"--config.train.batch_size_warmup_min={start} must divide "
                      f"train.batch_size={b} and be smaller (the batch grows in steps of it), "
                      "or 0 for no batch-size warmup")
  if tokens <= 0:
    raise ConfigError(f"--config.train.batch_size_warmup_tokens={tokens} must be > 0 with "
                      f"batch_size_warmup_min={start}: the tokens over which the batch grows")
  micro = b // config.train.grad_accum_steps
  if config.train.grad_accum_steps > 1 and start % micro:
    raise ConfigError(f"--config.train.batch_size_warmup_min={start} is not a multiple of the "
                      f"micro-batch {micro} (batch_size / grad_accum_steps); use a multiple")


def _validate_wsd_and_decouple_lr(config) -> None:
  """optimizer.decay_steps (read by decay=wsd) fits after the warmup; decouple_lr only with
  stable_adamw (optim.create_optimizer)."""
  decay_steps = _get(config, "optimizer.decay_steps")
  if decay_steps < -1:
    raise ConfigError(f"--config.optimizer.decay_steps={decay_steps} must be >= 0 (or -1: the "
                      "last 10% of train.num_steps)")
  room = config.train.num_steps - config.optimizer.warmup_steps
  resolved = optim.wsd_decay_steps(decay_steps, config.train.num_steps)
  if config.optimizer.decay == "wsd" and resolved > room:
    shown = f"-1 (the last 10%: {resolved})" if decay_steps == -1 else str(decay_steps)
    raise ConfigError(f"--config.optimizer.decay_steps={shown} exceeds train.num_steps - "
                      f"optimizer.warmup_steps = {room}; shorten the decay or the warmup")
  if _get(config, "optimizer.decouple_lr") and config.optimizer.name != "stable_adamw":
    raise ConfigError("--config.optimizer.decouple_lr=True needs optimizer.name=stable_adamw "
                      f"(not {config.optimizer.name!r}); set decouple_lr=False")


# Keys of a config's `model` section -> the model config fields they set, per family. A key at
# its "unset" value (-1, -1.0 or "") keeps the preset's / checkpoint's value.
_MODEL_FIELDS = {
    "bert": {k: (k,) for k in ("max_position_embeddings", "hidden_act", "hidden_dropout_prob",
                               "attention_probs_dropout_prob", "classifier_dropout", "dtype",
                               "scan_layers", "remat_policy", "attention_impl")},
    "modernbert": {
        "max_position_embeddings": ("max_position_embeddings",),
        "hidden_act": ("hidden_activation",),
        "hidden_dropout_prob": ("embedding_dropout", "mlp_dropout"),
        "attention_probs_dropout_prob": ("attention_dropout",),
        "classifier_dropout": ("classifier_dropout",),
        "classifier_pooling": ("classifier_pooling",),
        "global_rope_theta": ("global_rope_theta",), "local_rope_theta": ("local_rope_theta",),
        "local_attention": ("local_attention",),
        "dtype": ("dtype",), "scan_layers": ("scan_layers",), "remat_policy": ("remat_policy",),
        "attention_impl": ("attention_impl",)},
}
_UNSET = (-1, -1.0, "")


def model_overrides(model, base: ModelConfig) -> dict:
  """The fields of `base`'s family that a config's `model` section sets (`model_config`
  applies them). Keys of the other family's only (e.g. model.global_rope_theta for BERT) must
  stay unset."""
  fields = _MODEL_FIELDS[base.model_type]
  overrides = {}
  for key in model.keys():
    value = model[key]
    if value in _UNSET:
      continue
    if key in fields:
      overrides.update(dict.fromkeys(fields[key], value))
    elif any(key in f for f in _MODEL_FIELDS.values()):
      unset = '""' if isinstance(value, str) else "-1"
      raise ConfigError(f"--config.model.{key}={value!r} does not apply to "
                        f"{base.model_type} models; leave it unset ({unset})")
  return overrides


def model_config(model, vocab_size: int | None = None,
                 base: ModelConfig | None = None) -> ModelConfig:
  """The model config of a run: `base` (default: the preset `model.preset`, of either family)
  with every key of the `model` section that sets one of its fields (`_MODEL_FIELDS`), and the
  data's vocabulary size.

  `model` is a pretraining or fine-tuning config's `model` section (each has its own subset of
  keys); `model.vocab_size`, where present, must be -1 (from the data) or equal `vocab_size`;
  a key at -1 / "" keeps the base's value (for BERT's classifier_dropout that is usually None:
  as hidden_dropout_prob). Checks that need the resolved config (a fused attention_impl with
  attention dropout) raise ConfigError here."""
  if base is None:
    if model.get("preset", "") not in PRESETS:
      raise ConfigError(f"--config.model.preset={model.get('preset')!r} is not one of "
                        f"{', '.join(PRESETS)}")
    base = PRESETS[model.preset]
  declared = model.get("vocab_size", -1)
  if vocab_size is not None and declared not in (-1, vocab_size):
    raise ConfigError(f"--config.model.vocab_size={declared} but the dataset's vocabulary "
                      f"has {vocab_size} tokens; set it to {vocab_size} or -1 (from the data)")
  overrides = model_overrides(model, base)
  if vocab_size is not None:
    overrides["vocab_size"] = vocab_size
  try:
    resolved = base.replace(**overrides)
  except ValueError as e:
    raise ConfigError(f"--config.model.*: {e}") from None
  if (resolved.attention_impl not in ("auto", "manual")
      and resolved.attention_probs_dropout_prob > 0):
    raise ConfigError(f"--config.model.attention_impl={resolved.attention_impl!r} has no "
                      "attention-probability dropout but model.attention_probs_dropout_prob="
                      f"{resolved.attention_probs_dropout_prob}; set "
                      "--config.model.attention_probs_dropout_prob=0 or "
                      "--config.model.attention_impl=auto")
  return resolved


ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                       "intermediate_size", "max_position_embeddings", "type_vocab_size")


def check_architecture(checkpoint: ModelConfig, wanted: ModelConfig, *, source: str,
                       wanted_by: str, fix: str, fields=ARCHITECTURE_FIELDS) -> None:
  """ConfigError naming the family or the first architecture field where a warm start's
  checkpoint (read from `source`) differs from the model this run wants (set by `wanted_by`);
  fields one family lacks (type_vocab_size for ModernBERT) are skipped."""
  if checkpoint.model_type != wanted.model_type:
    raise ConfigError(f"--config.init_from={source}: the checkpoint is a {checkpoint.model_type} "
                      f"model but {wanted_by} is {wanted.model_type}; {fix}")
  fields = [f for f in fields if hasattr(checkpoint, f)]
  for field in fields:
    if getattr(checkpoint, field) != getattr(wanted, field):
      raise ConfigError(f"--config.init_from={source}: the checkpoint has {field}="
                        f"{getattr(checkpoint, field)} but {wanted_by} has {field}="
                        f"{getattr(wanted, field)}; {fix}")


def validate_batch(config, mesh: Mesh, process_count: int) -> None:
  """The global train and eval batch sizes (train.batch_size, eval.batch_size: pretraining and
  fine-tuning configs both have them) divide over the data-parallel devices and the processes."""
  dp = sharding.data_parallel_size(mesh)
  for key in ("train.batch_size", "eval.batch_size"):
    group, name = key.split(".")
    size = config[group][name]
    if size % dp:
      raise ConfigError(f"--config.{key}={size} is not divisible by the data-parallel size {dp} "
                        f"(mesh.data × mesh.fsdp); use a multiple of {dp}")
    if size % process_count:
      raise ConfigError(f"--config.{key}={size} is not divisible by the {process_count} "
                        "processes")


def validate_pretraining_batch(config, mesh: Mesh, process_count: int) -> None:
  """validate_batch, and gradient accumulation's micro-batches."""
  validate_batch(config, mesh, process_count)
  start = _get(config, "train.batch_size_warmup_min")
  dp = sharding.data_parallel_size(mesh)
  if start and (start % dp or start % process_count):
    raise ConfigError(f"--config.train.batch_size_warmup_min={start} is not divisible by the "
                      f"data-parallel size {dp} (mesh.data × mesh.fsdp) and the "
                      f"{process_count} processes; use a multiple of "
                      f"{math.lcm(dp, process_count)}")
  per_device = config.train.batch_size // dp
  acc = config.train.grad_accum_steps
  if per_device % acc:
    raise ConfigError(f"--config.train.grad_accum_steps={acc} does not divide the per-device "
                      f"batch {per_device} (batch_size / data-parallel size)")
