"""A pretraining run: config -> mesh, data, sharded state (resume > warm start > init) -> the loop.

`train_and_evaluate(config, workdir)` is what `python -m bert_jax.train` calls (see that module
for the command line). Writes in WORKDIR: config.json (the resolved config), checkpoints/,
metrics.jsonl (train and eval scalars, one JSON object per line), TensorBoard events (train/,
eval/), profile/.
"""

from __future__ import annotations

import dataclasses
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
from bert_jax.models import flops as flops_lib
from bert_jax.parallel import sharding
from bert_jax.training import config as config_lib
from bert_jax.training import loop
from bert_jax.training import pretraining
from bert_jax.training.checkpointing import Checkpointer
from bert_jax.training.train_state import TrainState, global_batch, state_from_params


class SyntheticBatches:
  """Random well-formed batches (benchmarks, smoke tests); the position is a counter. Every
  process takes its rows of the same global batch, so any process count sees the same data."""

  def __init__(self, config):
    self._config, self.i = config, 0

  def _rows(self, batch: dict, size: int) -> dict:
    per, pid = size // jax.process_count(), jax.process_index()
    return {k: v[pid * per:(pid + 1) * per] for k, v in batch.items()}

  def __next__(self) -> dict:
    self.i += 1
    d, b = self._config.data, self._config.train.batch_size
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


def data_source(config) -> DataSource:
  """config.data -> the vocabulary size, this process's train iterator and eval batches."""
  d = config.data
  if d.source == "synthetic":
    synthetic = SyntheticBatches(config)
    return DataSource(d.synthetic_vocab_size, lambda: synthetic, synthetic.eval_batches)
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
  common = dict(seq_len=d.seq_len, max_predictions_per_seq=d.max_predictions_per_seq,
                process_index=jax.process_index(), process_count=jax.process_count(),
                seed=d.seed)

  def train_iterator():
    return input_pipeline.train_iterator(
        d.data_dir, d.dataset or None, batch_size=config.train.batch_size // jax.process_count(),
        masked_lm_prob=d.masked_lm_prob, shuffle_buffer=d.shuffle_buffer, pack=d.pack,
        max_sequences_per_row=d.max_sequences_per_row, pack_group=d.pack_group, **common)

  def eval_batches():
    return list(input_pipeline.eval_batches(
        d.data_dir, d.dataset or None, batch_size=config.eval.batch_size // jax.process_count(),
        max_batches=config.eval.num_batches if config.eval.num_batches > 0 else None, **common))

  return DataSource(info["vocab_size"], train_iterator, eval_batches)


def evaluate(setup: pretraining.TrainSetup, params, batches) -> dict:
  """MLM / NSP loss and accuracy summed over `batches` (this process's rows of each)."""
  totals = None
  for b in batches:
    sums = setup.eval_step(params, global_batch(b, setup.batch_sharding))
    totals = sums if totals is None else jax.tree.map(lambda a, c: a + c, totals, sums)
  totals = jax.tree.map(float, jax.device_get(totals))
  out = pretraining.eval_summary(totals)
  out["examples"] = totals["nsp_count"]
  return out


class PretrainingTask:
  """MLM + NSP as the loop runs it (see `loop.Task`)."""
  nonfinite_hint = "lower optimizer.learning_rate, check the data's vocab_size"

  def __init__(self, config, setup: pretraining.TrainSetup, data: DataSource):
    self.train_step = setup.train_step
    self.batch_sharding: NamedSharding = setup.batch_sharding
    self.tokens_per_step = config.train.batch_size * config.data.seq_len
    self.flops_per_token = setup.flops_per_token
    self._setup, self._data, self._eval_batches = setup, data, None

  def evaluate(self, state: TrainState, step: int) -> dict:
    if self._eval_batches is None:  # read once, on the first eval
      self._eval_batches = self._data.eval_batches()
    t = time.perf_counter()
    out = evaluate(self._setup, state.params, self._eval_batches)
    logging.info("eval step %d | mlm loss %.4f acc %.4f | nsp loss %.4f acc %.4f | %d examples "
                 "in %.1fs", step, out["mlm_loss"], out["mlm_accuracy"], out["nsp_loss"],
                 out["nsp_accuracy"], out["examples"], time.perf_counter() - t)
    return out

  def log_line(self, step: int, num_steps: int, m: dict) -> str:
    return (f"step {step}/{num_steps} | loss {m['loss']:.4f} | mlm {m['mlm_loss']:.4f} acc "
            f"{m['mlm_accuracy']:.4f} | nsp {m['nsp_loss']:.4f} acc {m['nsp_accuracy']:.4f} | "
            f"lr {m['learning_rate']:.2e} | gnorm {m['grad_norm']:.3f} | {m['seq_per_s']:.1f} "
            f"seq/s {m['tokens_per_s']:.0f} tok/s ({100 * m['nonpad_fraction']:.0f}% non-pad)")

  def checkpointed(self, step: int) -> None:
    del step


def warm_start(setup: pretraining.TrainSetup, path: str, seed: int) -> TrainState:
  """A fresh train state (new optimizer, step 0) around the parameters of any directory
  `load_pretrained` reads, checked to have this run's architecture."""
  from flax import nnx

  from bert_jax.interop import CheckpointError, load_pretrained
  try:
    model = load_pretrained(path, "pretraining")
  except (CheckpointError, FileNotFoundError) as e:
    raise UserError(f"--config.init_from: {e}") from None
  config_lib.check_architecture(model.config, setup.bert_config, source=path,
                                wanted_by="this run's model",
                                fix="use the matching model.preset / data")
  logging.info("warm start from %s (fresh optimizer)", path)
  return state_from_params(setup, nnx.to_pure_dict(nnx.state(model, nnx.Param)), seed)


def write_config(config, workdir: epath.Path) -> None:
  """WORKDIR/config.json: the resolved config (process 0, atomically)."""
  if jax.process_index() == 0:
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
  setup = pretraining.build(config, mesh, data.vocab_size)
  logging.info("mesh %s over %d devices (%d processes); model %s: %d layers, hidden %d, "
               "vocab %d, %s compute", dict(mesh.shape), mesh.size, jax.process_count(),
               config.model.preset, setup.bert_config.num_hidden_layers,
               setup.bert_config.hidden_size, data.vocab_size, setup.bert_config.dtype)

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
    write_config(config, workdir)  # once it is known to fit the workdir's checkpoints
    peak, peak_how = flops_lib.peak_flops(mesh.devices.flat, config.train.peak_tflops_per_device)
    logging.info("MFU against %.4g TFLOP/s (%s); %.4g GFLOP per token", peak / 1e12, peak_how,
                 setup.flops_per_token / 1e9)
    cfg = loop.LoopConfig.from_config(config, config.train.num_steps, config.eval.every_steps,
                                      config.checkpoint.every_steps)
    _, last_eval = loop.run(state, PretrainingTask(config, setup, data), train_iterator,
                            ckpt=ckpt, cfg=cfg, peak_flops=peak, workdir=workdir)
  return last_eval
