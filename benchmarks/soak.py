r"""Soak run: does a long training run degrade? RSS, threads, open files and step time over time.

  python benchmarks/soak.py [--minutes=60] [--corpus=FILE]

Trains BERT-tiny (configs/tiny.py, batch 32, seq 128) on --corpus (default: the bundled sample,
`bert_jax.data.SAMPLE_CORPUS`) with a checkpoint and an eval every --every_steps steps (a few
minutes apart on a 2-core CPU), for --minutes, then sends SIGTERM (the trainer saves and exits
143). Every --sample_s seconds it reads the trainer's VmRSS, thread
count and open file descriptors from /proc. Reports the least-squares slope of each over the run
after the first --settle_min minutes (RSS in MB/hour), step time (from metrics.jsonl) at the
start and the end, and the eval accuracy curve (MLM / NSP) -- which doubles as the tiny model's
learning curve on this corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import repo_configs  # benchmarks/repo_configs.py

REPO = repo_configs.REPO  # the trainer runs here: its config files import `configs`


def _proc_stats(pid: int) -> dict:
  stats = {}
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        stats["rss_mb"] = int(line.split()[1]) / 1024
      elif line.startswith("Threads:"):
        stats["threads"] = int(line.split()[1])
  stats["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
  return stats


def _slope_per_hour(ts, ys) -> float:
  import numpy as np
  if len(ts) < 3:
    return float("nan")
  return float(np.polyfit(np.asarray(ts) / 3600.0, np.asarray(ys), 1)[0])


def main():
  from bert_jax.data import SAMPLE_CORPUS
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--minutes", type=float, default=60)
  p.add_argument("--corpus", default=SAMPLE_CORPUS,
                 help="text file, one sentence per line (default: the bundled sample)")
  p.add_argument("--work_dir", default="/tmp/bert_jax_soak")
  p.add_argument("--every_steps", type=int, default=400)
  p.add_argument("--sample_s", type=float, default=30)
  p.add_argument("--settle_min", type=float, default=5)
  p.add_argument("--json", action="store_true")
  args = p.parse_args()
  import shutil
  shutil.rmtree(args.work_dir, ignore_errors=True)
  os.makedirs(args.work_dir)
  from bert_jax.data.prepare import prepare
  from bert_jax.text.vocab import train_vocab
  vocab_path = train_vocab(args.corpus, os.path.join(args.work_dir, "vocab"), vocab_size=8000,
                           kind="wordpiece", lower_case=True)
  data_dir = os.path.join(args.work_dir, "data")
  prepare(input=args.corpus, vocab=vocab_path, data_dir=data_dir)
  workdir = os.path.join(args.work_dir, "run")
  cmd = [sys.executable, "-m", "bert_jax.train", f"--config={repo_configs.path('tiny')}",
         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
         "--config.train.num_steps=1000000", "--config.optimizer.warmup_steps=500",
         "--config.train.log_every_steps=100",
         f"--config.checkpoint.every_steps={args.every_steps}",
         f"--config.eval.every_steps={args.every_steps}", "--config.eval.num_batches=20"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  log = open(os.path.join(args.work_dir, "train.log"), "w")
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
  t0 = time.time()
  samples = []
  stop = threading.Event()
  while time.time() - t0 < args.minutes * 60 and proc.poll() is None:
    try:
      samples.append({"t": time.time() - t0, **_proc_stats(proc.pid)})
    except FileNotFoundError:
      break
    stop.wait(args.sample_s)
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
  rc = proc.wait()
  log.close()
  with open(os.path.join(args.work_dir, "samples.jsonl"), "w") as f:  # for plots / inspection
    f.writelines(json.dumps(s) + "\n" for s in samples)

  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in rows if r["kind"] == "train"]
  evals = [r for r in rows if r["kind"] == "eval"]
  settled = [s for s in samples if s["t"] >= args.settle_min * 60]
  ts = [s["t"] for s in settled]
  result = {
      "minutes": (samples[-1]["t"] if samples else 0) / 60, "exit_status": rc,
      "steps": train[-1]["step"] if train else 0, "samples": len(samples),
      "rss_mb_start": settled[0]["rss_mb"] if settled else None,
      "rss_mb_end": settled[-1]["rss_mb"] if settled else None,
      "rss_mb_per_hour": _slope_per_hour(ts, [s["rss_mb"] for s in settled]),
      "rss_mb_min": min(s["rss_mb"] for s in settled) if settled else None,
      "rss_mb_max": max(s["rss_mb"] for s in settled) if settled else None,
      "rss_mb_per_hour_second_half": _slope_per_hour(
          ts[len(ts) // 2:], [s["rss_mb"] for s in settled][len(ts) // 2:]),
      "threads_start": settled[0]["threads"] if settled else None,
      "threads_end": settled[-1]["threads"] if settled else None,
      "threads_per_hour": _slope_per_hour(ts, [s["threads"] for s in settled]),
      "fds_start": settled[0]["fds"] if settled else None,
      "fds_end": settled[-1]["fds"] if settled else None,
      "fds_per_hour": _slope_per_hour(ts, [s["fds"] for s in settled]),
  }
  if train:
    n = max(1, len(train) // 10)
    early, late = train[1:n + 1], train[-n:]
    mean = lambda xs: sum(xs) / len(xs)
    result["step_time_s_start"] = mean([1 / r["steps_per_s"] for r in early])
    result["step_time_s_end"] = mean([1 / r["steps_per_s"] for r in late])
    # step-time trend against wall-clock time (steps mapped to seconds at the mean rate)
    seconds_per_step = (samples[-1]["t"] if samples else 0) / max(train[-1]["step"], 1)
    result["step_time_s_per_hour"] = _slope_per_hour(
        [r["step"] * seconds_per_step for r in train[1:]], [1 / r["steps_per_s"] for r in train[1:]])
  print(f"soak: {result['minutes']:.1f} min, {result['steps']} steps, exit status "
        f"{result['exit_status']} (143 = SIGTERM save), {len(samples)} samples every "
        f"{args.sample_s:.0f}s; trends after the first {args.settle_min:.0f} min:")
  print(f"  RSS      {result['rss_mb_start']:.0f} -> {result['rss_mb_end']:.0f} MB (min "
        f"{result['rss_mb_min']:.0f}, max {result['rss_mb_max']:.0f}), slope "
        f"{result['rss_mb_per_hour']:+.1f} MB/hour ({result['rss_mb_per_hour_second_half']:+.1f} "
        "over the second half)")
  for i in range(0, len(settled), max(1, len(settled) // 12)):
    print(f"    t={settled[i]['t'] / 60:5.1f} min  RSS {settled[i]['rss_mb']:7.0f} MB  "
          f"threads {settled[i]['threads']}  fds {settled[i]['fds']}")
  print(f"  threads  {result['threads_start']} -> {result['threads_end']}, slope "
        f"{result['threads_per_hour']:+.2f}/hour")
  print(f"  open fds {result['fds_start']} -> {result['fds_end']}, slope "
        f"{result['fds_per_hour']:+.2f}/hour")
  if train:
    print(f"  step time {result['step_time_s_start'] * 1e3:.0f} ms (first tenth) -> "
          f"{result['step_time_s_end'] * 1e3:.0f} ms (last tenth), slope "
          f"{result['step_time_s_per_hour'] * 1e3:+.1f} ms/hour")
  print("  eval curve (step: MLM acc / NSP acc / MLM loss):")
  for r in evals:
    print(f"    {r['step']:6d}: {r['mlm_accuracy']:.4f} / {r['nsp_accuracy']:.4f} / "
          f"{r['mlm_loss']:.3f}")
  if args.json:
    print(json.dumps({**result, "evals": evals}))


if __name__ == "__main__":
  main()
