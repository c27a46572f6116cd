r"""Pretrain BERT (masked LM + next sentence prediction) on a device mesh.

  python -m bert_jax.train --config=configs/bert_base.py --workdir=DIR \
      --config.data.data_dir=DATA [--config.train.batch_size=512 ...]

Same command on one CPU, one GPU, an 8-GPU box or every host of a TPU pod (multi-host is
auto-detected on Cloud TPU and SLURM; elsewhere pass --coordinator_address/--num_processes/
--process_id). Restarting with the same --workdir resumes from the newest complete checkpoint.
SIGTERM (preemption, `scancel`, Ctrl-C's TERM) saves a checkpoint at the next step boundary
and exits with status 143. Start-up errors (bad config, flags, data) print one line and exit 2;
a run stopped by a non-finite loss exits 3; one whose checkpoint could not be written (disk full)
exits 4 with earlier checkpoints intact.

Writes in WORKDIR: config.json (the resolved config), checkpoints/, metrics.jsonl (train and
eval scalars, one JSON object per line), TensorBoard events (train/, eval/), profile/.
"""

from __future__ import annotations

import contextlib
import json
import logging as pylogging
import math
import os
import re
import signal
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from bert_jax import distributed, host_memory, paths, sharding, train_lib
from bert_jax.checkpointing import Checkpointer, CheckpointMismatchError, CheckpointSaveError
from bert_jax.train_step import eval_summary

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and metrics go "
                               "(local or gs://).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0, for "
                                   "explicit multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in an explicit "
                                      "multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's id in an explicit run.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Compile the train step ahead of time "
                                  "for --topology and report memory/FLOPs; no training.")
_TOPOLOGY = flags.DEFINE_string("topology", "", "TPU topology for --compile_only, e.g. "
                                "v5p-128, v4-32, v5e-8, v6e-16, v5p:2x2x1.")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "TPU slices for --compile_only "
                                   "(multi-slice over DCN).")

EXIT_PREEMPTED = 143  # 128 + SIGTERM: the checkpoint is saved; relaunch to resume.
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_SAVE_FAILED = 4


class UserError(Exception):
  """An error the user fixes (config, flags, data); printed as one line."""


class NonFiniteError(Exception):
  pass


class SaveError(Exception):
  """A checkpoint could not be written (disk full, permissions); earlier ones are intact."""


