"""The training loop pretraining and fine-tuning both run.

`run(state, task, ...)` steps the jitted train step to `num_steps` and owns everything around it:
log windows (mean metrics, throughput, MFU, ETA) written to metrics.jsonl and TensorBoard, the
eval and checkpoint cadence, the final eval and save, the non-finite policy, SIGTERM (a save at
the next step boundary, then `Preempted`), a profiler window, exact resume (a checkpoint holds
the train state and the data iterator's position; `Checkpointer.restore` puts both back), and an
optional target (MLPerf style): stop at the first eval whose metric reaches it, save there, and
record the time to it in metrics.jsonl and WORKDIR/target.json.

What differs between objectives lives in a `Task`: its train step, its batches, how it evaluates
and how its log line reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Protocol

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import NamedSharding

from bert_jax import paths
from bert_jax.errors import NonFiniteError, Preempted, SaveError
from bert_jax.training.checkpointing import Checkpointer, CheckpointSaveError
from bert_jax.training.metrics import MetricWriter, format_eta
from bert_jax.training.preemption import Preemption
from bert_jax.training.train_state import TrainState, global_batch

# Metrics of a train step that are not averaged over a log window.
_NOT_AVERAGED = ("finite", "skipped_steps")
TARGET_FILE = "target.json"  # WORKDIR/target.json: whether and when the run reached its target
_IMPORTED = time.monotonic()  # the clock's origin where /proc is lacking


def seconds_since_process_start() -> float:
  """Seconds since this process started: Linux's /proc/self/stat start time against
  /proc/uptime (10 ms resolution; imports, data loading and compilation included); elsewhere
  since this module was imported (by `python -m bert_jax.train`, at its start)."""
  try:
    with open("/proc/self/stat") as f:  # field 22, starttime: clock ticks after boot
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      seconds = float(f.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    if seconds >= 0:
      return seconds
  except (OSError, ValueError, IndexError):
    pass
  return time.monotonic() - _IMPORTED


class DataIterator(Protocol):
  """This process's batches (numpy dicts), in an order that can be saved and restored."""

  def __next__(self) -> dict: ...

  def save(self, directory: str) -> None: ...

  def restore(self, directory: str) -> None: ...


class Task(Protocol):
  """What the loop needs from an objective (pretraining, a fine-tuning task)."""
  train_step: Callable  # jitted (state, global batch) -> (state, metrics); state donated
  batch_sharding: NamedSharding
  def positions_between(self, start: int, end: int) -> int:
    """Positions (rows x length, padding included) in the global batches of steps start..end-1,
    for tokens/s, MFU and ETA."""
  flops_per_token: float  # model FLOPs per position, forward + backward
  nonfinite_hint: str  # what to try when the loss goes non-finite

  def evaluate(self, state: TrainState, step: int) -> dict:
    """Eval scalars at `step` (written to metrics.jsonl by the loop; {} if there is no eval
    set); logs its own line."""

  def log_line(self, step: int, num_steps: int, mean: dict) -> str:
    """The task's part of a train log line from the window's mean metrics."""

  def checkpointed(self, step: int) -> None:
    """Called once a checkpoint of `step` has started (fine-tuning's results.json)."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  num_steps: int
  log_every_steps: int
  eval_every_steps: int  # 0: only at the end
  checkpoint_every_steps: int  # 0: only at the end (and on SIGTERM)
  on_nonfinite: str  # stop | skip
  max_skipped_steps: int
  on_save_error: str  # stop | continue
  profile_start_step: int  # -1: no profile
  profile_num_steps: int
  # (eval metric, value): stop at the first eval whose metric is >= value (None: no target).
  target: tuple[str, float] | None = None

  @classmethod
  def from_config(cls, config, num_steps: int, eval_every: int, checkpoint_every: int,
                  target: tuple[str, float] | None = None):
    """From a pretraining or fine-tuning config (both declare these train/checkpoint keys);
    `target` is the task's (pretraining: ("mlm_accuracy", train.target_mlm_accuracy))."""
    t = config.train
    return cls(num_steps=num_steps, log_every_steps=t.log_every_steps,
               eval_every_steps=eval_every, checkpoint_every_steps=checkpoint_every,
               on_nonfinite=t.on_nonfinite, max_skipped_steps=t.max_skipped_steps,
               on_save_error=config.checkpoint.on_save_error,
               profile_start_step=t.profile_start_step, profile_num_steps=t.profile_num_steps,
               target=target)


