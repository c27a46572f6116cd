"""Shared test helpers (importable as `helpers` from tests/)."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from flax import nnx

from bert_jax import create_model, get_config
from bert_jax.errors import EXIT_PREEMPTED

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_config(**overrides):
  """3 layers, H=64, 4 heads: small enough for CPU tests, big enough to catch layout bugs."""
  base = dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, intermediate_size=128,
              vocab_size=120, max_position_embeddings=64)
  base.update(overrides)
  return get_config("tiny", **base)


def random_model(config, task="pretraining", seed=0, **head_kwargs):
  """A model whose every parameter (biases and LayerNorm too) is non-trivial."""
  model = create_model(config, task, seed=seed, **head_kwargs)
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed + 1000), len(leaves))
  leaves = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


def params_of(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def batch(config, batch_size=3, length=16, seed=0):
  """Random ids with padding: row 1 padded after 10 tokens, row 2 after 5."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, config.vocab_size, (batch_size, length)).astype(np.int32)
  types = np.zeros_like(ids)
  types[:, length // 2:] = 1
  mask = np.ones_like(ids)
  if batch_size > 1:
    mask[1, 10:] = 0
  if batch_size > 2:
    mask[2, 5:] = 0
  ids = np.where(mask == 1, ids, 0).astype(np.int32)
  return ids, types.astype(np.int32), mask.astype(np.int32)


def assert_trees_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def tiny_config(data_dir=None, **overrides):
  """configs/tiny.py shrunk for tests: seq 64, batch 8, few steps."""
  from configs import tiny
  c = tiny.get_config()
  if data_dir is None:
    c.data.source = "synthetic"
    c.data.synthetic_vocab_size = 500
  else:
    c.data.data_dir = data_dir
  c.data.seq_len = 64
  c.data.max_predictions_per_seq = 10
  c.data.shuffle_buffer = 100
  c.train.batch_size = 8
  c.train.num_steps = 6
  c.train.log_every_steps = 2
  c.optimizer.warmup_steps = 2
  c.checkpoint.every_steps = 3
  c.eval.every_steps = 3
  c.eval.batch_size = 8
  c.eval.num_batches = 2
  c.train.peak_tflops_per_device = 1.0  # skip the matmul measurement
  return override(c, overrides)


def override(config, overrides: dict):
  """config with dotted keys set, e.g. {"train.num_steps": 4}; returns config."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def sigterm_after_first_metrics(command: list, workdir, env=None) -> str:
  """Starts `python -m <command...>`, sends SIGTERM once WORKDIR/metrics.jsonl has a line, and
  returns its output after checking it saved and exited with the preemption status (143)."""
  proc = subprocess.Popen([sys.executable, "-m", *command], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = pathlib.Path(workdir) / "metrics.jsonl"
  deadline = time.time() + 300
  while not metrics.exists() or not metrics.read_text():
    assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == EXIT_PREEMPTED, out
  assert "preemption/SIGTERM: saving a checkpoint at step" in out
  return out


def run_cli(args, timeout=600, env=None):
  """`python -m bert_jax.train ARGS` from the repo root; returns CompletedProcess."""
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run([sys.executable, "-m", "bert_jax.train", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=full_env)


def free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(command: list, num_processes: int, log_dir, env=None, timeout=300) -> list[str]:
  """Runs `python -m <command...>` as processes 0..N-1 of one jax.distributed job (each gets
  --coordinator_address/--num_processes/--process_id) and returns their outputs once all exit 0.

  Watches all of them: when one fails, the rest (stuck in a collective waiting for it) are
  killed and its output is reported; when the job runs past `timeout`, every process first
  prints all its threads' Python stacks (faulthandler on SIGABRT), so a hang says where."""
  port = free_port()
  env = dict(os.environ if env is None else env, PYTHONFAULTHANDLER="1")
  logs = [open(pathlib.Path(log_dir) / f"process_{i}.log", "w+") for i in range(num_processes)]
  procs = [subprocess.Popen(
      [sys.executable, "-m", *command, f"--coordinator_address=127.0.0.1:{port}",
       f"--num_processes={num_processes}", f"--process_id={i}"], cwd=REPO, env=env,
      stdout=logs[i], stderr=subprocess.STDOUT, text=True)  # a file: no pipe to fill up
      for i in range(num_processes)]
  deadline = time.time() + timeout
  problem = None
  while problem is None and any(p.poll() is None for p in procs):
    failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
    if failed:
      problem = f"process {failed[0]} exited with {procs[failed[0]].returncode}"
    elif time.time() > deadline:
      problem = f"still running after {timeout} s (stacks below)"
      for p in procs:
        if p.poll() is None:
          p.send_signal(signal.SIGABRT)
      time.sleep(5)
    else:
      time.sleep(0.2)
  for p in procs:
    if p.poll() is None:
      p.kill()
    p.wait()
  outs = [(log.seek(0), log.read())[1] for log in logs]
  for log in logs:
    log.close()
  if problem is None and any(p.returncode for p in procs):
    problem = f"exit statuses {[p.returncode for p in procs]}"
  assert problem is None, problem + "".join(
      f"\n--- process {i} ---\n{out[-6000:]}" for i, out in enumerate(outs))
  return outs


def sample_vocab() -> str:
  """tests/fixtures/sample_vocab/vocab.txt: a fixed 2,000-token vocabulary of the bundled sample
  (a vocabulary trained at test time differs between runs; see tests/fixtures/README.md)."""
  return str(REPO / "tests" / "fixtures" / "sample_vocab" / "vocab.txt")
