"""Real multi-process JAX: two CPU processes (gloo collectives, 2 devices each) train the same
global batches as one process with 4 devices, and write one checkpoint collectively."""

import json
import os
import subprocess
import sys

import pytest

import helpers
from helpers import REPO

ARGS = [f"--config={REPO / 'configs' / 'tiny.py'}", "--config.data.source=synthetic",
        "--config.data.synthetic_vocab_size=500", "--config.data.seq_len=64",
        "--config.data.max_predictions_per_seq=10", "--config.train.batch_size=8",
        "--config.train.log_every_steps=1", "--config.checkpoint.every_steps=100",
        "--config.eval.every_steps=0", "--config.eval.batch_size=8",
        "--config.eval.num_batches=2", "--config.train.peak_tflops_per_device=1"]


def _env(devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return ({r["step"]: r["loss"] for r in rows if r["kind"] == "train"},
          [r for r in rows if r["kind"] == "eval"])


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  single = tmp_path / "single"
  subprocess.run([sys.executable, "-m", "bert_jax.train", f"--workdir={single}", *ARGS,
                  "--config.train.num_steps=5"], cwd=REPO, env=_env(4), check=True,
                 capture_output=True, timeout=600)

  multi = tmp_path / "multi"
  outs = helpers.run_processes(["bert_jax.train", f"--workdir={multi}", *ARGS,
                                "--config.train.num_steps=5"], 2, tmp_path, env=_env(2))
  assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 1} over 4 devices (2 processes)" in outs[0]
  assert "step 5/5" not in outs[1]  # only process 0 logs

  a, eval_a = _losses(single)
  b, eval_b = _losses(multi)
  assert sorted(a) == sorted(b) == [2, 3, 4, 5]
  for step in a:
    assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), (step, a[step], b[step])
  assert abs(eval_a[-1]["mlm_loss"] - eval_b[-1]["mlm_loss"]) < 1e-5

  # The checkpoint both processes wrote resumes in a single process, on another mesh.
  assert os.listdir(multi / "checkpoints") == ["5"]
  proc = subprocess.run([sys.executable, "-m", "bert_jax.train", f"--workdir={multi}", *ARGS,
                         "--config.train.num_steps=7", "--config.mesh.fsdp=2"], cwd=REPO,
                        env=_env(4), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from checkpoint at step 5" in proc.stderr
  assert sorted(os.listdir(multi / "checkpoints")) == ["5", "7"]
