"""The training loop pretraining and fine-tuning both run.

`run(state, task, ...)` steps the jitted train step to `num_steps` and owns everything around it:
log windows (mean metrics, throughput, MFU, ETA) written to metrics.jsonl and TensorBoard, the
eval and checkpoint cadence, the final eval and save, the non-finite policy, SIGTERM (a save at
the next step boundary, then `Preempted`), a profiler window, and exact resume (a checkpoint holds
the train state and the data iterator's position; `Checkpointer.restore` puts both back).

What differs between objectives lives in a `Task`: its train step, its batches, how it evaluates
and how its log line reads.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Protocol

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import NamedSharding

from bert_jax.errors import NonFiniteError, Preempted, SaveError
from bert_jax.training.checkpointing import Checkpointer, CheckpointSaveError
from bert_jax.training.metrics import MetricWriter, format_eta
from bert_jax.training.preemption import Preemption
from bert_jax.training.train_state import TrainState, global_batch

# Metrics of a train step that are not averaged over a log window.
_NOT_AVERAGED = ("finite", "skipped_steps")


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

  @classmethod
  def from_config(cls, config, num_steps: int, eval_every: int, checkpoint_every: int):
    """From a pretraining or fine-tuning config (both declare these train/checkpoint keys)."""
    t = config.train
    return cls(num_steps=num_steps, log_every_steps=t.log_every_steps,
               eval_every_steps=eval_every, checkpoint_every_steps=checkpoint_every,
               on_nonfinite=t.on_nonfinite, max_skipped_steps=t.max_skipped_steps,
               on_save_error=config.checkpoint.on_save_error,
               profile_start_step=t.profile_start_step, profile_num_steps=t.profile_num_steps)


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
    self.last_eval = self.task.evaluate(self.state, self.step)
    if self.last_eval:  # a task without an eval set has nothing to write
      self.writer.write("eval", self.step, self.last_eval)

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
    """The last eval (unless this run only resumed a finished one that had one) and save."""
    if self.start_step < self.cfg.num_steps or not self.last_eval:
      self.evaluate()
    if self.ckpt.latest_step() != self.step:
      self.save(final=True)
    self.ckpt.wait()

  def close(self) -> None:
    if self.profiling:
      jax.profiler.stop_trace()


def run(state: TrainState, task: Task, data: DataIterator, *, ckpt: Checkpointer,
        cfg: LoopConfig, peak_flops: float, workdir: epath.Path) -> tuple[TrainState, dict]:
  """Trains from `state` (fresh, warm-started or restored from `ckpt`) to cfg.num_steps, writing
  metrics to `workdir`; returns the final state and the last eval's scalars. Raises
  NonFiniteError, SaveError, or Preempted after a SIGTERM's checkpoint. The caller owns `ckpt`."""
  writer = MetricWriter(workdir)
  loop = _Run(state, task, data, ckpt, writer, cfg, peak_flops, workdir)
  preemption = Preemption()
  try:
    while loop.step < cfg.num_steps:
      loop.train_one_step()
      if _every(loop.step, cfg.eval_every_steps) and loop.step < cfg.num_steps:
        loop.evaluate()
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

