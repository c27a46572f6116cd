"""cli.reexec_with_huge_pages: the trainer's re-exec with glibc's huge-page tunable, and what it buys."""

import json
import os
import subprocess
import sys

import pytest

from bert_jax import cli

_GLIBC = ("glibc", "2.36")


def test_environment_for_the_reexec():
  env = cli.huge_pages_environ({"PATH": "/bin"}, _GLIBC, "madvise")
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = cli.huge_pages_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, _GLIBC,
                                       "madvise")
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  # Nothing to do: already set (so the re-executed process does not loop), opted out, THP
  # already always on or off, glibc without the tunable, not glibc.
  assert cli.huge_pages_environ(env, _GLIBC, "madvise") is None
  assert cli.huge_pages_environ({"BERT_JAX_HUGE_PAGES": "0"}, _GLIBC, "madvise") is None
  assert cli.huge_pages_environ({}, _GLIBC, "always") is None
  assert cli.huge_pages_environ({}, _GLIBC, "never") is None
  assert cli.huge_pages_environ({}, ("glibc", "2.31"), "madvise") is None
  assert cli.huge_pages_environ({}, ("", ""), "madvise") is None


_SCRIPT = r"""
import json, os, resource
from bert_jax import cli
cli.reexec_with_huge_pages()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0 + 1.0)  # a fresh 64 MiB output per call
x = jnp.ones((4096, 4096), jnp.float32)
for _ in range(3):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(x).block_until_ready()
print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES", ""),
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(huge_pages: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", BERT_JAX_HUGE_PAGES="1" if huge_pages else "0")
  env.pop("GLIBC_TUNABLES", None)
  out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                       env=env, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(cli.huge_pages_environ({}) is None,
                    reason="needs Linux, glibc >= 2.35 and THP in madvise mode")
def test_reexec_turns_fresh_buffers_into_huge_page_faults():
  plain, huge = _run(False), _run(True)
  assert plain["tunables"] == "" and huge["tunables"] == cli.TUNABLE
  # 5 fresh 64 MiB outputs: 81,920 faults of 4 KiB pages; with 2 MiB pages, a few hundred on
  # a quiet machine. When free memory is short or fragmented the kernel falls back to 4 KiB
  # pages for part of it (7,322 faults measured beside two multi-GiB compiles), so the bound is
  # relative: without the tunable's effect the two counts would be about equal.
  assert plain["faults"] > 40_000, plain
  assert huge["faults"] < plain["faults"] // 5, (plain, huge)
