"""Batch-size warmup: the global batch grows in steps of `min_size` sequences from `min_size` to
`max_size` over the first `warmup_tokens` tokens (ModernBERT's recipe: 768 -> 4,608 sequences
over 50B tokens).

The schedule is ModernBERT's `BatchSizeWarmupScheduler` (AnswerDotAI/ModernBERT
src/sequence_packer.py), in units of `min_size` sequences: the sizes 1, 2, ..., n-1 units
(n = max_size / min_size) each get a share of the warmup tokens proportional to the size, so
each is used for about the same number of steps; threshold i (tokens) is
ceil(warmup_tokens * (1 + ... + i) / (1 + ... + n-1)), and a step whose tokens so far are below
threshold i (and not below i-1) takes i units; from warmup_tokens on, the full n units.

Tokens are counted as positions, rows x seq_len per step (padding included), which makes the
batch size a pure function of the step, so resume is exact and a config can convert token
budgets to steps (`steps_for_tokens`). ModernBERT counts non-padding tokens as batches are
emitted; on packed rows the two differ by the padding fraction (about 1%).

`WarmupBatches` turns an iterator of fixed batches of one unit (this process's rows of
`min_size`) into the schedule's batches by concatenating units, and saves its step with the
inner iterator's position. The train step runs a batch of k units as k / (units per
micro-batch) accumulated micro-batches (no accumulation: one batch of k units), and is compiled
once per distinct size; the loop logs each new size as it compiles.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math

import numpy as np
from etils import epath

from bert_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class BatchSizeSchedule:
  """Global batch rows per step; see the module docstring."""
  min_size: int
  max_size: int
  warmup_tokens: int
  seq_len: int

  def __post_init__(self):
    if not 0 < self.min_size < self.max_size or self.max_size % self.min_size:
      raise ValueError(f"batch-size warmup from {self.min_size} to {self.max_size}: the start "
                       "must be a smaller divisor of the full batch size")
    if self.warmup_tokens <= 0:
      raise ValueError(f"batch-size warmup over {self.warmup_tokens} tokens: must be > 0")
    units = self.max_size // self.min_size
    total = sum(range(1, units))
    cumsum, thresholds = 0, []
    for k in range(1, units):
      cumsum += k
      thresholds.append(math.ceil(self.warmup_tokens * cumsum / total))
    # Phases: (first step, rows, positions before that step), one per size actually used.
    phases, step, tokens = [], 0, 0
    for k, threshold in enumerate(thresholds, start=1):
      if tokens >= threshold:
        continue
      rows = k * self.min_size
      steps = math.ceil((threshold - tokens) / (rows * self.seq_len))
      phases.append((step, rows, tokens))
      step, tokens = step + steps, tokens + steps * rows * self.seq_len
    phases.append((step, self.max_size, tokens))
    object.__setattr__(self, "_phases", tuple(phases))
    object.__setattr__(self, "_starts", [p[0] for p in phases])

  @property
  def phases(self) -> tuple[tuple[int, int, int], ...]:
    """(first step, rows, positions before it) for each batch size, in order."""
    return self._phases

  @property
  def warmup_steps(self) -> int:
    """The first step at the full batch size."""
    return self._phases[-1][0]

  def _phase(self, step: int) -> tuple[int, int, int]:
    return self._phases[bisect.bisect_right(self._starts, step) - 1]

  def rows(self, step: int) -> int:
    """Global rows of the batch of step `step` (0-based: the step taken from state.step)."""
    return self._phase(step)[1]

  def positions_before(self, step: int) -> int:
    """rows x seq_len summed over steps 0 .. step-1."""
    first, rows, tokens = self._phase(step)
    return tokens + (step - first) * rows * self.seq_len

  def steps_for_tokens(self, tokens: float) -> int:
    """The number of steps whose batches hold at least `tokens` positions."""
    for (first, rows, before), nxt in zip(self._phases, self._starts[1:] + [None]):
      end = before + (nxt - first) * rows * self.seq_len if nxt is not None else None
      if end is None or tokens <= end:
        return first + max(0, math.ceil((tokens - before) / (rows * self.seq_len)))
    raise AssertionError("unreachable")


def schedule_from_config(config) -> BatchSizeSchedule | None:
  """config.train.batch_size_warmup_{min,tokens} -> the schedule, or None when off (min 0)."""
  t = config.train
  start = t.get("batch_size_warmup_min", 0)
  if not start:
    return None
  return BatchSizeSchedule(start, t.batch_size, int(t.batch_size_warmup_tokens),
                           config.data.seq_len)


class WarmupStateMismatch(UserError):
  """A saved batch-warmup position from a run with another schedule."""


class WarmupBatches:
  """This process's batches under `schedule`: rows(step) / min_size units of `units` (an
  iterator of one unit's rows each, with save/restore), concatenated."""

  def __init__(self, units, schedule: BatchSizeSchedule, process_index: int = 0):
    self._units, self._schedule, self.step = units, schedule, 0
    self._process_index = process_index

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    k = self._schedule.rows(self.step) // self._schedule.min_size
    parts = [next(self._units) for _ in range(k)]
    self.step += 1
    if k == 1:
      return parts[0]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

  def _path(self, directory: str) -> epath.Path:
    return epath.Path(directory) / f"batch_warmup_process_{self._process_index}.json"

  def _params(self) -> dict:
    s = self._schedule
    return {"min_size": s.min_size, "max_size": s.max_size, "warmup_tokens": s.warmup_tokens,
            "seq_len": s.seq_len}

  def save(self, directory: str) -> None:
    self._units.save(directory)
    self._path(directory).write_text(json.dumps({"step": self.step, **self._params()}))

  def restore(self, directory: str) -> None:
    path = self._path(directory)
    if not path.exists():
      raise WarmupStateMismatch(
          f"the checkpoint in {directory} was saved without batch-size warmup; resume without "
          "train.batch_size_warmup_min, or start a new --workdir")
    saved = json.loads(path.read_text())
    step = saved.pop("step")
    if saved != self._params():
      raise WarmupStateMismatch(
          f"the checkpoint in {directory} was saved with batch-size warmup {saved}, this run has "
          f"{self._params()}; resume with the same train.batch_size_warmup_* or start a new "
          "--workdir")
    self._units.restore(directory)
    self.step = step
