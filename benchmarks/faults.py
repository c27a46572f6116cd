r"""Fault campaign: kill -9 the trainer at random moments, restart, and check nothing is lost.

  python benchmarks/faults.py [--kills=22] [--steps=600] [--work_dir=/tmp/bert_jax_faults]

BERT-tiny on the bundled sample corpus (seq 64, batch 8; real TFDS data so the input position is
part of what must survive), a checkpoint every 3 steps and an eval every 8. First an
uninterrupted reference run. Then the campaign: start the same command, SIGKILL it at a random
moment after it starts training (inside a step, during an async save, during eval: the last log
line tells which), note the newest COMPLETE checkpoint on disk, restart, and check the restart
says it resumed from exactly that step. Repeat until --kills kills, then let it finish. Finally
compare the final parameters with the reference run's, bit for bit.
Prints the number of kills, resumes, resume mismatches and parameter mismatches (all must be 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time

import repo_configs  # benchmarks/repo_configs.py

REPO = repo_configs.REPO  # the trainer runs here: its config files import `configs`


def _args(workdir, data_dir, steps):
  return [sys.executable, "-m", "bert_jax.train", f"--config={repo_configs.path('tiny')}",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.data.seq_len=64", "--config.data.max_predictions_per_seq=10",
          "--config.data.shuffle_buffer=200", "--config.train.batch_size=8",
          f"--config.train.num_steps={steps}", "--config.train.log_every_steps=1",
          "--config.checkpoint.every_steps=3", "--config.checkpoint.max_to_keep=2",
          "--config.eval.every_steps=8", "--config.eval.batch_size=8",
          "--config.eval.num_batches=4", "--config.optimizer.warmup_steps=10",
          "--config.train.peak_tflops_per_device=1"]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def _complete_steps(workdir) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _phase(lines: list[str]) -> str:
  """What the trainer was doing when killed, from its most recent marker line."""
  for line in reversed(lines):
    if "evaluating at step" in line:
      return "eval"
    if "saving checkpoint at step" in line:
      return "training during an async save"
    if re.search(r"step \d+/\d+", line) or "eval step" in line:
      return "train step"
    if "resumed from checkpoint" in line:
      return "start-up"
  return "start-up"


def _final_params(workdir, step_limit):
  import jax
  import numpy as np
  from bert_jax.data import input_pipeline
  from bert_jax.parallel import sharding
  from bert_jax.training import pretraining
  from bert_jax.training.checkpointing import Checkpointer
  c = repo_configs.load("tiny")
  c.data.seq_len, c.data.max_predictions_per_seq, c.train.batch_size = 64, 10, 8
  c.train.num_steps = step_limit
  vocab = input_pipeline.dataset_info(os.path.join(os.path.dirname(workdir), "data"))["vocab_size"]
  setup = pretraining.build(c, sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1]), vocab)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  state, step = ckpt.restore(setup.abstract_state)
  ckpt.close()
  return step, [np.asarray(x) for x in jax.tree.leaves(state.params)]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--kills", type=int, default=22)
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--work_dir", default="/tmp/bert_jax_faults")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  rng = random.Random(args.seed)
  shutil.rmtree(args.work_dir, ignore_errors=True)
  os.makedirs(args.work_dir)
  from bert_jax.data import SAMPLE_CORPUS
  from bert_jax.data.prepare import prepare
  from bert_jax.text.vocab import train_vocab
  vocab_path = train_vocab(str(SAMPLE_CORPUS), os.path.join(args.work_dir, "vocab"),
                           vocab_size=2000, kind="wordpiece", lower_case=True)
  data_dir = os.path.join(args.work_dir, "data")
  prepare(input=str(SAMPLE_CORPUS), vocab=vocab_path, data_dir=data_dir, max_seq_length=64,
          max_predictions_per_seq=10, validation_fraction=0.1)

  ref = os.path.join(args.work_dir, "reference")
  t = time.time()
  subprocess.run(_args(ref, data_dir, args.steps), cwd=REPO, env=_env(), check=True,
                 capture_output=True)
  print(f"reference run: {args.steps} steps in {time.time() - t:.0f}s", flush=True)

  run = os.path.join(args.work_dir, "campaign")
  kills, resumes, fresh, mismatches = 0, 0, 0, 0
  phases = collections.Counter()
  expected_resume = None
  while True:
    proc = subprocess.Popen(_args(run, data_dir, args.steps), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    if kills < args.kills:
      if kills % 3 == 2:  # every third time, first let it get past its last checkpoint
        while proc.poll() is None and (_complete_steps(run) or [0])[-1] <= (expected_resume or 0):
          time.sleep(0.05)
      else:  # otherwise any time after it starts training
        while proc.poll() is None and not any(re.search(r"step \d+/\d+", ln) for ln in lines):
          time.sleep(0.05)
      time.sleep(rng.uniform(0.0, 10.0))
      if proc.poll() is None:
        phases[_phase(lines)] += 1
        proc.kill()  # SIGKILL: no handler, no cleanup
    reader.join()
    proc.wait()
    out = "".join(lines)
    if expected_resume is not None:
      m = re.search(r"resumed from checkpoint at step (\d+)", out)
      got = int(m.group(1)) if m else None
      if got == expected_resume:
        resumes += expected_resume is not None
        fresh += expected_resume is None
      else:
        mismatches += 1
        print(f"  resume mismatch: expected step {expected_resume}, log says {got}", flush=True)
    if proc.returncode == 0:
      break
    if proc.returncode != -9:
      print(out[-3000:])
      sys.exit(f"trainer failed with status {proc.returncode}")
    kills += 1
    done = _complete_steps(run)
    expected_resume = done[-1] if done else None
    print(f"kill {kills}: during {_phase(lines)}; newest complete checkpoint {expected_resume}",
          flush=True)
    # Killed before the first checkpoint completed: the same command must start afresh (a
    # partial first checkpoint, if any, must not count), which the check above verifies.

  ref_step, ref_params = _final_params(ref, args.steps)
  run_step, run_params = _final_params(run, args.steps)
  import numpy as np
  param_mismatches = sum(not np.array_equal(a, b) for a, b in zip(ref_params, run_params))
  print()
  print(f"kills: {kills}  ({', '.join(f'{k}: {v}' for k, v in sorted(phases.items()))})")
  print(f"resumes from the newest complete checkpoint: {resumes}, fresh starts (killed before the "
        f"first checkpoint): {fresh}, mismatches: {mismatches}")
  print(f"final step {run_step} vs reference {ref_step}; parameter arrays differing from the "
        f"uninterrupted run: {param_mismatches} of {len(ref_params)}")
  ok = mismatches == 0 and param_mismatches == 0 and run_step == ref_step
  print("PASS" if ok else "FAIL")
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