def _every(step: int, every: int) -> bool:
  return every > 0 and step % every == 0


class _Run:
  """One call of `run`: the state the loop carries between steps."""

  def __init__(self, state, task: Task, data: DataIterator, ckpt: Checkpointer,
               writer: MetricWriter, cfg: LoopConfig, peak_flops: float, workdir: epath.Path):
    self.state, self.task, self.data, self.ckpt = state, task, data, ckpt
    self.writer, self.cfg, self.peak, self.workdir = writer, cfg, peak_flops, workdir
    self.step = int(jax.device_get(state.step))
    self.start_step = self.step
    self.skipped_at_start = int(jax.device_get(state.skipped_steps))
    self.last_eval: dict = {}
    self.eval_step: int | None = None  # the step of last_eval
    self.reached: dict | None = None  # the target's record, once an eval reached it
    self.best: tuple[float, int] | None = None  # the target metric's best eval (value, step)
    self.pending: list = []  # metrics since the last log (device arrays: no sync per step)
    self.window_start: float | None = None  # None until the first (compiling) step is done
    self.window_steps = 0
    self.window_first = self.step  # the first step the window times
    self.rows: int | None = None  # the last batch's rows: a new size compiles a new step
    self.profiling = False

  # ---- one step ----------------------------------------------------------------------------
  def train_one_step(self) -> None:
    cfg = self.cfg
    if self.step == cfg.profile_start_step and jax.process_index() == 0:
      jax.profiler.start_trace(str(self.workdir / "profile"))
      self.profiling = True
    host = next(self.data)
    rows = len(next(iter(host.values())))
    compiles = self.window_start is None or rows != self.rows
    if compiles and self.pending:  # a new batch size (batch-size warmup): log what came before
      self.log_window()
    if compiles and self.rows is not None:
      logging.info("step %d: batch size %d (was %d), compiling its train step", self.step + 1,
                   rows * jax.process_count(), self.rows * jax.process_count())
    self.rows = rows
    self.state, metrics = self.task.train_step(self.state,
                                               global_batch(host, self.task.batch_sharding))
    self.step += 1
    self.pending.append(metrics)
    self.window_steps += 1
    if self.profiling and self.step >= cfg.profile_start_step + cfg.profile_num_steps:
      jax.block_until_ready(self.state)
      jax.profiler.stop_trace()
      self.profiling = False
    if compiles:  # the step compiled: time from its end
      jax.block_until_ready(metrics)
      self.restart_window()
    elif _every(self.step, cfg.log_every_steps) or self.step == cfg.num_steps:
      self.log_window()

  def restart_window(self) -> None:
    self.window_start, self.window_steps, self.pending = time.perf_counter(), 0, []
    self.window_first = self.step

  def log_window(self) -> None:
    fetched = jax.device_get(self.pending)
    step_time = (time.perf_counter() - self.window_start) / max(self.window_steps, 1)
    mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]
            if k not in _NOT_AVERAGED}
    tokens = self.task.positions_between(self.window_first, self.step) / max(self.window_steps, 1)
    tokens_per_s = tokens / step_time
    mean.update(steps_per_s=1 / step_time, tokens_per_s=tokens_per_s,
                mfu=self.task.flops_per_token * tokens_per_s / self.peak,
                skipped_steps=int(fetched[-1]["skipped_steps"]))
    if "sequences" in mean:
      mean["seq_per_s"] = mean["sequences"] / step_time
    if "tokens" in mean:
      mean["nonpad_fraction"] = mean["tokens"] / tokens
    self.writer.write("train", self.step, mean)
    remaining = self.task.positions_between(self.step, self.cfg.num_steps) / tokens_per_s
    logging.info("%s | MFU %.1f%% | ETA %s",
                 self.task.log_line(self.step, self.cfg.num_steps, mean), 100 * mean["mfu"],
                 format_eta(remaining))
    self.check_finite(mean["skipped_steps"])
    self.restart_window()

  # ---- policies ----------------------------------------------------------------------------
  def check_finite(self, skipped: int) -> None:
    new = skipped - self.skipped_at_start
    if self.cfg.on_nonfinite == "stop" and new > 0:
      raise NonFiniteError(
          f"non-finite loss or gradient by step {self.step} (update not applied); the last good "
          f"checkpoint in {self.workdir / 'checkpoints'} stays the latest; "
          f"{self.task.nonfinite_hint}, or set --config.train.on_nonfinite=skip")
    if new > self.cfg.max_skipped_steps:
      raise NonFiniteError(f"{new} steps skipped for non-finite loss/gradients (more than "
                           f"train.max_skipped_steps={self.cfg.max_skipped_steps})")

  def evaluate(self) -> None:
    logging.info("evaluating at step %d", self.step)
    self.last_eval, self.eval_step = self.task.evaluate(self.state, self.step), self.step
    if self.last_eval:  # a task without an eval set has nothing to write
      self.writer.write("eval", self.step, self.last_eval)
    if self.cfg.target is None or self.cfg.target[0] not in self.last_eval:
      return
    name, target = self.cfg.target
    value = float(self.last_eval[name])
    if self.best is None or value > self.best[0]:
      self.best = (value, self.step)
    if value >= target and self.reached is None:
      seconds = seconds_since_process_start()  # MLPerf's run_stop: before the final save
      logging.info("target %s %.4f reached at step %d (eval %.4f) after %.1f s from process "
                   "start; stopping", name, target, self.step, value, seconds)
      self.reached = {"reached": True, f"target_{name}": target, "target_step": self.step,
                      name: value, "time_to_target_s": seconds}

  def save(self, final: bool = False) -> None:
    """Checkpoint at this step. A failed save stops the run (checkpoint.on_save_error=stop, and
    always for the final save) or is logged and training continues (=continue)."""
    self.check_finite(int(jax.device_get(self.state.skipped_steps)))
    logging.info("saving checkpoint at step %d%s", self.step, "" if final else " (async)")
    try:
      self.ckpt.save(self.step, self.state, self.data)
      if final:
        self.ckpt.wait()
    except CheckpointSaveError as e:
      if final or self.cfg.on_save_error == "stop":
        raise SaveError(str(e)) from None
      logging.error("%s; training continues (checkpoint.on_save_error=continue)", e)
      return
    self.task.checkpointed(self.step)

  def finish(self) -> None:
    """The last eval (unless the one at this step reached the target) and save; then, with a
    target, its record."""
    if self.pending:  # stopped at a target between log steps
      self.log_window()
    if self.eval_step != self.step:
      self.evaluate()
    if self.ckpt.latest_step() != self.step:
      self.save(final=True)
    self.ckpt.wait()
    if self.cfg.target is not None:
      self.record_target()

  def record_target(self) -> None:
    """The target's outcome: a "target" record in metrics.jsonl and WORKDIR/target.json
    (written once the checkpoint of this step is saved: a resume reads it, `finished_at`)."""
    name, target = self.cfg.target
    record = self.reached
    if record is None:
      best = _best_logged(self.workdir, name, self.start_step)  # evals before a resume
      if self.best is not None and (best is None or self.best[0] > best[0]):
        best = self.best
      record = {"reached": False, f"target_{name}": target,
                f"best_{name}": best[0] if best else None, "best_step": best[1] if best else None}
      logging.info("target %s %.4f not reached in %d steps (best eval %s)", name, target,
                   self.step, f"{best[0]:.4f} at step {best[1]}" if best else "none")
    self.writer.write("target", self.step, {k: v for k, v in record.items() if v is not None})
    if jax.process_index() == 0:
      try:
        paths.atomic_write(self.workdir / TARGET_FILE, json.dumps(
            {**record, "step": self.step, "eval": self.last_eval}, indent=2,
            default=float) + "\n")
      except OSError as e:
        logging.error("%s could not be written (%s); a resume trains on from step %d",
                      self.workdir / TARGET_FILE, e, self.step)

  def close(self) -> None:
    if self.profiling:
      jax.profiler.stop_trace()


