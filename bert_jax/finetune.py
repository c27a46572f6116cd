r"""Fine-tune BERT: sequence classification / regression, token tagging, extractive QA.

  python -m bert_jax.finetune --config=configs/finetune/glue_sst2.py --workdir=DIR \
      --config.init_from=PATH [--config.data.train_file=... --config.train.num_epochs=3 ...]

PATH is anything `bert_jax.load_pretrained` reads (an HF directory, a google-research/bert
checkpoint, a `bert_jax.export` directory) or a pretraining WORKDIR (its newest checkpoint).
The recipe: AdamW, linear warmup over the first 10% of steps then linear decay to 0, a few
epochs; the mesh, parameter shardings, jitted donated train step and Orbax checkpoints are
pretraining's. After every epoch (or every eval.every_steps): eval metrics to the log and
WORKDIR/metrics.jsonl, eval predictions to WORKDIR/eval_predictions.*, a checkpoint in
WORKDIR/checkpoints (restarting with the same --workdir resumes), and when the eval metric
improves the model to WORKDIR/best (a bert_jax export: `load_pretrained(WORKDIR/best)`) and test
predictions to WORKDIR/test_predictions.*. WORKDIR/results.json summarises the run; with
export.format set, the best model is also written as WORKDIR/export (hf | tf1 | orbax).
Bad input (config, data, checkpoint) prints one line `error: ...` and exits 2; a non-finite
loss exits 3.
"""

from __future__ import annotations

import json
import logging as pylogging
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath
from flax import nnx
from ml_collections import config_flags

from bert_jax import checkpointing, finetune_lib, host_memory, sharding, train_lib
from bert_jax.finetune_data import DataError
from bert_jax.finetune_lib import INPUTS
from bert_jax.finetune_tasks import TASKS, create_task
from bert_jax.models.bert import create_model
from bert_jax.models.config import PRESETS

EXIT_USAGE = 2
EXIT_NONFINITE = 3
_ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


class UserError(Exception):
  """A config / input problem the user fixes; printed as one line."""


class NonFiniteError(Exception):
  pass


def _write_json(path: epath.Path, obj) -> None:
  """Written to a temporary file, then renamed: never seen half-written."""
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_text(json.dumps(obj, indent=2) + "\n")
  tmp.replace(path)


def validate_config(config) -> None:
  if config.task not in TASKS:
    raise UserError(f"--config.task={config.task!r} is not one of {', '.join(TASKS)}")
  if config.data.source not in ("files", "tfds"):
    raise UserError(f"--config.data.source={config.data.source!r} is not one of files, tfds")
  if config.model.preset and config.model.preset not in PRESETS:
    raise UserError(f"--config.model.preset={config.model.preset!r} is not one of "
                    f"{', '.join(PRESETS)} (or '' for the checkpoint's own size)")
  for key in ("train.batch_size", "eval.batch_size", "data.max_seq_length"):
    group, name = key.split(".")
    if config[group][name] <= 0:
      raise UserError(f"--config.{key}={config[group][name]} must be a positive integer")
  if config.train.num_epochs <= 0 and config.train.num_steps <= 0:
    raise UserError("--config.train.num_epochs (or train.num_steps) must be positive")
  if config.export.format not in ("", "hf", "tf1", "orbax"):
    raise UserError(f"--config.export.format={config.export.format!r} is not one of '', hf, "
                    "tf1, orbax")


# ---- initial model and vocabulary -------------------------------------------------------------
def _is_workdir(path: str) -> bool:
  p = epath.Path(path)
  return (p / "checkpoints").is_dir() and (p / "config.json").exists()


def vocab_path(config) -> str:
  """--config.data.vocab, else the vocabulary that came with init_from."""
  if config.data.vocab:
    return config.data.vocab
  if not config.init_from:
    raise UserError("--config.data.vocab is required without --config.init_from (a vocab.txt "
                    "or spm.model)")
  if _is_workdir(config.init_from):
    from bert_jax import export
    found = export.run_vocab(export.run_config(config.init_from))
    if found:
      return found
  else:
    p = epath.Path(config.init_from)
    folder = p if p.is_dir() else p.parent
    for name in ("vocab.txt", "spm.model"):
      if (folder / name).exists():
        return str(folder / name)
  raise UserError(f"--config.init_from={config.init_from}: no vocab.txt or spm.model beside the "
                  "checkpoint; set --config.data.vocab=PATH")


