"""SIGTERM (preemption, `scancel`) -> a checkpoint at the next step boundary, agreed by all hosts."""

from __future__ import annotations

import signal

import jax


class Preemption:
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
