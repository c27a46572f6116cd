"""A pretraining run: config -> mesh, data, sharded state (resume > warm start > init) -> the loop.

`train_and_evaluate(config, workdir)` is what `python -m bert_jax.train` calls (see that module
for the command line). Writes in WORKDIR: config.json (the resolved config), checkpoints/,
metrics.jsonl (train and eval scalars, one JSON object per line), TensorBoard events (train/,
eval/), profile/, and with train.target_mlm_accuracy target.json (reached or not, when, the time
to it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import NamedSharding

from bert_jax import paths
from bert_jax.errors import UserError
from bert_jax.models import attention
from bert_jax.models import flops as flops_lib
from bert_jax.parallel import sharding
from bert_jax.training import batch_warmup
from bert_jax.training import config as config_lib
from bert_jax.training import loop
from bert_jax.training import pretraining
from bert_jax.training.checkpointing import Checkpointer
from bert_jax.training.train_state import TrainState, global_batch, state_from_params


class SyntheticBatches:
  """Random well-formed batches (benchmarks, smoke tests); the position is a counter. Every
  process takes its rows of the same global batch, so any process count sees the same data."""

  def __init__(self, config, batch_size: int | None = None):
    self._config, self.i = config, 0
    self._batch_size = batch_size or config.train.batch_size  # global rows

  def _rows(self, batch: dict, size: int) -> dict:
    per, pid = size // jax.process_count(), jax.process_index()
    return {k: v[pid * per:(pid + 1) * per] for k, v in batch.items()}

  def __next__(self) -> dict:
    self.i += 1
    d, b = self._config.data, self._batch_size
    return self._rows(pretraining.synthetic_batch(b, d.seq_len, d.max_predictions_per_seq,
                                                  d.synthetic_vocab_size,
                                                  d.seed * 1_000_003 + self.i), b)

  def eval_batches(self) -> list[dict]:
    d, eb = self._config.data, self._config.eval.batch_size
    num = self._config.eval.num_batches if self._config.eval.num_batches > 0 else 4
    return [self._rows(dict(pretraining.synthetic_batch(
        eb, d.seq_len, d.max_predictions_per_seq, d.synthetic_vocab_size, 10 ** 9 + i),
        example_weight=np.ones(eb, np.float32)), eb) for i in range(num)]

  def save(self, directory):
    path = epath.Path(directory) / f"synthetic_{jax.process_index()}.json"
    path.write_text(json.dumps({"i": self.i}))

  def restore(self, directory):
    path = epath.Path(directory) / f"synthetic_{jax.process_index()}.json"
    self.i = json.loads(path.read_text())["i"]


@dataclasses.dataclass
class DataSource:
  vocab_size: int
  make_train_iterator: Callable[[], loop.DataIterator]  # () -> this process's train batches
  eval_batches: Callable[[], list]  # () -> this process's eval batches
  objective: str = "nsp"  # nsp | sop | none: the data's (pretraining.OBJECTIVES)
  # () -> eval batches at REFERENCE_MASKING, when the run masks otherwise (else None)
  reference_eval_batches: Callable[[], list] | None = None


def dataset_objective(info: dict) -> str:
  """The sentence objective a prepared dataset records (datasets from before it did: "nsp")."""
  return info.get("objective", "nsp")


def data_source(config) -> DataSource:
  """config.data -> the vocabulary size, this process's train iterator and eval batches, and
  the objective (the dataset's; data.objective, when set, must equal it)."""
  d = config.data
  wanted = d.get("objective", "")  # a config.json from before the key: "" (the dataset's)
  # Batch-size warmup: the pipeline yields batches of its smallest size, the wrapper joins them.
  warmup = batch_warmup.schedule_from_config(config)
  rows = warmup.min_size if warmup is not None else config.train.batch_size

  def scheduled(units):
    if warmup is None:
      return units
    return batch_warmup.WarmupBatches(units, warmup, jax.process_index())

  if d.source == "synthetic":
    synthetic = SyntheticBatches(config, rows)
    return DataSource(d.synthetic_vocab_size, lambda: scheduled(synthetic),
                      synthetic.eval_batches, wanted or "nsp")
  from bert_jax.data import input_pipeline
  if not d.data_dir:
    raise UserError("--config.data.data_dir is empty: point it at the directory written by "
                    "`python -m bert_jax.prepare --data_dir=...`")
  try:
    info = input_pipeline.dataset_info(d.data_dir, d.dataset or None)
  except (FileNotFoundError, ValueError) as e:
    raise UserError(str(e)) from None
  if info["max_seq_length"] != d.seq_len:
    raise UserError(f"--config.data.seq_len={d.seq_len} but the dataset in {d.data_dir} was "
                    f"prepared with max_seq_length={info['max_seq_length']}; set seq_len to "
                    "match or prepare another dataset")
  if info["masking"] == "static" and info["max_predictions_per_seq"] != d.max_predictions_per_seq:
    raise UserError(f"--config.data.max_predictions_per_seq={d.max_predictions_per_seq} but the "
                    f"statically masked dataset has {info['max_predictions_per_seq']}")
  objective = dataset_objective(info)
  if wanted and wanted != objective:
    raise UserError(f"--config.data.objective={wanted} but the dataset in {d.data_dir} was "
                    f"prepared with --objective={objective}; prepare another dataset or drop "
                    "the override")
  masking = _masking(config, info)
  common = dict(seq_len=d.seq_len, max_predictions_per_seq=d.max_predictions_per_seq,
                process_index=jax.process_index(), process_count=jax.process_count(),
                seed=d.seed)

  def train_iterator():
    return scheduled(input_pipeline.train_iterator(
        d.data_dir, d.dataset or None, batch_size=rows // jax.process_count(),
        shuffle_buffer=d.shuffle_buffer, pack=d.pack, max_sequences_per_row=d.max_sequences_per_row,
        pack_group=d.pack_group, **masking, **common))

  def eval_batches(masking=masking):
    return list(input_pipeline.eval_batches(
        d.data_dir, d.dataset or None, batch_size=config.eval.batch_size // jax.process_count(),
        max_batches=config.eval.num_batches if config.eval.num_batches > 0 else None,
        **masking, **common))

  # Runs with other rates or strategies compare on one more eval at BERT's 15% token masking
  # (dynamic datasets; a static one's masks are fixed at prepare).
  reference = None
  if info["masking"] == "dynamic" and masking != REFERENCE_MASKING:
    reference = functools.partial(eval_batches, REFERENCE_MASKING)
  return DataSource(info["vocab_size"], train_iterator, eval_batches, objective, reference)


# The masking every pretraining eval also reports (mlm15_loss / mlm15_accuracy): BERT's.
REFERENCE_MASKING = {"masked_lm_prob": 0.15, "masking_strategy": "token",
                     "mask_token_prob": 0.8, "random_token_prob": 0.1}


def _masking(config, info: dict) -> dict:
  """config.data's masking (strategy "" = the dataset's), checked against the dataset."""
  from bert_jax.data import examples, input_pipeline
  from bert_jax.data.prepare import check_masking_rates
  d = config.data
  # (a config.json from before these keys: their defaults, config_lib._ADDED_LATER)
  mask_token_prob, random_token_prob = d.get("mask_token_prob", 0.8), d.get("random_token_prob", 0.1)
  strategy = d.get("masking_strategy", "") or input_pipeline.dataset_masking_strategy(info)
  if strategy not in examples.MASKING_STRATEGIES:
    raise UserError(f"--config.data.masking_strategy={strategy}: must be one of "
                    f"{', '.join(examples.MASKING_STRATEGIES)} (or empty: the dataset's)")
  if info["masking"] == "static":
    if strategy != input_pipeline.dataset_masking_strategy(info):
      raise UserError(f"--config.data.masking_strategy={strategy} but the dataset in "
                      f"{d.data_dir} is statically masked with "
                      f"{input_pipeline.dataset_masking_strategy(info)}; drop the override or "
                      "prepare a dynamic dataset")
    return {"masked_lm_prob": info["masked_lm_prob"], "masking_strategy": strategy,
            "mask_token_prob": info.get("mask_token_prob", 0.8),
            "random_token_prob": info.get("random_token_prob", 0.1)}
  check_masking_rates(d.masked_lm_prob, d.max_predictions_per_seq, d.seq_len,
                      mask_token_prob, random_token_prob, flag="--config.data.")
  return {"masked_lm_prob": d.masked_lm_prob, "masking_strategy": strategy,
          "mask_token_prob": mask_token_prob, "random_token_prob": random_token_prob}


def evaluate(setup: pretraining.TrainSetup, params, batches) -> dict:
  """MLM (and NSP / SOP) loss and accuracy summed over `batches` (this process's rows of
  each); "none" has no nsp_* keys."""
  totals = None
  for b in batches:
    sums = setup.eval_step(params, global_batch(b, setup.batch_sharding))
    totals = sums if totals is None else jax.tree.map(lambda a, c: a + c, totals, sums)
  totals = jax.device_get(totals)
  counts = np.asarray(totals.pop("target_counts"))
  totals = {k: float(v) for k, v in totals.items()}
  out = pretraining.eval_summary({**totals, "target_counts": counts})
  out["examples"] = totals["sequences"]
  return out


class PretrainingTask:
  """MLM + NSP / SOP, or MLM alone ("none"), as the loop runs it (see `loop.Task`). The
  sentence metrics are nsp_loss / nsp_accuracy for both nsp and sop; the log lines name the
  objective ("| sop 0.6931 acc 0.5100 |") and leave it out for none."""
  nonfinite_hint = "lower optimizer.learning_rate, check the data's vocab_size"

  def __init__(self, config, setup: pretraining.TrainSetup, data: DataSource):
    self.train_step = setup.train_step
    self.batch_sharding: NamedSharding = setup.batch_sharding
    self._seq_len, self._batch_size = config.data.seq_len, config.train.batch_size
    self._warmup = batch_warmup.schedule_from_config(config)  # None: a fixed batch size
    self.flops_per_token = setup.flops_per_token
    self._setup, self._data, self._eval_batches = setup, data, None
    self._sentence = (setup.objective if pretraining.has_sentence_task(setup.objective)
                      else None)  # "nsp" | "sop" | None

  def evaluate(self, state: TrainState, step: int) -> dict:
    if self._eval_batches is None:  # read once, on the first eval
      self._eval_batches = self._data.eval_batches()
      reference = self._data.reference_eval_batches
      self._reference_batches = reference() if reference is not None else None
    t = time.perf_counter()
    out = evaluate(self._setup, state.params, self._eval_batches)
    # mlm15_*: MLM at BERT's 15% token masking, comparable across rates and strategies.
    if self._reference_batches is None:
      out["mlm15_loss"], out["mlm15_accuracy"] = out["mlm_loss"], out["mlm_accuracy"]
    else:
      ref = evaluate(self._setup, state.params, self._reference_batches)
      out["mlm15_loss"], out["mlm15_accuracy"] = ref["mlm_loss"], ref["mlm_accuracy"]
    sentence = (f" | {self._sentence} loss {out['nsp_loss']:.4f} acc {out['nsp_accuracy']:.4f}"
                if self._sentence else "")
    logging.info("eval step %d | mlm loss %.4f acc %.4f (unigram baseline %.4f)%s | mlm at 15%% "
                 "acc %.4f | %d examples in %.1fs", step, out["mlm_loss"], out["mlm_accuracy"],
                 out["unigram_accuracy"], sentence, out["mlm15_accuracy"], out["examples"],
                 time.perf_counter() - t)
    return out

  def positions_between(self, start: int, end: int) -> int:
    if self._warmup is None:
      return (end - start) * self._batch_size * self._seq_len
    return self._warmup.positions_before(end) - self._warmup.positions_before(start)

  def log_line(self, step: int, num_steps: int, m: dict) -> str:
    batch = f" | batch {m['batch_size']:.0f}" if self._warmup is not None else ""
    sentence = (f" | {self._sentence} {m['nsp_loss']:.4f} acc {m['nsp_accuracy']:.4f}"
                if self._sentence else "")
    return (f"step {step}/{num_steps} | loss {m['loss']:.4f} | mlm {m['mlm_loss']:.4f} acc "
            f"{m['mlm_accuracy']:.4f}{sentence} | lr {m['learning_rate']:.2e} | gnorm "
            f"{m['grad_norm']:.3f} | {m['seq_per_s']:.1f} seq/s {m['tokens_per_s']:.0f} tok/s "
            f"({100 * m['nonpad_fraction']:.0f}% non-pad){batch}")

  def checkpointed(self, step: int) -> None:
    del step


def warm_start(setup: pretraining.TrainSetup, path: str, seed: int) -> TrainState:
  """A fresh train state (new optimizer, step 0) around the parameters of any directory
  `load_pretrained` reads, as this run's model (setup.model_task: a masked_lm run drops a
  pretraining checkpoint's pooler and NSP head; a pretraining run initialises the ones a
  masked_lm checkpoint lacks), checked to have this run's architecture."""
  from flax import nnx

  from bert_jax.interop import CheckpointError, load_pretrained
  try:
    model = load_pretrained(path, setup.model_task)
  except (CheckpointError, FileNotFoundError) as e:
    raise UserError(f"--config.init_from: {e}") from None
  config_lib.check_architecture(model.config, setup.bert_config, source=path,
                                wanted_by="this run's model",
                                fix="use the matching model.preset / data")
  logging.info("warm start from %s (fresh optimizer)", path)
  return state_from_params(setup, nnx.to_pure_dict(nnx.state(model, nnx.Param)), seed)


def write_config(config, workdir: epath.Path, objective: str | None = None) -> None:
  """WORKDIR/config.json: the resolved config (process 0, atomically), with data.objective
  the run's `objective` when given (the dataset's, where the config left it "")."""
  if jax.process_index() == 0:
    if objective is not None and config.data.get("objective", "") != objective:
      config = config.copy_and_resolve_references()
      with config.unlocked():
        config.data.objective = objective
    paths.atomic_write(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) pretraining to config.train.num_steps; returns the last eval metrics."""
  config_lib.validate_config(config)
  workdir = epath.Path(workdir)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.create_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                              dcn_data=config.mesh.dcn_data)
  data = data_source(config)
  config_lib.validate_pretraining_batch(config, mesh, jax.process_count())
  setup = pretraining.build(config, mesh, data.vocab_size, data.objective)
  logging.info("mesh %s over %d devices (%d processes); model %s (%s): %d layers, hidden %d, "
               "vocab %d, %s compute; objective %s (%s)", dict(mesh.shape), mesh.size,
               jax.process_count(), config.model.preset, setup.bert_config.model_type,
               setup.bert_config.num_hidden_layers,
               setup.bert_config.hidden_size, data.vocab_size, setup.bert_config.dtype,
               data.objective, setup.model_task)

  try:
    path = attention.describe(setup.bert_config, backend=attention.backend_of(
        mesh.devices.flat[0]), seq_len=config.data.seq_len, packed=config.data.pack)
  except ValueError as e:  # a fused attention_impl this backend or length cannot run
    raise config_lib.ConfigError(f"--config.model.attention_impl: {e}") from None
  logging.info("attention: %s", path)

  # State: resume > warm start > fresh init. Never materialised whole on one device.
  train_iterator = data.make_train_iterator()
  with Checkpointer(workdir / "checkpoints", max_to_keep=config.checkpoint.max_to_keep,
                    async_save=config.checkpoint.async_save) as ckpt:
    state, restored_step = ckpt.restore(setup.abstract_state, train_iterator)
    if state is not None:
      logging.info("resumed from checkpoint at step %d", restored_step)
    elif config.init_from:
      state = warm_start(setup, config.init_from, config.train.seed)
    else:
      state = setup.init_state(jax.random.key(config.train.seed))
    write_config(config, workdir, data.objective)  # once it fits the workdir's checkpoints
    peak, peak_how = flops_lib.peak_flops(mesh.devices.flat, config.train.peak_tflops_per_device)
    logging.info("MFU against %.4g TFLOP/s (%s); %.4g GFLOP per token", peak / 1e12, peak_how,
                 setup.flops_per_token / 1e9)
    target = config.train.get("target_mlm_accuracy", 0.0)  # 0: none (config_lib._ADDED_LATER)
    cfg = loop.LoopConfig.from_config(config, config.train.num_steps, config.eval.every_steps,
                                      config.checkpoint.every_steps,
                                      target=("mlm_accuracy", target) if target else None)
    _, last_eval = loop.run(state, PretrainingTask(config, setup, data), train_iterator,
                            ckpt=ckpt, cfg=cfg, peak_flops=peak, workdir=workdir)
  return last_eval
