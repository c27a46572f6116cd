"""What every command line shares: one-line errors mapped to exit codes, flag parsing, logging,
the multi-process start, and the one-time re-exec with huge pages.

    if __name__ == "__main__":
      cli.run(main)                      # python -m bert_jax.<command>

`run` calls `main(argv)`; a `bert_jax.errors.BertJaxError` raised anywhere below it is printed
as one line on stderr (`error: ...`) and ends the process with the error's exit code (2 a user
error, 3 non-finite, 4 a failed save, 143 preempted), the same for every command.

Huge pages (`reexec_with_huge_pages`, for the trainer and fine-tuner): XLA:CPU allocates a
train step's temporaries afresh on every call, and glibc serves blocks over 32 MiB with mmap, so
each step faults in hundreds of thousands of new 4 KiB pages. glibc's `glibc.malloc.hugetlb=1`
tunable makes malloc ask for transparent huge pages (where THP is in `madvise` mode, the default
of most distributions) at no cost in memory (docs/benchmarks.md has the measurements). glibc
reads tunables only at start-up, so those command lines re-execute themselves once with
GLIBC_TUNABLES extended, before JAX starts. BERT_JAX_HUGE_PAGES=0 keeps the process as started.
Nothing happens off Linux/glibc >= 2.35, when THP is `always` (already huge) or `never`, or when
GLIBC_TUNABLES already sets it.
"""

from __future__ import annotations

import logging as pylogging
import os
import platform
import sys

from absl import app, flags

from bert_jax import errors

TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _thp_mode() -> str | None:
  """'always' | 'madvise' | 'never' (the bracketed word of the sysfs file), or None."""
  try:
    with open(_THP_MODE) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def huge_pages_environ(environ: dict[str, str], libc: tuple[str, str] | None = None,
                       thp_mode: str | None = None) -> dict[str, str] | None:
  """The environment to re-execute with, or None when there is nothing to change."""
  if environ.get("BERT_JAX_HUGE_PAGES", "1") == "0":
    return None
  name, version = libc if libc is not None else platform.libc_ver()
  try:
    new_enough = tuple(int(x) for x in version.split(".")[:2]) >= (2, 35)
  except ValueError:
    new_enough = False
  if name != "glibc" or not new_enough:
    return None
  if (thp_mode if thp_mode is not None else _thp_mode()) != "madvise":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb" in tunables:
    return None
  return dict(environ, GLIBC_TUNABLES=f"{tunables}:{TUNABLE}" if tunables else TUNABLE)


def reexec_with_huge_pages() -> None:
  """Re-executes this command line (same interpreter, arguments and PID) with huge pages on,
  if `huge_pages_environ` says so; returns otherwise. Call first thing in a CLI's __main__."""
  if platform.system() != "Linux":
    return
  env = huge_pages_environ(dict(os.environ))
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


# ---- errors and exit codes --------------------------------------------------------------------
def run(main, *, config_flag=None, huge_pages: bool = False) -> None:
  """absl's app.run(main) with bert_jax's error handling (see the module docstring). With
  `config_flag` (a config_flags.DEFINE_config_file holder), bad flags, config files and config
  keys are one-line errors too (exit 2); `huge_pages` re-executes first (see above)."""
  if huge_pages:
    reexec_with_huge_pages()  # glibc reads its tunables only at start-up

  def guarded(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
      main(argv)
    except errors.Preempted as e:
      print(str(e), file=sys.stderr)
      sys.exit(e.exit_code)
    except errors.BertJaxError as e:
      print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
      sys.exit(e.exit_code)

  if config_flag is None:
    app.run(guarded)
  else:
    app.run(guarded, flags_parser=lambda argv: parse_flags(argv, config_flag))


def _config_key_hint(argv, name: str) -> str:
  """The --config.* flag that mentions an unknown key `name`."""
  for arg in argv:
    if arg.startswith("--config.") and f".{name}" in arg.split("=")[0]:
      return arg.split("=")[0]
  return "--config.*"


def _config_path(argv) -> str:
  return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "?")


def parse_flags(argv, config_flag):
  """absl flag parsing with one-line errors for bad flags, config files and config keys."""
  try:
    rest = flags.FLAGS(argv)
    if config_flag.value is not None:  # config files load lazily: fail here, not mid-run
      config_flag.value.keys()
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
  sys.exit(errors.EXIT_USAGE)


# ---- logging ----------------------------------------------------------------------------------
class _QuietLibraries(pylogging.Filter):
  """Keeps Orbax's per-save INFO chatter out of the log (its warnings still show)."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  pylogging.getLogger("bert_jax").setLevel(pylogging.INFO)
  for handler in pylogging.getLogger().handlers + pylogging.getLogger("absl").handlers:
    handler.addFilter(_QuietLibraries())


# ---- multi-process ----------------------------------------------------------------------------
def define_distributed_flags() -> None:
  flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0, for explicit "
                      "multi-process runs.")
  flags.DEFINE_integer("num_processes", 0, "Processes in an explicit multi-process run.")
  flags.DEFINE_integer("process_id", -1, "This process's id in an explicit run.")


def start_processes() -> None:
  """jax.distributed from the flags of define_distributed_flags (or auto-detected); processes
  other than 0 log warnings only."""
  import jax
  from absl import logging

  from bert_jax.parallel import distributed
  f = flags.FLAGS
  distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