class _Preemption:
  """SIGTERM -> save at the next step boundary, agreed by all processes.

  The handler is the process's only while training runs: close() puts the previous one back (a
  library caller's later SIGTERM, or a multiprocessing.Pool's terminate() of workers forked
  afterwards, must not be swallowed by a flag nobody reads).
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:  # JAX's preemption service syncs the step across hosts
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested


class _AppendLines:
  """Appends text to a file so that a failed write (a full disk) loses and splits nothing."""

  def __init__(self, path: epath.Path):
    self._pending = b""
    self._local = not paths.is_url(path)
    if self._local:  # unbuffered: os.write says how many bytes the disk took
      self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    else:  # gs:// and the like write whole objects on close; nothing partial to track
      self._file = path.open("ab")

  def write(self, text: str) -> None:
    self._pending += text.encode()
    while self._pending:  # raises OSError (e.g. ENOSPC) when the disk takes nothing
      if self._local:
        self._pending = self._pending[os.write(self._fd, self._pending):]
      else:
        self._file.write(self._pending)
        self._file.flush()
        self._pending = b""

  def close(self) -> None:
    try:
      self.write("")
    finally:
      if self._local:
        os.close(self._fd)
      else:
        self._file.close()


class _MetricWriter:
  """Process 0 writes metrics.jsonl and TensorBoard events; the others write nothing.

  Metrics are not worth a run: when they cannot be written (a full disk), one warning says so
  and training goes on; every later write retries, and a line says when writing works again.
  metrics.jsonl then continues where it stopped: the bytes the disk did not take are kept and
  written first, so no line is lost or split.
  """

  def __init__(self, workdir: epath.Path):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    self._workdir = workdir
    self._failing = False
    self._jsonl = _AppendLines(workdir / "metrics.jsonl")
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
    self._tf = tf
    self._writers = {}
    try:
      import tensorboard  # noqa: F401  (tf.summary.scalar needs it; tensorflow-cpu does not pull it)
    except ImportError:
      logging.warning("TensorBoard is not installed: writing metrics.jsonl only "
                      "(pip install tensorboard for event files).")
      return
    self._writers = {k: tf.summary.create_file_writer(str(workdir / k))
                     for k in ("train", "eval")}

  def write(self, kind: str, step: int, scalars: dict) -> None:
    if not self.active:
      return
    with self._tolerate_io_errors(f"metrics of step {step}"):
      self._jsonl.write(json.dumps({"kind": kind, "step": step, **scalars}) + "\n")
      if kind in self._writers:
        with self._writers[kind].as_default():
          for k, v in scalars.items():
            self._tf.summary.scalar(k, v, step=step)
        self._writers[kind].flush()

  def close(self):
    if self.active:
      with self._tolerate_io_errors("the last metrics"):
        try:
          self._jsonl.close()
        finally:  # the event files are closed even when metrics.jsonl cannot be
          for w in self._writers.values():
            w.close()

  @contextlib.contextmanager
  def _tolerate_io_errors(self, what: str):
    try:
      yield
    except (OSError, self._tf.errors.OpError) as e:
      if not self._failing:
        reason = getattr(e, "strerror", None) or re.sub(  # TF: "{{function_node ...}} path; why"
            r"\{\{[^}]*\}\}\s*", "", getattr(e, "message", None) or str(e)).strip()
        logging.warning("%s could not be written to %s (%s); training goes on, and metrics are "
                        "retried at every log step", what, self._workdir,
                        reason.splitlines()[0][:300] if reason else type(e).__name__)
      self._failing = True
    else:
      if self._failing:
        logging.info("metrics are written to %s again (%s)", self._workdir, what)
      self._failing = False


def _fmt_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _data_source(config):
  """(vocab_size, train iterator factory, eval batches factory) for config.data."""
  d = config.data
  if d.source == "synthetic":
    vocab, pid, n = d.synthetic_vocab_size, jax.process_index(), jax.process_count()

    def my_rows(batch, size):  # this process's rows of one global batch: runs with any
      per = size // n           # process count see the same global data
      return {k: v[pid * per:(pid + 1) * per] for k, v in batch.items()}

    class Synthetic:
      def __init__(self):
        self.i = 0

      def __next__(self):
        self.i += 1
        b = config.train.batch_size
        return my_rows(train_lib.synthetic_batch(b, d.seq_len, d.max_predictions_per_seq,
                                                 vocab, d.seed * 1_000_003 + self.i), b)

      def save(self, directory):
        (epath.Path(directory) / f"synthetic_{pid}.json").write_text(json.dumps({"i": self.i}))

      def restore(self, directory):
        self.i = json.loads((epath.Path(directory) / f"synthetic_{pid}.json").read_text())["i"]

    def evals():
      eb = config.eval.batch_size
      num = config.eval.num_batches if config.eval.num_batches > 0 else 4
      return [my_rows(dict(train_lib.synthetic_batch(eb, d.seq_len, d.max_predictions_per_seq,
                                                     vocab, 10 ** 9 + i),
                           example_weight=np.ones(eb, np.float32)), eb) for i in range(num)]

    return vocab, {}, Synthetic, evals

  from bert_jax import input_pipeline
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
  kwargs = dict(seq_len=d.seq_len, max_predictions_per_seq=d.max_predictions_per_seq,
                process_index=jax.process_index(), process_count=jax.process_count())

  def train_it():
    return input_pipeline.train_iterator(
        d.data_dir, d.dataset or None, batch_size=config.train.batch_size // jax.process_count(),
        seed=d.seed, masked_lm_prob=d.masked_lm_prob, shuffle_buffer=d.shuffle_buffer,
        pack=d.pack, max_sequences_per_row=d.max_sequences_per_row, pack_group=d.pack_group,
        **kwargs)

  def evals():
    return list(input_pipeline.eval_batches(
        d.data_dir, d.dataset or None, batch_size=config.eval.batch_size // jax.process_count(),
        seed=d.seed, max_batches=config.eval.num_batches if config.eval.num_batches > 0 else None,
        **kwargs))

  return info["vocab_size"], info, train_it, evals


def evaluate(setup: train_lib.TrainSetup, params, batches) -> dict:
  totals = None
  for b in batches:
    sums = setup.eval_step(params, train_lib.global_batch(b, setup.batch_sharding))
    totals = sums if totals is None else jax.tree.map(lambda a, c: a + c, totals, sums)
  totals = jax.tree.map(float, jax.device_get(totals))
  out = eval_summary(totals)
  out["examples"] = totals["nsp_count"]
  return out


def _warm_start(setup: train_lib.TrainSetup, path: str, seed: int):
  from bert_jax.interop import CheckpointError, load_pretrained
  from flax import nnx
  try:
    model = load_pretrained(path, "pretraining")
  except (CheckpointError, FileNotFoundError) as e:
    raise UserError(f"--config.init_from: {e}") from None
  ours, theirs = setup.bert_config, model.config
  for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size"):
    if getattr(ours, field) != getattr(theirs, field):
      raise UserError(f"--config.init_from={path}: the checkpoint has {field}="
                      f"{getattr(theirs, field)} but this run's model has "
                      f"{getattr(ours, field)}; use the matching model.preset / data")
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  logging.info("warm start from %s (fresh optimizer)", path)
  return train_lib.state_from_params(setup, params, seed)


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) training to config.train.num_steps; returns the last eval metrics."""
  train_lib.validate_config(config)
  workdir = epath.Path(workdir)
  lead = jax.process_index() == 0
  if lead:
    workdir.mkdir(parents=True, exist_ok=True)

  # Mesh, data, model, optimizer, sharded step functions.
  try:
    mesh = sharding.create_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                                dcn_data=config.mesh.dcn_data)
  except sharding.MeshError as e:
    raise UserError(str(e)) from None
  vocab_size, info, make_train_iterator, make_eval_batches = _data_source(config)
  try:
    train_lib.validate_batch(config, mesh, jax.process_count())
    setup = train_lib.build(config, mesh, vocab_size)
  except train_lib.ConfigError as e:
    raise UserError(str(e)) from None
  logging.info("mesh %s over %d devices (%d processes); model %s: %d layers, hidden %d, "
               "vocab %d, %s compute", dict(mesh.shape), mesh.size, jax.process_count(),
               config.model.preset, setup.bert_config.num_hidden_layers,
               setup.bert_config.hidden_size, vocab_size, setup.bert_config.dtype)

  # State: resume > warm start > fresh init. Never materialised whole on one device.
  train_iter = make_train_iterator()
  ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=config.checkpoint.max_to_keep,
                      async_save=config.checkpoint.async_save)
  try:
    state, restored_step = ckpt.restore(setup.abstract_state, train_iter)
  except CheckpointMismatchError as e:
    ckpt.close()
    raise UserError(str(e)) from None
  if state is not None:
    logging.info("resumed from checkpoint at step %d", restored_step)
  elif config.init_from:
    state = _warm_start(setup, config.init_from, config.train.seed)
  else:
    state = setup.init_state(jax.random.key(config.train.seed))
  if lead:  # the resolved config, once it is known to fit the workdir's checkpoints
    tmp = workdir / "config.json.tmp"
    tmp.write_text(config.to_json_best_effort(indent=2) + "\n")
    tmp.replace(workdir / "config.json")
  start_step = int(jax.device_get(state.step))
  skipped_at_start = int(jax.device_get(state.skipped_steps))
  num_steps = config.train.num_steps

  writer = _MetricWriter(workdir)
  preemption = _Preemption()
  peak, peak_how = train_lib.flops_lib.peak_flops(mesh.devices.flat,
                                                  config.train.peak_tflops_per_device)
  logging.info("MFU against %.4g TFLOP/s (%s); %.4g GFLOP per token", peak / 1e12, peak_how,
               setup.flops_per_token / 1e9)
  tokens_per_step = config.train.batch_size * config.data.seq_len
  eval_batches = None
  last_eval: dict = {}

  def run_eval(step):
    nonlocal eval_batches, last_eval
    logging.info("evaluating at step %d", step)
    if eval_batches is None:
      eval_batches = make_eval_batches()
    t = time.perf_counter()
    last_eval = evaluate(setup, state.params, eval_batches)
    writer.write("eval", step, last_eval)
    logging.info("eval step %d | mlm loss %.4f acc %.4f | nsp loss %.4f acc %.4f | %d examples "
                 "in %.1fs", step, last_eval["mlm_loss"], last_eval["mlm_accuracy"],
                 last_eval["nsp_loss"], last_eval["nsp_accuracy"], last_eval["examples"],
                 time.perf_counter() - t)

  def check_finite(skipped: int, step: int):
    new = skipped - skipped_at_start
    if config.train.on_nonfinite == "stop" and new > 0:
      raise NonFiniteError(
          f"non-finite loss or gradient by step {step} (update not applied); the last good "
          f"checkpoint in {workdir / 'checkpoints'} stays the latest; lower "
          "optimizer.learning_rate, check the data's vocab_size, or set "
          "--config.train.on_nonfinite=skip")
    if new > config.train.max_skipped_steps:
      raise NonFiniteError(f"{new} steps skipped for non-finite loss/gradients (more than "
                           f"train.max_skipped_steps={config.train.max_skipped_steps})")

  def save(step, final=False):
    """Checkpoint at `step`. A failed save stops the run (checkpoint.on_save_error=stop, and
    always for the final save) or is logged and training continues (=continue)."""
    check_finite(int(jax.device_get(state.skipped_steps)), step)
    logging.info("saving checkpoint at step %d%s", step, "" if final else " (async)")
    try:
      ckpt.save(step, state, train_iter)
      if final:
        ckpt.wait()
    except CheckpointSaveError as e:
      if final or config.checkpoint.on_save_error == "stop":
        raise SaveError(str(e)) from None
      logging.error("%s; training continues (checkpoint.on_save_error=continue)", e)

  pending: list = []  # metrics of steps since the last log (device arrays: no sync per step)
  window_start, window_steps = None, 0
  profiling = False
  step = start_step
  try:
    while step < num_steps:
      if step == config.train.profile_start_step and lead:
        jax.profiler.start_trace(str(workdir / "profile"))
        profiling = True
      batch = train_lib.global_batch(next(train_iter), setup.batch_sharding)
      state, metrics = setup.train_step(state, batch)
      step += 1
      pending.append(metrics)
      window_steps += 1
      if profiling and step >= config.train.profile_start_step + config.train.profile_num_steps:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        profiling = False
      if window_start is None:  # the first step compiles: time from its end
        jax.block_until_ready(metrics)
        window_start, window_steps, pending = time.perf_counter(), 0, []
      elif step % config.train.log_every_steps == 0 or step == num_steps:
        fetched = jax.device_get(pending)
        elapsed = time.perf_counter() - window_start
        mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]
                if k not in ("finite", "skipped_steps")}
        step_time = elapsed / max(window_steps, 1)
        mean.update(
            steps_per_s=1 / step_time, seq_per_s=mean["sequences"] / step_time,
            tokens_per_s=tokens_per_step / step_time,
            nonpad_fraction=mean["tokens"] / tokens_per_step,
            mfu=setup.flops_per_token * tokens_per_step / step_time / peak,
            skipped_steps=int(fetched[-1]["skipped_steps"]))
        writer.write("train", step, mean)
        logging.info(
            "step %d/%d | loss %.4f | mlm %.4f acc %.4f | nsp %.4f acc %.4f | lr %.2e | gnorm "
            "%.3f | %.1f seq/s %.0f tok/s (%.0f%% non-pad) | MFU %.1f%% | ETA %s", step,
            num_steps, mean["loss"], mean["mlm_loss"], mean["mlm_accuracy"], mean["nsp_loss"],
            mean["nsp_accuracy"], mean["learning_rate"], mean["grad_norm"], mean["seq_per_s"],
            mean["tokens_per_s"], 100 * mean["nonpad_fraction"], 100 * mean["mfu"],
            _fmt_eta((num_steps - step) * step_time))
        check_finite(mean["skipped_steps"], step)
        window_start, window_steps, pending = time.perf_counter(), 0, []
      if config.eval.every_steps and step % config.eval.every_steps == 0 and step < num_steps:
        run_eval(step)
      if step % config.checkpoint.every_steps == 0 and step < num_steps:
        save(step)
      if preemption.reached(step):
        logging.warning("preemption/SIGTERM: saving a checkpoint at step %d and exiting", step)
        if ckpt.latest_step() != step:
          save(step, final=True)
        ckpt.wait()
        raise SystemExit(EXIT_PREEMPTED)
    if start_step < num_steps or not last_eval:
      run_eval(step)
    if ckpt.latest_step() != step:
      save(step, final=True)
    ckpt.wait()
  finally:
    preemption.close()
    if profiling:
      jax.profiler.stop_trace()
    writer.close()
    try:
      ckpt.close()
    except Exception:  # noqa: BLE001 - never mask the original error
      pass
  return last_eval