def _best_logged(workdir: epath.Path, name: str, upto: int) -> tuple[float, int] | None:
  """The best `name` of the eval records up to step `upto` in WORKDIR/metrics.jsonl (value,
  step): a resumed run's evals before its checkpoint. None if there are none."""
  best, path = None, workdir / "metrics.jsonl"
  try:
    lines = path.read_text().splitlines() if path.exists() else []
  except OSError:
    return None
  for line in lines:
    try:
      r = json.loads(line)
    except ValueError:
      continue
    if r.get("kind") == "eval" and r.get("step", upto + 1) <= upto and name in r:
      if best is None or r[name] > best[0]:
        best = (float(r[name]), r["step"])
  return best


def finished_at(workdir: epath.Path, target: tuple[str, float], step: int) -> dict | None:
  """WORKDIR/target.json's record when it says an eval at `step` reached `target` (a run that
  stopped there and is resumed from that checkpoint is finished), else None."""
  path = workdir / TARGET_FILE
  try:
    record = json.loads(path.read_text()) if path.exists() else None
  except (OSError, ValueError) as e:
    logging.warning("%s is unreadable (%s); ignoring it", path, e)
    return None
  name, value = target
  if (isinstance(record, dict) and record.get("reached") and record.get("target_step") == step
      and isinstance(record.get(name), (int, float)) and record[name] >= value):
    return record
  return None