def _overrides(config) -> dict:
  m = config.model
  return {"dtype": m.dtype, "hidden_dropout_prob": m.hidden_dropout_prob,
          "attention_probs_dropout_prob": m.attention_probs_dropout_prob,
          "classifier_dropout": None if m.classifier_dropout < 0 else m.classifier_dropout,
          "scan_layers": m.scan_layers, "remat_policy": m.remat_policy,
          "attention_impl": m.attention_impl}


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
    bcfg = PRESETS[config.model.preset].replace(vocab_size=vocab_size, **_overrides(config))
    return fresh_model(bcfg, model_task, seed, head_kwargs)
  if _is_workdir(src):
    from bert_jax import export
    try:
      pretrained, step = export.pretrained_model(src)
    except export.ExportError as e:
      raise UserError(f"--config.init_from: {e}") from None
    logging.info("init from pretraining run %s, step %d", src, step)
    model = fresh_model(pretrained.config.replace(**_overrides(config)), model_task, seed,
                        head_kwargs)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    encoder = nnx.to_pure_dict(nnx.state(pretrained, nnx.Param))["bert"]
    params["bert"] = {k: encoder[k] for k in params["bert"]}  # no pooler for tagging / QA
    with_params(model, params)
  else:
    try:
      model = load_pretrained(src, model_task, config_overrides=_overrides(config), seed=seed,
                              **head_kwargs)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
      raise UserError(f"--config.init_from: {e}") from None
  if config.model.preset:
    want = PRESETS[config.model.preset]
    for field in _ARCH_FIELDS:
      if getattr(model.config, field) != getattr(want, field):
        raise UserError(
            f"--config.init_from={src}: the checkpoint has {field}="
            f"{getattr(model.config, field)} but --config.model.preset={config.model.preset} "
            f"has {field}={getattr(want, field)}; set --config.model.preset='' to use the "
            "checkpoint's size or pick the matching preset")
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
    out = setup.predict_step(params, train_lib.global_batch(batch, setup.batch_sharding))
    outs.append(jax.tree.map(np.asarray, jax.device_get(out)))
  return {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}


def _optimizer_config(config, num_steps: int):
  """config.optimizer with warmup_steps resolved from warmup_proportion (for optim)."""
  opt = ml_collections.ConfigDict(config.optimizer.to_dict())
  if opt.warmup_steps < 0:
    opt.warmup_steps = int(round(opt.warmup_proportion * num_steps))
  return opt


