"""A fine-tuning run: config -> task data, the model to start from, sharded state -> the loop.

`finetune_and_evaluate(config, workdir)` is what `python -m bert_jax.finetune` calls (see that
module for the command line and what a run writes). The loop is pretraining's
(`bert_jax.training.loop`): the same log windows, metrics.jsonl and TensorBoard, checkpoints with
exact resume, SIGTERM save, non-finite policy and multi-host batches. What is fine-tuning's own
lives in `FinetuneTask`: batches as a function of the step (a permutation per epoch), evaluation
with the task's metrics, the best model (WORKDIR/best, and WORKDIR/export in export.format, both
written from the same parameters), predictions and WORKDIR/results.json.
"""

from __future__ import annotations

import json
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from bert_jax import paths
from bert_jax.errors import UserError
from bert_jax.finetuning import steps
from bert_jax.finetuning.steps import INPUTS
from bert_jax.finetuning.tasks import TASKS, create_task
from bert_jax.models import flops as flops_lib
from bert_jax.models.families import ENCODER_KEY, create_model
from bert_jax.models.config import PRESETS
from bert_jax.parallel import sharding
from bert_jax.training import config as config_lib
from bert_jax.training import loop
from bert_jax.training.checkpointing import Checkpointer
from bert_jax.training.config import ConfigError
from bert_jax.training.train_state import TrainState, global_batch

_ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
EXPORT_FORMATS = ("", "hf", "tf1", "orbax")


def validate_config(config) -> None:
  if config.task not in TASKS:
    raise ConfigError(f"--config.task={config.task!r} is not one of {', '.join(TASKS)}")
  if config.data.source not in ("files", "tfds"):
    raise ConfigError(f"--config.data.source={config.data.source!r} is not one of files, tfds")
  if config.model.preset and config.model.preset not in PRESETS:
    raise ConfigError(f"--config.model.preset={config.model.preset!r} is not one of "
                      f"{', '.join(PRESETS)} (or '' for the checkpoint's own size)")
  for key in ("train.batch_size", "eval.batch_size", "data.max_seq_length"):
    group, name = key.split(".")
    if config[group][name] <= 0:
      raise ConfigError(f"--config.{key}={config[group][name]} must be a positive integer")
  if config.train.num_epochs <= 0 and config.train.num_steps <= 0:
    raise ConfigError("--config.train.num_epochs (or train.num_steps) must be positive")
  if config.export.format not in EXPORT_FORMATS:
    raise ConfigError(f"--config.export.format={config.export.format!r} is not one of '', hf, "
                      "tf1, orbax")
  for key, choices in (("train.on_nonfinite", ("stop", "skip")),
                       ("checkpoint.on_save_error", ("stop", "continue"))):
    group, name = key.split(".")
    if config[group][name] not in choices:
      raise ConfigError(f"--config.{key}={config[group][name]!r} is not one of "
                        f"{', '.join(choices)}")


# ---- initial model and vocabulary -------------------------------------------------------------
def _is_workdir(path: str) -> bool:
  p = epath.Path(path)
  return (p / "checkpoints").is_dir() and (p / "config.json").exists()


def vocab_path(config) -> str:
  """--config.data.vocab, else the vocabulary that came with init_from."""
  if config.data.vocab:
    return config.data.vocab
  if not config.init_from:
    raise UserError("--config.data.vocab is required without --config.init_from (a vocab.txt, "
                    "spm.model or tokenizer.json)")
  if _is_workdir(config.init_from):
    from bert_jax.training import export
    found = export.run_vocab(export.run_config(config.init_from))
    if found:
      return found
  else:
    p = epath.Path(config.init_from)
    folder = p if p.is_dir() else p.parent
    for name in ("vocab.txt", "spm.model", "tokenizer.json"):
      if (folder / name).exists():
        return str(folder / name)
  raise UserError(f"--config.init_from={config.init_from}: no vocab.txt, spm.model or "
                  "tokenizer.json beside the checkpoint; set --config.data.vocab=PATH")


def with_params(model, params: dict):
  """model (possibly abstract) with its Params replaced by the nested dict `params`."""
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  return model


def fresh_model(bcfg, model_task: str, seed: int, head_kwargs: dict):
  """A newly initialised model; one jitted init (eager init compiles op by op: slow)."""
  params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(
      create_model(bcfg, model_task, seed=seed, **head_kwargs), nnx.Param)))()
  return with_params(nnx.eval_shape(lambda: create_model(bcfg, model_task, **head_kwargs)),
                     params)