class _QuietLibraries(pylogging.Filter):
  """Keeps Orbax's per-save INFO chatter out of the training log (warnings still show)."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs():
  for handler in pylogging.getLogger().handlers + pylogging.getLogger("absl").handlers:
    handler.addFilter(_QuietLibraries())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  pylogging.getLogger("bert_jax").setLevel(pylogging.INFO)
  quiet_library_logs()
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if jax.process_index() != 0:
      logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    if config is None:
      raise UserError("--config is required, e.g. --config=configs/tiny.py")
    if _COMPILE_ONLY.value:
      from bert_jax import aot
      if not _TOPOLOGY.value:
        raise UserError("--compile_only needs --topology, e.g. --topology=v5p-8")
      try:
        aot.compile_only(config, _TOPOLOGY.value, _NUM_SLICES.value)
      except aot.DoesNotFit as e:
        raise UserError(str(e)) from None
      return
    if not _WORKDIR.value:
      raise UserError("--workdir is required (a local path or gs://bucket/path)")
    train_and_evaluate(config, _WORKDIR.value)
  except (UserError, train_lib.ConfigError, sharding.MeshError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
  except NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_NONFINITE)
  except SaveError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_SAVE_FAILED)


def _config_key_hint(argv, name: str) -> str:
  """The --config.* flag that mentions an unknown key `name`."""
  for arg in argv:
    if arg.startswith("--config.") and f".{name}" in arg.split("=")[0]:
      return arg.split("=")[0]
  return "--config.*"


def _config_path(argv) -> str:
  return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "?")


def parse_flags(argv):
  """absl flag parsing with one-line errors for bad flags, config files and config keys."""
  try:
    rest = flags.FLAGS(argv)
    if _CONFIG.value is not None:  # config files load lazily: fail here, not mid-run
      _CONFIG.value.keys()
    return rest
  except flags.Error as e:
    msg = str(e)
  except (KeyError, AttributeError) as e:  # ml_collections: an unknown --config.<key>
    name = str(e).strip("\"'")
    if "get_config" in name:
      msg = (f"--config={_config_path(argv)}: the file defines no get_config(); pass a file "
             "such as configs/tiny.py")
    else:
      msg = (f"{_config_key_hint(argv, name)}: {name!r} is not a config key; every key is "
             "listed with its meaning in configs/default.py")
  except OSError as e:  # the config file itself failed to load
    path = _config_path(argv)
    detail = [ln.strip() for ln in str(e).splitlines() if "Errno" in ln or "Error" in ln]
    msg = (f"--config={path}: cannot load the config file"
           f" ({detail[-1] if detail else type(e).__name__}); pass a file such as "
           "configs/tiny.py")
  print(f"error: {msg.splitlines()[0]}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


if __name__ == "__main__":
  host_memory.reexec_with_huge_pages()  # glibc reads its tunables only at start-up
  app.run(main, flags_parser=parse_flags)
