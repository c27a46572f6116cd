"""Host memory: back XLA:CPU's large buffers with transparent huge pages (2 MiB, not 4 KiB).

XLA:CPU allocates a train step's temporaries and outputs afresh on every call. glibc serves
blocks over 32 MiB with mmap and unmaps them on free, so every BERT-Base step at batch 8 x 128
touches ~1.2 GB of new 4 KiB pages: ~307,000 page faults and ~1 s of kernel time per step on a
2-core machine. With glibc's `glibc.malloc.hugetlb=1` tunable, malloc asks the kernel for
transparent huge pages (where THP is in `madvise` mode, the default of most distributions): the
same step takes ~1,000 faults and ~0.15 s of kernel time, and the matmuls see fewer TLB misses;
about 10% off the CPU step (docs/benchmarks.md). Memory use is unchanged: blocks are still
returned to the system on free. (Keeping freed blocks in the heap instead, with mallopt,
fragments it: a process running one 64 MiB jitted function grew from 0.3 to 0.9 GB.)

glibc reads tunables only at start-up, so the trainer's and fine-tuner's command lines re-execute
themselves once with GLIBC_TUNABLES extended (`reexec_with_huge_pages`, before JAX starts). Set
BERT_JAX_HUGE_PAGES=0 to keep the process as started. Nothing happens off Linux/glibc >= 2.35,
when THP is `always` (already huge) or `never`, or when GLIBC_TUNABLES already sets it.
"""

from __future__ import annotations

import os
import platform
import sys

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
