"""Training checkpoints with Orbax: train state + the input pipeline's position, per step.

Layout: WORKDIR/checkpoints/<step>/{state, data}. `state` is the TrainState pytree (params,
optimizer state, step, RNG, skipped-step count), saved asynchronously and restorable onto any
mesh (Orbax reshards to the target shardings). `data` holds each process's tf.data iterator
position (written synchronously at the save step, so it matches the state exactly).

Orbax writes every step into a temporary directory and renames it when complete, so a killed
save never shows up as a checkpoint; such leftovers are removed when a Checkpointer opens (by
`_remove_unfinished_saves`, not Orbax's background cleanup). A finalized checkpoint that fails
to restore (a truncated or deleted file) is renamed `<step>.corrupt-<n>`, named in a warning,
and the previous one is restored instead.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import sys
import time
import traceback
import types
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from bert_jax import paths
from bert_jax.errors import SaveError, UserError

log = logging.getLogger("bert_jax")


def _is_orbax_debris(exc: BaseException | None, obj: Any = None) -> bool:
  """Whether an exception Python could only report as 'ignored' is the tail of a failed Orbax IO.

  When one array of a save or restore fails, Orbax (0.12) raises without cancelling the other
  reads/writes: they finish on TensorStore's threads moments later and find the operation's
  event loop closed ("Event loop is closed", raised in call_soon_threadsafe, no object), or are
  garbage-collected as coroutines of Orbax's serialization, or as futures whose TensorStore error
  nobody retrieved. The failure itself has already been reported (one line, naming the cause).
  """
  if exc is None:
    return False
  if obj is not None and isinstance(obj, types.CoroutineType):
    return "orbax" in obj.cr_code.co_filename.replace("\\", "/").split("/")
  if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[0].name == "call_soon_threadsafe"
  text = str(exc)
  return "OCDBT database" in text or "tensorstore_spec=" in text or "TensorStore" in text


class _AsyncioDebrisFilter(logging.Filter):
  """Drops asyncio's "exception was never retrieved" for failed Orbax/TensorStore IO."""

  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if "exception was never retrieved" in str(record.msg) and _is_orbax_debris(exc):
      log.debug("dropped asyncio's report of an Orbax IO that had already failed")
      return False
    return True


def _keep_orbax_debris_off_stderr() -> None:
  """Installs (once per hook) a narrow filter for _is_orbax_debris; anything else passes through.

  Without it a failed save or restore is followed, at random moments, by a couple of hundred
  "Exception ignored" reports with a page of TensorStore spec each (about 200 for a 2-layer
  model): noise that buries the one-line error.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_bert_jax_debris_filter", False):
    return

  def hook(u):
    if _is_orbax_debris(u.exc_value, u.object):
      log.debug("dropped the report of an Orbax IO that had already failed: %s", u.exc_value)
    else:
      previous(u)

  hook._bert_jax_debris_filter = True
  sys.unraisablehook = hook
  asyncio_log = logging.getLogger("asyncio")
  if not any(isinstance(f, _AsyncioDebrisFilter) for f in asyncio_log.filters):
    asyncio_log.addFilter(_AsyncioDebrisFilter())


def _align_orbax_operation_ids() -> None:
  """Brings every process's Orbax operation id up to the highest (a collective: call it where
  all processes save or restore together).

  Orbax numbers each checkpoint operation with a counter kept per process and keys the signals
  of a multi-process save by that number in the job's key-value store (who waits for whose
  directory creation). A save made by one process alone -- fine-tuning's best model, written
  by the lead with `save_pretrained(format="orbax")` -- advances only that process's counter,
  so at the next collective save the processes disagreed on the number: the others found no
  directory-creation signal to wait for, wrote the `data` item before the primary had created
  its directory (the primary's creation then failed, FileExistsError), and waited for signals
  keyed by a number the primary never used (a hang). Orbax's own multi-process test runner
  realigns the counters the same way.
  """
  if jax.process_count() == 1:
    return
  import numpy as np
  from jax.experimental import multihost_utils
  from orbax.checkpoint._src.futures import synchronization
  ids = synchronization.OperationIdGenerator
  highest = int(np.max(multihost_utils.process_allgather(
      np.int64(ids.get_current_operation_id()))))
  while int(ids.get_current_operation_id()) < highest:
    ids.next_operation_id()


class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves/restores an input iterator exposing save(directory) / restore(directory)."""

  def save(self, directory: epath.Path, args: DataIteratorArgs):
    directory.mkdir(parents=True, exist_ok=True)
    if args.iterator is not None:
      args.iterator.save(str(directory))

  def restore(self, directory: epath.Path, args: DataIteratorArgs | None = None):
    if args is not None and args.iterator is not None:
      args.iterator.restore(str(directory))
      return args.iterator
    return None

  def metadata(self, directory: epath.Path):
    return None

  def finalize(self, directory: epath.Path):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class DataIteratorArgs(ocp.args.CheckpointArgs):
  iterator: Any = None


class CheckpointSaveError(SaveError):
  pass


class CheckpointMismatchError(UserError):
  """The checkpoint holds a different model or optimizer than the config builds."""


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes(tree, is_leaf=None) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in flat}


