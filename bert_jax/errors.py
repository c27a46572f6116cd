"""The errors a user sees, and the exit status each one ends a CLI with (`bert_jax.cli.run`).

Every error a user can fix (a flag, a config key, a file, a dataset, a checkpoint) derives from
`UserError`; its message is one line naming the flag or file and the fix. Modules define their
own subclasses (`ConfigError`, `DataError`, `CheckpointError`, ...) so callers can catch what
they handle, and the CLIs map the whole hierarchy to exit codes in one place.
"""

from __future__ import annotations

EXIT_USAGE = 2  # a start-up error the user fixes (bad config, flag, data, checkpoint)
EXIT_NONFINITE = 3  # a non-finite loss or gradient stopped the run
EXIT_SAVE_FAILED = 4  # a checkpoint could not be written; earlier checkpoints are intact
EXIT_PREEMPTED = 143  # 128 + SIGTERM: a checkpoint was saved; relaunch to resume


class BertJaxError(Exception):
  """Base of the errors the CLIs print as one line `error: ...` and map to `exit_code`."""
  exit_code = 1


class UserError(BertJaxError, ValueError):
  """A problem the user fixes (config, flags, data, paths); the message names it and the fix."""
  exit_code = EXIT_USAGE


class NonFiniteError(BertJaxError):
  """Training produced a non-finite loss or gradient (the update was not applied)."""
  exit_code = EXIT_NONFINITE


class SaveError(BertJaxError, RuntimeError):
  """A checkpoint could not be written (disk full, permissions); earlier ones are intact."""
  exit_code = EXIT_SAVE_FAILED


class Preempted(BertJaxError):
  """SIGTERM (preemption): a checkpoint was saved at a step boundary; relaunch to resume."""
  exit_code = EXIT_PREEMPTED


class DataError(UserError):
  """Bad input data or data flags (text files, vocabularies, datasets, task files)."""