def initial_model(config, model_task: str, head_kwargs: dict, vocab_size: int):
  """The model to fine-tune: init_from's encoder (+ its head when it has a matching one) and a
  fresh head, or a fresh model of config.model.preset."""
  from bert_jax.interop import CheckpointError, load_pretrained
  seed, src = config.train.seed, config.init_from
  if not src:
    if not config.model.preset:
      raise UserError("--config.model.preset is required without --config.init_from")
    return fresh_model(config_lib.model_config(config.model, vocab_size), model_task, seed,
                       head_kwargs)
  if _is_workdir(src):
    from bert_jax.training import export
    pretrained, step = export.pretrained_model(src)
    logging.info("init from pretraining run %s, step %d", src, step)
    model = fresh_model(config_lib.model_config(config.model, base=pretrained.config),
                        model_task, seed, head_kwargs)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    run_params = nnx.to_pure_dict(nnx.state(pretrained, nnx.Param))
    key = ENCODER_KEY[model.config.model_type]
    encoder = run_params[key]
    # No pooler for tagging / QA; a fresh one where the run had none (objective none).
    params[key] = {k: encoder.get(k, params[key][k]) for k in params[key]}
    if "pooler" in params[key] and "pooler" not in encoder:
      logging.info("%s has no pooler (a masked-LM-only run); initialising it fresh", src)
    if "head" in params and "head" in run_params:  # ModernBERT: its MLM's prediction head,
      params["head"] = run_params["head"]  # as HF loads it into its fine-tuning models
    with_params(model, params)
  else:
    try:
      model = load_pretrained(
          src, model_task, seed=seed, **head_kwargs,
          config_overrides=lambda base: config_lib.model_overrides(config.model, base))
    except (CheckpointError, FileNotFoundError, ValueError) as e:
      raise UserError(f"--config.init_from: {e}") from None
  if config.model.preset:
    config_lib.check_architecture(
        model.config, PRESETS[config.model.preset], source=src, fields=_ARCH_FIELDS,
        wanted_by=f"--config.model.preset={config.model.preset}",
        fix="set --config.model.preset='' to use the checkpoint's size or pick the matching "
            "preset")
  if model.config.vocab_size != vocab_size:
    raise UserError(f"--config.init_from={src}: the checkpoint's vocab_size is "
                    f"{model.config.vocab_size} but the vocabulary has {vocab_size} tokens; set "
                    "--config.data.vocab to the checkpoint's own vocab file")
  return model


# ---- batches ----------------------------------------------------------------------------------
def train_batch(features: dict, keys: tuple, step: int, batch_size: int, seed: int) -> dict:
  """This process's rows of global batch `step`: epoch = step // steps per epoch, rows from a
  permutation seeded by (seed, epoch); so the data position is a function of the step."""
  n = len(features["input_ids"])
  per_epoch = n // batch_size
  epoch, i = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(n)[i * batch_size:(i + 1) * batch_size]
  local = batch_size // jax.process_count()
  rows = order[jax.process_index() * local:(jax.process_index() + 1) * local]
  return {k: features[k][rows] for k in keys}


class StepBatches:
  """The training batches as a `loop.DataIterator`: batch i is `train_batch(..., step=i)`. The
  position is the train state's step, so a checkpoint needs nothing of its own: after a restore
  the caller sets `step` from the state."""

  def __init__(self, features: dict, keys: tuple, batch_size: int, seed: int, step: int = 0):
    self._features, self._keys, self._batch_size, self._seed = features, keys, batch_size, seed
    self.step = step

  def __next__(self) -> dict:
    batch = train_batch(self._features, self._keys, self.step, self._batch_size, self._seed)
    self.step += 1
    return batch

  def save(self, directory) -> None:
    del directory  # the step is saved with the train state

  def restore(self, directory) -> None:
    del directory


def predict(setup, params, features: dict, batch_size: int) -> dict:
  """Model outputs for every row of features (padded to whole batches, then trimmed)."""
  n = len(features["input_ids"])
  local = batch_size // jax.process_count()
  outs = []
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    rows = rows[jax.process_index() * local:(jax.process_index() + 1) * local]
    valid = rows < n
    batch = {k: features[k][np.where(valid, rows, 0)] for k in INPUTS}
    out = setup.predict_step(params, global_batch(batch, setup.batch_sharding))
    outs.append(jax.tree.map(np.asarray, jax.device_get(out)))
  return {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}