# ---- the run ----------------------------------------------------------------------------------
def finetune_and_evaluate(config, workdir: str) -> dict:
  """Fine-tunes (or resumes) to the end; returns results (best metric, per-epoch evals)."""
  from bert_jax.interop import load_pretrained, save_pretrained
  from bert_jax.tokenization import Tokenizer, VocabError
  validate_config(config)
  workdir = epath.Path(workdir)
  lead = jax.process_index() == 0
  if lead:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
  try:
    mesh = sharding.create_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  except sharding.MeshError as e:
    raise UserError(str(e)) from None

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
  eval_split, test_split = task.load("eval"), task.load("test")
  b = config.train.batch_size
  dp = sharding.data_parallel_size(mesh)
  for key, size in (("train.batch_size", b), ("eval.batch_size", config.eval.batch_size)):
    if size % dp or size % jax.process_count():
      raise UserError(f"--config.{key}={size} is not divisible by the data-parallel size {dp} "
                      f"and the {jax.process_count()} processes")
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
               len(eval_split.examples) if eval_split else 0,
               len(test_split.examples) if test_split else 0, num_steps, steps_per_epoch, b)

  # Model, sharded state (resume > init_from > fresh).
  model = initial_model(config, task.model_task, task.head_kwargs, tokenizer.vocab_size)
  setup = finetune_lib.build(config.task, model.config, task.head_kwargs,
                             _optimizer_config(config, num_steps), num_steps, mesh)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints",
                                    max_to_keep=config.checkpoint.max_to_keep,
                                    async_save=config.checkpoint.async_save)
  state, restored = ckpt.restore(setup.abstract_state)
  if state is None:
    state = finetune_lib.initial_state(setup, nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                                       config.train.seed)
  else:
    logging.info("resumed from checkpoint at step %d", restored)
  del model
  metric = config.eval.best_metric or task.default_metric
  best_dir = workdir / "best"
  results_path = workdir / "results.json"
  results = json.loads(results_path.read_text()) if restored and results_path.exists() else {
      "task": config.task, "metric": metric, "best": None, "best_step": None, "evals": []}
  id2label = dict(enumerate(task.label_names)) if task.label_names else None
  keys = INPUTS + task.targets
  metrics_file = (workdir / "metrics.jsonl").open("a") if lead else None

  def write(kind: str, step: int, scalars: dict):
    if metrics_file:
      metrics_file.write(json.dumps({"kind": kind, "step": step, **scalars}) + "\n")
      metrics_file.flush()

  def run_eval(step: int):
    if eval_split is None:
      return
    t = time.perf_counter()
    outputs = predict(setup, state.params, eval_split.features, config.eval.batch_size)
    scores = {k: float(v) for k, v in task.evaluate(eval_split, outputs).items()}
    if metric not in scores:
      raise UserError(f"--config.eval.best_metric={metric!r} is not one of {', '.join(scores)}")
    scores["epoch"] = step / steps_per_epoch
    write("eval", step, scores)
    logging.info("eval step %d (epoch %.2f) | %s | %.1fs", step, scores["epoch"],
                 " ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "epoch"),
                 time.perf_counter() - t)
    results["evals"].append({"step": step, **scores})
    if lead:
      task.write_predictions(eval_split, outputs, str(workdir))
    better = results["best"] is None or (
        scores[metric] < results["best"] if metric == "mse" else scores[metric] > results["best"])
    if better:
      results.update(best=scores[metric], best_step=step, best_eval=scores)
      params = setup.gather_params(state.params)
      if lead:
        best = with_params(nnx.eval_shape(lambda: create_model(
            setup.bert_config, task.model_task, **task.head_kwargs)), jax.device_get(params))
        save_pretrained(best, str(best_dir), format="orbax", vocab=vocab, overwrite=True,
                        id2label=id2label, extra_files={"eval.json": json.dumps(scores) + "\n"})
      if test_split is not None:  # test predictions always come from the best model
        outputs = predict(setup, state.params, test_split.features, config.eval.batch_size)
        if lead:
          task.write_predictions(test_split, outputs, str(workdir))

  step = int(jax.device_get(state.step))
  pending, window_start, window_steps = [], time.perf_counter(), 0
  try:
    while step < num_steps:
      batch = train_batch(train.features, keys, step, b, config.train.seed)
      state, m = setup.train_step(state, train_lib.global_batch(batch, setup.batch_sharding))
      step += 1
      pending.append(m)
      window_steps += 1
      if step % config.train.log_every_steps == 0 or step == num_steps:
        fetched = jax.device_get(pending)
        if not all(bool(x["finite"]) for x in fetched):
          raise NonFiniteError(f"non-finite loss or gradient by step {step}; lower "
                               "--config.optimizer.learning_rate or check the labels")
        mean = {k: float(np.mean([x[k] for x in fetched])) for k in ("loss", "grad_norm",
                                                                       "learning_rate")}
        mean["steps_per_s"] = window_steps / (time.perf_counter() - window_start)
        write("train", step, mean)
        logging.info("step %d/%d (epoch %.2f) | loss %.4f | lr %.2e | gnorm %.3f | %.1f steps/s",
                     step, num_steps, step / steps_per_epoch, mean["loss"],
                     mean["learning_rate"], mean["grad_norm"], mean["steps_per_s"])
        pending, window_start, window_steps = [], time.perf_counter(), 0
      if step % every == 0 or step == num_steps:
        run_eval(step)
        ckpt.save(step, state)
        if lead:
          _write_json(results_path, results)
    ckpt.wait()
  finally:
    if metrics_file:
      metrics_file.close()
    ckpt.close()

  if config.export.format and lead and best_dir.exists():
    save_pretrained(load_pretrained(str(best_dir), None), str(workdir / "export"),
                    format=config.export.format, overwrite=True, id2label=id2label)
  results["final_eval"] = results["evals"][-1] if results["evals"] else {}
  if lead:
    _write_json(results_path, results)
  return results


FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Config file (configs/finetune/*.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, predictions and the best "
                      "model go.")


class _QuietOrbax(pylogging.Filter):
  """Keeps Orbax's per-save INFO lines out of the log (its warnings still show)."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from bert_jax.checkpointing import CheckpointSaveError
  from bert_jax.interop import CheckpointError
  for handler in pylogging.getLogger().handlers + pylogging.getLogger("absl").handlers:
    handler.addFilter(_QuietOrbax())
  pylogging.getLogger("bert_jax").setLevel(pylogging.INFO)
  try:
    if FLAGS.config is None:
      raise UserError("--config is required, e.g. --config=configs/finetune/glue_sst2.py")
    if not FLAGS.workdir:
      raise UserError("--workdir is required")
    results = finetune_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (UserError, DataError, CheckpointError, CheckpointSaveError, train_lib.ConfigError,
          sharding.MeshError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
  except NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_NONFINITE)
  best = results["best"]
  print(f"best {results['metric']} {best if best is None else round(best, 4)} at step "
        f"{results['best_step']}; results in {FLAGS.workdir}/results.json")


if __name__ == "__main__":
  host_memory.reexec_with_huge_pages()  # glibc reads its tunables only at start-up
  define_flags()
  app.run(main)
