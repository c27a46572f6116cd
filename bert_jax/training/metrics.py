"""Metric writing: metrics.jsonl and TensorBoard events from process 0, tolerant of a full disk."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re

import jax
from absl import logging
from etils import epath

from bert_jax import paths


class AppendLines:
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


class MetricWriter:
  """Process 0 writes metrics.jsonl and TensorBoard events; the others write nothing.

  Metrics are not worth a run: when they cannot be written (a full disk), one warning says so
  and training goes on; every later write retries, and a line says when writing works again.
  metrics.jsonl then continues where it stopped: the bytes the disk did not take are kept and
  written first, so no line is lost or split.
  """

  def __init__(self, workdir: epath.Path, kinds=("train", "eval")):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    self._workdir = workdir
    self._failing = False
    self._jsonl = AppendLines(workdir / "metrics.jsonl")
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
                     for k in kinds}

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


def format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