def _optimizer_config(config, num_steps: int):
  """config.optimizer with warmup_steps resolved from warmup_proportion (for optim)."""
  opt = ml_collections.ConfigDict(config.optimizer.to_dict())
  if opt.warmup_steps < 0:
    opt.warmup_steps = int(round(opt.warmup_proportion * num_steps))
  return opt


# ---- the task the loop runs -------------------------------------------------------------------
class FinetuneTask:
  """A fine-tuning task as the loop runs it (see `loop.Task`)."""
  nonfinite_hint = "lower --config.optimizer.learning_rate or check the labels"

  def __init__(self, config, setup: steps.FinetuneSetup, task, splits: dict, *, vocab: str,
               steps_per_epoch: int, workdir: epath.Path, results: dict):
    self.train_step, self.batch_sharding = setup.train_step, setup.batch_sharding
    self._positions_per_step = config.train.batch_size * config.data.max_seq_length
    self.flops_per_token = flops_lib.flops_per_token(setup.bert_config,
                                                     config.data.max_seq_length, 0)
    self._config, self._setup, self._task, self._splits = config, setup, task, splits
    self._vocab, self._steps_per_epoch, self._workdir = vocab, steps_per_epoch, workdir
    self.results = results
    self.metric = results["metric"]
    self._lead = jax.process_index() == 0

  def positions_between(self, start: int, end: int) -> int:
    return (end - start) * self._positions_per_step

  def log_line(self, step: int, num_steps: int, m: dict) -> str:
    return (f"step {step}/{num_steps} (epoch {step / self._steps_per_epoch:.2f}) | loss "
            f"{m['loss']:.4f} | lr {m['learning_rate']:.2e} | gnorm {m['grad_norm']:.3f} | "
            f"{m['steps_per_s']:.1f} steps/s {m['seq_per_s']:.1f} seq/s")

  def evaluate(self, state: TrainState, step: int) -> dict:
    evals = self.results["evals"]
    if evals and evals[-1]["step"] == step:  # a finished run resumed: already evaluated
      return {k: v for k, v in evals[-1].items() if k != "step"}
    eval_split = self._splits["eval"]
    if eval_split is None:
      return {}
    t = time.perf_counter()
    eval_bs = self._config.eval.batch_size
    outputs = predict(self._setup, state.params, eval_split.features, eval_bs)
    scores = {k: float(v) for k, v in self._task.evaluate(eval_split, outputs).items()}
    if self.metric not in scores:
      raise UserError(f"--config.eval.best_metric={self.metric!r} is not one of "
                      f"{', '.join(scores)}")
    scores["epoch"] = step / self._steps_per_epoch
    logging.info("eval step %d (epoch %.2f) | %s | %.1fs", step, scores["epoch"],
                 " ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "epoch"),
                 time.perf_counter() - t)
    evals.append({"step": step, **scores})
    if self._lead:
      self._task.write_predictions(eval_split, outputs, str(self._workdir))
    best = self.results["best"]
    if best is None or (scores[self.metric] < best if self.metric == "mse"
                        else scores[self.metric] > best):
      self.results.update(best=scores[self.metric], best_step=step, best_eval=scores)
      self._save_best(state, scores)
      test = self._splits["test"]
      if test is not None:  # test predictions always come from the best model
        outputs = predict(self._setup, state.params, test.features, eval_bs)
        if self._lead:
          self._task.write_predictions(test, outputs, str(self._workdir))
        if "label" in test.features:  # a labelled test file: the best model's test metrics
          self.results["best_test"] = {
              k: float(v) for k, v in self._task.evaluate(test, outputs).items()}
          logging.info("test (the best model, step %d) | %s", step, " ".join(
              f"{k} {v:.4f}" for k, v in self.results["best_test"].items()))
    return scores

  def _save_best(self, state: TrainState, scores: dict) -> None:
    """WORKDIR/best (a bert_jax export) and, with export.format, WORKDIR/export: both from the
    same parameters, gathered once."""
    from bert_jax.interop import save_pretrained
    params = self._setup.gather_params(state.params)
    if not self._lead:
      return
    task = self._task
    model = with_params(nnx.eval_shape(lambda: create_model(
        self._setup.bert_config, task.model_task, **task.head_kwargs)), jax.device_get(params))
    id2label = dict(enumerate(task.label_names)) if task.label_names else None
    save_pretrained(model, str(self._workdir / "best"), format="orbax", vocab=self._vocab,
                    overwrite=True, id2label=id2label,
                    extra_files={"eval.json": json.dumps(scores) + "\n"})
    if self._config.export.format:
      save_pretrained(model, str(self._workdir / "export"), format=self._config.export.format,
                      vocab=self._vocab, overwrite=True, id2label=id2label)

  def checkpointed(self, step: int) -> None:
    del step
    if self._lead:
      paths.atomic_write(self._workdir / "results.json", json.dumps(self.results, indent=2) + "\n")