def first_mismatch(saved_metadata, abstract_state) -> str | None:
  """Where a saved state's tree (Orbax metadata) differs from the state a config builds."""
  saved = _shapes(saved_metadata, is_leaf=lambda x: hasattr(x, "shape"))
  wanted = _shapes(abstract_state)
  for path in sorted(wanted):
    if path not in saved:
      return f"it has no {path} (this config's model/optimizer does)"
    if saved[path] != wanted[path]:
      return f"{path} has shape {list(saved[path])} but this config needs {list(wanted[path])}"
  extra = sorted(set(saved) - set(wanted))
  return f"it has {extra[0]}, which this config's model/optimizer does not" if extra else None


def _cause_chain(e: BaseException, *, implicit: bool = True) -> list[BaseException]:
  """e, then what it was raised from (and, if implicit, during the handling of), outermost first."""
  chain, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    chain.append(e)
    e = e.__cause__ or (e.__context__ if implicit else None)
  return chain


def _root_cause(e: BaseException) -> str:
  """The operating-system reason behind a (possibly wrapped, TensorStore) save failure."""
  import re
  chain = _cause_chain(e)
  for err in chain:
    if isinstance(err, OSError) and err.strerror:
      return f"{err.strerror} (errno {err.errno})"
    m = re.search(r"([A-Za-z][A-Za-z ,']+) \[os_error_code='(\d+)'\]", str(err))
    if m:
      return f"{m.group(1).strip()} (errno {m.group(2)})"
  last = chain[-1]
  text = str(last).splitlines()[0][:200] if str(last) else ""
  return f"{type(last).__name__}: {text}"


def _rmtree_retrying(path: epath.Path, attempts: int = 8) -> None:
  """rmtree that outlasts writers still finishing in the tree (ENOTEMPTY: retry, backing off).

  Gives up after ~5 s with a warning: an unfinished save directory is never restored, and
  Orbax replaces it when that step is saved again."""
  for attempt in range(attempts):
    try:
      path.rmtree(missing_ok=True)
      return
    except OSError as e:
      if e.errno != errno.ENOTEMPTY:
        raise
      if attempt == attempts - 1:
        log.warning("could not remove the unfinished save %s (%s); it is never restored, and "
                    "is replaced when that step is saved again", path, e.strerror)
        return
      log.debug("%s: %s; writes are still landing, retrying", path, e.strerror)
      time.sleep(0.04 * 2 ** attempt)


def orbax_path(directory) -> epath.Path:
  """`directory` as Orbax needs it: local paths made absolute (Orbax's TensorStore specs refuse
  a relative one, "Checkpoint path should be absolute", and only when the first array is
  written, in the background); gs:// and other URLs as they are."""
  path = epath.Path(directory)
  return path if paths.is_url(directory) else epath.Path(os.path.abspath(path))