def run(state: TrainState, task: Task, data: DataIterator, *, ckpt: Checkpointer,
        cfg: LoopConfig, peak_flops: float, workdir: epath.Path) -> tuple[TrainState, dict]:
  """Trains from `state` (fresh, warm-started or restored from `ckpt`) to cfg.num_steps, or with
  cfg.target to the first eval that reaches it, writing metrics to `workdir`; returns the final
  state and the last eval's scalars. A run resumed at the step where it reached its target
  (WORKDIR/target.json) trains no further. Raises NonFiniteError, SaveError, or Preempted after
  a SIGTERM's checkpoint. The caller owns `ckpt`."""
  step = int(jax.device_get(state.step))
  done = finished_at(workdir, cfg.target, step) if cfg.target is not None else None
  if done is not None:
    name, value = cfg.target
    logging.info("target %s %.4f was reached at step %d (eval %.4f; %s): the run is finished, "
                 "not training further", name, value, step, done[name], workdir / TARGET_FILE)
    return state, done.get("eval", {})
  writer = MetricWriter(workdir)
  loop = _Run(state, task, data, ckpt, writer, cfg, peak_flops, workdir)
  preemption = Preemption()
  try:
    while loop.step < cfg.num_steps:
      loop.train_one_step()
      if _every(loop.step, cfg.eval_every_steps) and loop.step < cfg.num_steps:
        loop.evaluate()
        if loop.reached is not None:
          break
      if _every(loop.step, cfg.checkpoint_every_steps) and loop.step < cfg.num_steps:
        loop.save()
      if preemption.reached(loop.step):
        logging.warning("preemption/SIGTERM: saving a checkpoint at step %d and exiting",
                        loop.step)
        if ckpt.latest_step() != loop.step:
          loop.save(final=True)
        ckpt.wait()
        raise Preempted(f"preempted (SIGTERM) at step {loop.step}; the checkpoint is saved in "
                        f"{workdir / 'checkpoints'}: relaunch the same command to resume")
    loop.finish()
  finally:
    preemption.close()
    loop.close()
    writer.close()
  return loop.state, loop.last_eval