# ---- the run ----------------------------------------------------------------------------------
def finetune_and_evaluate(config, workdir: str) -> dict:
  """Fine-tunes (or resumes) to the end; returns results (best metric, per-epoch evals)."""
  from bert_jax.text.tokenization import Tokenizer, VocabError
  validate_config(config)
  workdir = epath.Path(workdir)
  lead = jax.process_index() == 0
  if lead:
    workdir.mkdir(parents=True, exist_ok=True)
    paths.atomic_write(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")
  mesh = sharding.create_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)

  # Data: tokenizer, label set (from the training data), features of every split.
  vocab = vocab_path(config)
  try:
    tokenizer = Tokenizer.from_file(vocab)
  except VocabError as e:
    raise UserError(f"--config.data.vocab: {e}") from None
  task = create_task(config, tokenizer)
  train = task.load("train")
  if train is None:
    raise UserError("no training data: set --config.data.train_file (or data.source=tfds with "
                    "data.tfds_name)")
  splits = {"eval": task.load("eval"), "test": task.load("test")}
  b = config.train.batch_size
  config_lib.validate_batch(config, mesh, jax.process_count())
  num_train = len(train.features["input_ids"])
  steps_per_epoch = num_train // b
  if steps_per_epoch == 0:
    raise UserError(f"--config.train.batch_size={b} exceeds the {num_train} training features; "
                    "lower it")
  num_steps = (config.train.num_steps if config.train.num_steps > 0
               else max(1, int(round(config.train.num_epochs * steps_per_epoch))))
  every = config.eval.every_steps or steps_per_epoch
  logging.info("%s: %d train features (%s), %d eval, %d test; %d steps (%d per epoch), batch %d",
               task.name, num_train, train.source,
               len(splits["eval"].examples) if splits["eval"] else 0,
               len(splits["test"].examples) if splits["test"] else 0, num_steps,
               steps_per_epoch, b)

  # Model, sharded state (resume > init_from > fresh).
  model = initial_model(config, task.model_task, task.head_kwargs, tokenizer.vocab_size)
  setup = steps.build(config.task, model.config, task.head_kwargs,
                      _optimizer_config(config, num_steps), num_steps, mesh)
  batches = StepBatches(train.features, INPUTS + task.targets, b, config.train.seed)
  with Checkpointer(workdir / "checkpoints", max_to_keep=config.checkpoint.max_to_keep,
                    async_save=config.checkpoint.async_save) as ckpt:
    state, restored = ckpt.restore(setup.abstract_state, batches)
    if state is None:
      state = steps.initial_state(setup, nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                                  config.train.seed)
    else:
      logging.info("resumed from checkpoint at step %d", restored)
    del model
    batches.step = int(jax.device_get(state.step))  # the data position (see StepBatches)
    results_path = workdir / "results.json"
    results = json.loads(results_path.read_text()) if restored and results_path.exists() else {
        "task": config.task, "metric": config.eval.best_metric or task.default_metric,
        "best": None, "best_step": None, "evals": []}
    peak, _ = flops_lib.peak_flops(mesh.devices.flat, config.train.peak_tflops_per_device)
    ft = FinetuneTask(config, setup, task, splits, vocab=vocab, steps_per_epoch=steps_per_epoch,
                      workdir=workdir, results=results)
    loop.run(state, ft, batches, ckpt=ckpt,
             cfg=loop.LoopConfig.from_config(config, num_steps, every, every), peak_flops=peak,
             workdir=workdir)
  results["final_eval"] = results["evals"][-1] if results["evals"] else {}
  if lead:
    paths.atomic_write(workdir / "results.json", json.dumps(results, indent=2) + "\n")
  return results