class Checkpointer:
  """Orbax CheckpointManager for (TrainState, data iterator) with corrupt-checkpoint fallback."""

  def __init__(self, directory, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = orbax_path(directory)
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True,
        cleanup_tmp_directories=False)  # done by _remove_unfinished_saves
    self._open()

  def _open(self):
    _keep_orbax_debris_off_stderr()
    self._remove_unfinished_saves()
    self.manager = ocp.CheckpointManager(
        self.directory, options=self._options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": DataIteratorHandler()})

  def _remove_unfinished_saves(self) -> None:
    """Deletes what interrupted or failed saves left (Orbax's temporary step directories).

    Done here, synchronously and with retries, instead of by Orbax's background cleanup
    (`cleanup_tmp_directories`): after a failed save, Orbax does not cancel that save's other
    writes, and one landing in a directory while it is being removed makes the removal fail
    with ENOTEMPTY -- an error Orbax then re-raises from every later save of the run. (Seen when
    a run is restarted in the same process right after its final save hit a full disk.)
    """
    from jax.experimental import multihost_utils
    if jax.process_index() == 0 and self.directory.exists():
      for name in ocp.path.step.tmp_checkpoints(self.directory):
        _rmtree_retrying(self.directory / name)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("bert_jax_remove_unfinished_saves")

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iterator=None) -> None:
    """Starts saving (async): returns once the state is copied off the accelerator.

    Raises CheckpointSaveError for this save, or for the previous asynchronous one if that
    failed in the background (e.g. the disk filled up).
    """
    self.wait()
    _align_orbax_operation_ids()
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=DataIteratorArgs(data_iterator)), force=True)
    except Exception as e:  # noqa: BLE001 - surface any save failure in one line
      raise CheckpointSaveError(self._save_error(step, e)) from e

  def wait(self) -> None:
    """Blocks until pending saves are on disk; raises CheckpointSaveError if one failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise CheckpointSaveError(self._save_error(None, e)) from e

  def _save_error(self, step, e) -> str:
    what = f"step {step}" if step is not None else "an asynchronous save"
    return (f"checkpoint save of {what} in {self.directory} failed ({_root_cause(e)}); "
            "earlier checkpoints are intact; free disk space or fix the path, then restart "
            "to resume")

  def restore(self, abstract_state, data_iterator=None):
    """Restores the newest restorable checkpoint onto abstract_state's shardings.

    Returns (state, step), or (None, None) when there is no checkpoint.
    """
    _align_orbax_operation_ids()
    for step in reversed(self.all_steps()):
      path = self.directory / str(step)
      try:
        saved = self.manager.item_metadata(step)["state"]
      except Exception as e:  # noqa: BLE001 - unreadable metadata: a damaged checkpoint
        saved = e
      if not isinstance(saved, Exception) and saved is not None:
        mismatch = first_mismatch(saved, abstract_state)
        if mismatch:  # never treat a config mistake as corruption: leave it untouched
          raise CheckpointMismatchError(
              f"{path}: {mismatch}; resume with the config this run was started with (see "
              f"{self.directory.parent / 'config.json'}) or use a new --workdir")
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        if data_iterator is not None:  # outside Orbax, so our exception types survive
          data_iterator.restore(str(path / "data"))
        return restored["state"], step
      except UserError as e:  # the data position is another run's (data, settings): not
        raise CheckpointMismatchError(str(e)) from None  # corruption, leave it untouched
      except Exception as e:  # noqa: BLE001 - any failure: fall back to the previous one
        self._corrupt(step, path, e)
    return None, None

  def _corrupt(self, step, path, e) -> None:
    e = _cause_chain(e, implicit=False)[-1]  # Orbax wraps TensorStore's reason in its spec
    log.warning("checkpoint %s is unreadable (%s: %s); skipping it and restoring the previous "
                "one", path, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
    self._quarantine(step)

  def _quarantine(self, step: int) -> None:
    """Moves a bad step directory aside so it is neither restored nor blocks a new save."""
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
      src = self.directory / str(step)
      n = 0
      while (dst := self.directory / f"{step}.corrupt-{n}").exists():
        n += 1
      if src.exists():
        src.rename(dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"bert_jax_quarantine_{step}")
    self.manager.close()
    self._open()

  def close(self) -> None:
    self.manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    """Closes. A failure to close is logged, never raised: it must not mask the error that
    ended the block, and a run's last save has already been waited for (and reported)."""
    try:
      self.close()
    except Exception as e:  # noqa: BLE001
      log.debug("closing the checkpointer failed: %s", e)
