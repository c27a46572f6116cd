r"""Time to accuracy: `bert_jax.train` against HF transformers' `Trainer`, same model and data.

  python benchmarks/time_to_accuracy.py --corpus=FILE [--json] [--target=T] [--budget_s=300]
  python benchmarks/time_to_accuracy.py --corpus=FILE --quick --json     # the test's size

The same BERT (default `--preset=mini`, L4/H256, bert_jax.models.config.PRESETS), the same text,
objective (masked LM alone), masking rate, batch, optimizer, schedule, steps and held-out eval
set, trained on this CPU twice, one trainer after the other, each in its own process:

1. Prepares from --corpus (cached in --work_dir per corpus and settings): a WordPiece vocab.txt
   (`bert_jax.text.vocab.train_vocab`, what `python -m bert_jax.vocab` runs), a dynamically
   masked `--objective=none` dataset (`bert_jax.data.prepare`, what `python -m bert_jax.prepare`
   runs) with a validation split, and an export for HF: the train split's unmasked rows, read
   back from the TFRecords, and the eval set: our input pipeline's fixed masked eval batches
   (`input_pipeline.eval_batches`, the ones our trainer scores), as labels -100 except at the
   masked positions.
2. Ours: `python -m bert_jax.train --config=configs/tiny.py` with the preset, AdamW
   (`optimizer.name=adamw`), the schedule below and `train.target_mlm_accuracy`: it stops at the
   first eval reaching the target and writes WORKDIR/target.json with time_to_target_s, seconds
   from its process start (imports, data loading, compilation and evals included).
3. HF: benchmarks/hf_trainer_worker.py: `Trainer` + `BertForMaskedLM` (same sizes; gelu tanh,
   which is our gelu_new; dropout 0.1) with `DataCollatorForLanguageModeling(mlm_probability)`
   as run_mlm.py sets it up, AdamW (torch), `lr_scheduler_type=linear`, the same eval cadence,
   scored on the same eval rows and masks by a `TrainerCallback` that stops at the target, timed
   from its own process start the same way (/proc/self/stat).

The schedule is HF's linear one on both sides: warmup to the peak, then linear to 0 at
--max_steps (ours: `optimizer.decay=wsd` with `decay_steps = max_steps - warmup`, which is that
schedule exactly). Eps 1e-6, betas 0.9/0.999, weight decay 0.01 off biases and LayerNorm, global
norm clipping 1.0, fp32, batch --batch_size x --seq_len, dropout 0.1; torch on --torch_threads
threads, JAX with its defaults (JAX_PLATFORMS=cpu).

Reports per trainer: seconds from process start to the target (None with a reason when it was not
reached by --max_steps), the best eval accuracy at or before --budget_s seconds, the eval curve
(accuracy against seconds from process start; ours from the eval lines of its log, stamped as they
arrive and aligned on target.json), and where the time went: start-up (imports, data, model),
first step (compilation), steps/s, evals (count, cost). Prints a table; writes
--out_dir/time_to_accuracy.json and time_to_accuracy.png (both curves, the target, the budget);
with --json the last line of stdout is the JSON object (target_mlm_accuracy, ours_seconds,
hf_seconds, ours_accuracy_at_budget, hf_accuracy_at_budget, hf_over_ours, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import repo_configs  # benchmarks/repo_configs.py

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "hf_trainer_worker.py")

# What --quick changes (the test's size: BERT-tiny, a slice of the corpus, a few steps).
QUICK = dict(preset="tiny", seq_len=64, batch_size=16, vocab_size=2000, max_steps=60,
             eval_every=10, warmup=10, lr=2e-3, target=0.05, budget_s=45.0, eval_batches=2,
             eval_batch_size=32, max_lines=1500, validation_fraction=0.1, max_wall_s=240.0,
             dropout=0.0)
DEFAULTS = dict(preset="mini", seq_len=128, batch_size=16, vocab_size=8000, max_steps=2000,
                eval_every=50, warmup=100, lr=1e-3, target=0.12, budget_s=180.0, eval_batches=-1,
                eval_batch_size=16, max_lines=0, validation_fraction=0.05, max_wall_s=2400.0,
                dropout=0.0)


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--corpus", required=True,
                 help="text file, one sentence per line, a blank line between documents")
  p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
  p.add_argument("--quick", action="store_true",
                 help=f"the test's size: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
  p.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "bert_jax_tta"),
                 help="caches (vocab, dataset, export) and the runs' directories")
  p.add_argument("--out_dir", default=None,
                 help="where time_to_accuracy.json and .png go (default: --work_dir)")
  p.add_argument("--target", type=float, default=None, help="held-out MLM accuracy to reach")
  p.add_argument("--budget_s", type=float, default=None,
                 help="accuracy reached within this many seconds from process start")
  p.add_argument("--preset", default=None, help="model.preset (default mini)")
  p.add_argument("--vocab_size", type=int, default=None)
  p.add_argument("--vocab", default=None, help="an existing vocab.txt instead of training one")
  p.add_argument("--seq_len", type=int, default=None)
  p.add_argument("--batch_size", type=int, default=None)
  p.add_argument("--max_steps", type=int, default=None, help="steps of the schedule; the most")
  p.add_argument("--warmup", type=int, default=None)
  p.add_argument("--lr", type=float, default=None, help="peak learning rate")
  p.add_argument("--eval_every", type=int, default=None, help="steps between evals (both)")
  p.add_argument("--eval_batch_size", type=int, default=None)
  p.add_argument("--eval_batches", type=int, default=None,
                 help="eval batches (-1: the whole validation split)")
  p.add_argument("--validation_fraction", type=float, default=None)
  p.add_argument("--max_lines", type=int, default=None,
                 help="use the corpus's first N lines (0: all)")
  p.add_argument("--masked_lm_prob", type=float, default=0.15)
  p.add_argument("--max_predictions_per_seq", type=int, default=20)
  p.add_argument("--dropout", type=float, default=None,
                 help="hidden and attention dropout, both trainers (default 0: a short run)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--torch_threads", type=int, default=2)
  p.add_argument("--trainers", default="ours,hf", help="which to run, in this order")
  p.add_argument("--max_wall_s", type=float, default=None,
                 help="a trainer still running after this many seconds is stopped")
  p.add_argument("--max_load", type=float, default=0.0,
                 help="before each trainer, wait until the 1-minute load average is below this "
                      "(0: do not wait); at most --max_load_wait_s")
  p.add_argument("--max_load_wait_s", type=float, default=1800.0)
  return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
  base = QUICK if args.quick else DEFAULTS
  for k, v in base.items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  args.trainers = [t for t in args.trainers.split(",") if t]
  if not set(args.trainers) <= {"ours", "hf"} or not args.trainers:
    raise SystemExit(f"error: --trainers={','.join(args.trainers)}: ours and/or hf")
  if not os.path.isfile(args.corpus):
    raise SystemExit(f"error: --corpus={args.corpus}: no such file")
  if args.warmup >= args.max_steps:
    raise SystemExit(f"error: --warmup={args.warmup} must be below --max_steps={args.max_steps}")
  if not 0 < args.target <= 1:
    raise SystemExit(f"error: --target={args.target} must be in (0, 1]")
  args.out_dir = args.out_dir or args.work_dir
  return args


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _sha(path: str) -> str:
  h = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


# --------------------------------------------------------------------------- preparation


def prepare_data(args, hf_export: bool = True) -> dict:
  """vocab.txt, the dataset and (hf_export) HF's export, cached per corpus and settings; returns
  their paths and sizes. Nothing here is timed: both trainers start from the prepared dataset.
  `args` needs corpus, work_dir, max_lines, vocab, vocab_size, seq_len, max_predictions_per_seq,
  masked_lm_prob, validation_fraction (and for the export seed, eval_batch_size, eval_batches)."""
  corpus = args.corpus
  tag = _sha(corpus)[:12]
  if args.max_lines:
    tag += f"_l{args.max_lines}"
  root = os.path.join(args.work_dir, tag)
  os.makedirs(root, exist_ok=True)
  if args.max_lines:  # the corpus's first N lines
    sliced = os.path.join(root, "corpus.txt")
    if not os.path.exists(sliced):
      with open(corpus, encoding="utf-8") as f:
        lines = [line for _, line in zip(range(args.max_lines), f)]
      tmp = sliced + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
      os.replace(tmp, sliced)
    corpus = sliced
  if args.vocab:
    vocab_path, vtag = os.path.abspath(args.vocab), "v" + _sha(args.vocab)[:8]
  else:
    vtag = f"v{args.vocab_size}"
    vocab_path = os.path.join(root, vtag, "vocab.txt")
    if not os.path.exists(vocab_path):
      from bert_jax.text.vocab import train_vocab
      log(f"[prepare] WordPiece vocab of {args.vocab_size} from {corpus}")
      tmp = os.path.join(root, f"{vtag}.tmp{os.getpid()}")
      train_vocab(corpus, tmp, vocab_size=args.vocab_size, kind="wordpiece", lower_case=True)
      os.replace(tmp, os.path.dirname(vocab_path))
  data_dir = os.path.join(root, f"data_{vtag}_{args.seq_len}_{args.max_predictions_per_seq}_"
                                f"{args.validation_fraction}")
  if not os.path.exists(data_dir):
    from bert_jax.data.prepare import prepare
    log(f"[prepare] dataset (--objective=none, dynamic masking) in {data_dir}")
    tmp = data_dir + f".tmp{os.getpid()}"
    prepare(input=corpus, vocab=vocab_path, data_dir=tmp, max_seq_length=args.seq_len,
            max_predictions_per_seq=args.max_predictions_per_seq,
            masked_lm_prob=args.masked_lm_prob, objective="none",
            validation_fraction=args.validation_fraction)
    os.replace(tmp, data_dir)
  from bert_jax.data import input_pipeline
  info = input_pipeline.dataset_info(data_dir)
  if not hf_export:
    return {"vocab": vocab_path, "data_dir": data_dir, "vocab_size": info["vocab_size"]}
  export = os.path.join(data_dir + "_export",
                        f"rows_s{args.seed}_eb{args.eval_batch_size}_n{args.eval_batches}.npz")
  if not os.path.exists(export):
    log(f"[prepare] HF export (train rows unmasked, our fixed eval set) in {export}")
    _export(args, data_dir, info, export)
  import numpy as np
  with np.load(export) as e:
    sizes = {"train_rows": len(e["train_offsets"]) - 1, "eval_rows": len(e["eval_lengths"]),
             "eval_predictions": int((e["eval_labels"] != -100).sum())}
  return {"vocab": vocab_path, "data_dir": data_dir, "export": export,
          "vocab_size": info["vocab_size"], **sizes}


def _export(args, data_dir: str, info: dict, path: str) -> None:
  import numpy as np
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from bert_jax.data import input_pipeline
  tf.config.set_visible_devices([], "GPU")
  builder = tfds.builder_from_directory(info["path"])
  rows = [ex["input_ids"].astype(np.int32) for ex in
          tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))]
  offsets = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
  # The eval set exactly as our trainer builds it (trainer.data_source: the same arguments).
  batches = input_pipeline.eval_batches(
      data_dir, batch_size=args.eval_batch_size, seq_len=args.seq_len,
      max_predictions_per_seq=args.max_predictions_per_seq, seed=args.seed,
      max_batches=args.eval_batches if args.eval_batches > 0 else None,
      masked_lm_prob=args.masked_lm_prob, masking_strategy="token")
  ids, labels, lengths = [], [], []
  for b in batches:
    real = b["example_weight"] > 0
    lab = np.full(b["input_ids"].shape, -100, np.int64)
    r, c = np.nonzero(b["masked_weights"])
    lab[r, b["masked_positions"][r, c]] = b["masked_ids"][r, c]
    ids.append(b["input_ids"][real])
    labels.append(lab[real])
    lengths.append(b["attention_mask"][real].sum(1))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + f".tmp{os.getpid()}.npz"
  np.savez(tmp, train_ids=np.concatenate(rows), train_offsets=offsets,
           eval_input_ids=np.concatenate(ids).astype(np.int32),
           eval_labels=np.concatenate(labels), eval_lengths=np.concatenate(lengths))
  os.replace(tmp, path)


# --------------------------------------------------------------------------- running


def wait_for_load(args, who: str) -> float:
  """The 1-minute load average once it is below --max_load (or now, with --max_load=0)."""
  start = time.monotonic()
  load = os.getloadavg()[0]
  while args.max_load > 0 and load >= args.max_load:
    if time.monotonic() - start > args.max_load_wait_s:
      log(f"[{who}] load {load:.2f} still >= {args.max_load} after {args.max_load_wait_s:.0f} s;"
          " starting anyway")
      break
    log(f"[{who}] load average {load:.2f} >= {args.max_load}: waiting")
    time.sleep(20)
    load = os.getloadavg()[0]
  return load


class Child:
  """A trainer process whose output lines are stamped with seconds since just before its start
  (and copied to a log file)."""

  def __init__(self, cmd: list[str], log_path: str, env: dict, max_wall_s: float, cwd: str):
    self.lines: list[tuple[float, str]] = []
    self._log = open(log_path, "w")
    self.t0 = time.monotonic()
    self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, bufsize=1, env=env, cwd=cwd)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()
    self.timed_out = False
    try:
      self.proc.wait(timeout=max_wall_s)
    except subprocess.TimeoutExpired:
      self.timed_out = True
      self.proc.terminate()
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    self._reader.join(timeout=30)
    self.wall_s = time.monotonic() - self.t0
    self._log.close()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append((time.monotonic() - self.t0, line.rstrip("\n")))
      self._log.write(line)
      self._log.flush()

  def tail(self, n: int = 15) -> str:
    return "\n".join(line for _, line in self.lines[-n:])


def model_sizes(preset: str, dropout: float) -> dict:
  from bert_jax.models.config import PRESETS
  if preset not in PRESETS or not hasattr(PRESETS[preset], "type_vocab_size"):
    raise SystemExit(f"error: --preset={preset}: a BERT preset (tiny, mini, small, medium, base, "
                     "large)")
  c = PRESETS[preset]
  return {"num_hidden_layers": c.num_hidden_layers, "hidden_size": c.hidden_size,
          "num_attention_heads": c.num_attention_heads,
          "intermediate_size": c.intermediate_size,
          "max_position_embeddings": c.max_position_embeddings,
          "type_vocab_size": c.type_vocab_size, "hidden_dropout_prob": dropout,
          "attention_probs_dropout_prob": dropout}


_EVAL_LINE = re.compile(r"eval step (\d+) \| mlm loss [\d.naif]+ acc ([\d.naif]+).* in ([\d.]+)s")
_EVALUATING = re.compile(r"evaluating at step (\d+)")
_TRAIN_LINE = re.compile(r"step (\d+)/\d+ \| loss")


def _run_trainer(args, trainer: str, cmd: list, env: dict, workdir: str) -> tuple:
  """Runs one trainer's process once the machine is quiet (wait_for_load), its output in
  WORKDIR/train.log; returns the Child and the fields both trainers' results start with."""
  load = wait_for_load(args, trainer)
  log(f"[{trainer}] {' '.join(cmd)}")
  child = Child(cmd, os.path.join(workdir, "train.log"), env, args.max_wall_s, repo_configs.REPO)
  return child, {"trainer": trainer, "workdir": workdir, "load_before": load,
                 "load_after": os.getloadavg()[0], "wall_s": child.wall_s,
                 "exit_code": child.proc.returncode}


def run_ours(args, data: dict) -> dict:
  workdir = os.path.join(args.work_dir, "runs", f"ours_{int(time.time())}")
  os.makedirs(workdir)
  ckpt_every = args.max_steps  # no checkpoint before the end (only the final one, after the clock)
  flags = {
      "model.preset": args.preset, "data.data_dir": data["data_dir"],
      "data.seq_len": args.seq_len, "data.max_predictions_per_seq": args.max_predictions_per_seq,
      "data.masked_lm_prob": args.masked_lm_prob, "data.seed": args.seed,
      "model.hidden_dropout_prob": args.dropout,
      "model.attention_probs_dropout_prob": args.dropout,
      "train.batch_size": args.batch_size, "train.num_steps": args.max_steps,
      "train.seed": args.seed, "train.log_every_steps": max(1, args.eval_every // 4),
      "train.target_mlm_accuracy": args.target,
      "optimizer.name": "adamw", "optimizer.learning_rate": args.lr,
      "optimizer.warmup_steps": args.warmup, "optimizer.decay": "wsd",
      "optimizer.decay_steps": args.max_steps - args.warmup, "optimizer.wsd_decay_shape": "linear",
      "optimizer.end_learning_rate": 0.0, "optimizer.b1": 0.9, "optimizer.b2": 0.999,
      "optimizer.eps": 1e-6, "optimizer.weight_decay": 0.01, "optimizer.clip_grad_norm": 1.0,
      "checkpoint.every_steps": ckpt_every, "eval.every_steps": args.eval_every,
      "eval.batch_size": args.eval_batch_size, "eval.num_batches": args.eval_batches,
  }
  cmd = [sys.executable, "-m", "bert_jax.train", f"--config={repo_configs.path('tiny')}",
         f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  child, out = _run_trainer(args, "ours", cmd, env, workdir)
  target_file = os.path.join(workdir, "target.json")
  record = json.load(open(target_file)) if os.path.exists(target_file) else None
  evals = _ours_evals(workdir, child)
  out["curve"] = evals
  if record is not None and record.get("reached"):
    out.update(reached=True, time_to_target_s=record["time_to_target_s"],
               target_step=record["target_step"], reason=None)
  else:
    best = max((e["mlm_accuracy"] for e in evals), default=None)
    why = ("timed out" if child.timed_out else f"exited with {child.proc.returncode}"
           if child.proc.returncode else "finished")
    out.update(reached=False, time_to_target_s=None, reason=(
        f"target {args.target} not reached ({why}; best eval "
        f"{'none' if best is None else f'{best:.4f}'})"))
    if child.proc.returncode:
      log(f"[ours] failed:\n{child.tail()}")
  # Align the stamped eval lines on target.json's clock (the same process start).
  offset = 0.0
  if out["reached"]:
    at = [e for e in evals if e["step"] == out["target_step"]]
    if at:
      offset = at[0]["seconds"] - out["time_to_target_s"]
      for e in evals:
        e["seconds"] -= offset
  out["breakdown"] = _ours_breakdown(workdir, child, evals, offset, args)
  return out


def _metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  records = []
  if os.path.exists(path):
    for line in open(path):
      try:
        records.append(json.loads(line))
      except ValueError:
        pass
  return records


def _ours_evals(workdir: str, child: Child) -> list[dict]:
  """Each eval: (seconds since the process start, step, accuracy). The seconds are a "time" field
  of the eval record when metrics.jsonl has one, else the stamp of the eval's log line."""
  stamps = {}
  for t, line in child.lines:
    m = _EVAL_LINE.search(line)
    if m:
      stamps.setdefault(int(m.group(1)), t)
  out = []
  for r in _metrics(workdir):
    if r.get("kind") != "eval" or "mlm_accuracy" not in r:
      continue
    t = r.get("time", stamps.get(r["step"]))
    if t is not None:
      out.append({"seconds": float(t), "step": r["step"], "mlm_accuracy": r["mlm_accuracy"],
                  "examples": r.get("examples")})
  return out


def _ours_breakdown(workdir: str, child: Child, evals: list[dict], offset: float, args) -> dict:
  """Where ours' time went, from its log's stamps and metrics.jsonl."""
  import numpy as np
  first = lambda pattern: next(  # noqa: E731
      (t - offset for t, line in child.lines if re.search(pattern, line)), None)
  startup = first(r"\] mesh ")  # imports, dataset info, the model built (abstractly)
  ready = first(r"\] MFU against")  # + the train iterator and the initialised state
  eval_cost, begin = [], {}
  for t, line in child.lines:
    m = _EVALUATING.search(line)
    if m:
      begin[int(m.group(1))] = t
    m = _EVAL_LINE.search(line)
    if m and int(m.group(1)) in begin:
      eval_cost.append(t - begin[int(m.group(1))])
  # Steps/s of the log windows with no eval inside (an eval after step e falls in the window of
  # the log after e), as steps over their summed time.
  train = [r for r in _metrics(workdir) if r.get("kind") == "train" and "steps_per_s" in r]
  evals_at = [e["step"] for e in evals]
  steps = seconds = 0.0
  for prev, r in zip([0] + [r["step"] for r in train], train):
    if prev > 0 and not any(prev <= e < r["step"] for e in evals_at):  # (the first: compile)
      steps += r["step"] - prev
      seconds += (r["step"] - prev) / r["steps_per_s"]
  sps = steps / seconds if seconds else None
  first_log = next(((t - offset, int(m.group(1))) for t, line in child.lines
                    for m in [_TRAIN_LINE.search(line)] if m), None)
  first_step = None
  if first_log and ready is not None and sps:
    first_step = first_log[0] - ready - (first_log[1] - 1) / sps
  return {"startup_s": startup, "state_ready_s": ready,
          "first_step_s": first_step, "steps_per_s": sps, "num_evals": len(eval_cost),
          "eval_s_total": float(sum(eval_cost)),
          "eval_s_each": float(np.median(eval_cost)) if eval_cost else None,
          "eval_s_first": eval_cost[0] if eval_cost else None,
          "log_clock_offset_s": offset}


def run_hf(args, data: dict) -> dict:
  workdir = os.path.join(args.work_dir, "runs", f"hf_{int(time.time())}")
  os.makedirs(workdir)
  spec = {
      "vocab": data["vocab"], "vocab_size": data["vocab_size"], "data": data["export"],
      "model": model_sizes(args.preset, args.dropout), "masked_lm_prob": args.masked_lm_prob,
      "seed": args.seed, "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
      "max_steps": args.max_steps, "eval_every": args.eval_every,
      "log_every": max(1, args.eval_every // 4), "target": args.target,
      "torch_threads": args.torch_threads, "output_dir": os.path.join(workdir, "trainer"),
      "out": os.path.join(workdir, "result.json"),
      "optimizer": {"learning_rate": args.lr, "warmup_steps": args.warmup, "b1": 0.9,
                    "b2": 0.999, "eps": 1e-6, "weight_decay": 0.01, "clip_grad_norm": 1.0},
  }
  spec_path = os.path.join(workdir, "spec.json")
  with open(spec_path, "w") as f:
    json.dump(spec, f, indent=1)
  cmd = [sys.executable, WORKER, spec_path]
  env = dict(os.environ, TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
  child, out = _run_trainer(args, "hf", cmd, env, workdir)
  if os.path.exists(spec["out"]):
    result = json.load(open(spec["out"]))
    out.update(reached=result["reached"], time_to_target_s=result.get("time_to_target_s"),
               target_step=result.get("target_step"), reason=result["reason"],
               curve=result["curve"], breakdown=result["breakdown"])
  else:
    why = "timed out" if child.timed_out else f"exited with {child.proc.returncode}"
    log(f"[hf] failed:\n{child.tail()}")
    # The evals it printed before it stopped.
    curve = []
    for t, line in child.lines:
      m = re.search(r"hf eval step (\d+) \| mlm acc ([\d.]+) \| ([\d.]+) s", line)
      if m:
        curve.append({"seconds": float(m.group(3)), "step": int(m.group(1)),
                      "mlm_accuracy": float(m.group(2))})
    best = max((c["mlm_accuracy"] for c in curve), default=None)
    out.update(reached=False, time_to_target_s=None, target_step=None, curve=curve,
               breakdown={}, reason=f"target {args.target} not reached ({why}; best eval "
                                    f"{'none' if best is None else f'{best:.4f}'})")
  return out


# --------------------------------------------------------------------------- report


def accuracy_at(curve: list[dict], seconds: float) -> float | None:
  """The best eval accuracy at or before `seconds` (None: no eval by then)."""
  return max((c["mlm_accuracy"] for c in curve if c["seconds"] <= seconds), default=None)


def plot(path: str, runs: dict, args) -> str | None:
  """Accuracy against seconds from process start, both trainers; None if matplotlib is missing."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
  names = {"ours": "bert_jax.train (JAX)", "hf": "HF Trainer (PyTorch)"}
  for name, r in runs.items():
    c = r["curve"]
    line, = ax.plot([e["seconds"] for e in c], [e["mlm_accuracy"] for e in c], marker="o",
                    markersize=3, label=names[name])
    if r.get("time_to_target_s"):
      ax.axvline(r["time_to_target_s"], color=line.get_color(), linestyle=":", linewidth=1)
      ax.annotate(f"{r['time_to_target_s']:.0f} s", (r["time_to_target_s"], args.target),
                  textcoords="offset points", xytext=(4, -12), color=line.get_color(),
                  fontsize=8)
  ax.axhline(args.target, color="gray", linestyle="--", linewidth=1,
             label=f"target {args.target:g}")
  ax.axvline(args.budget_s, color="black", linestyle="-.", linewidth=0.8,
             label=f"budget {args.budget_s:g} s")
  ax.set_xlabel("seconds from process start (imports, data, compile, evals included)")
  ax.set_ylabel("held-out MLM accuracy")
  ax.set_title(f"BERT-{args.preset}, batch {args.batch_size} x {args.seq_len}, "
               f"lr {args.lr:g}, eval every {args.eval_every} steps", fontsize=10)
  ax.set_xlim(left=0)
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def _fmt(v, spec: str = ".1f", none: str = "-") -> str:
  return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def report(result: dict) -> None:
  s, runs = result["settings"], result["runs"]
  print(f"BERT-{s['preset']} ({s['layers']} layers, hidden {s['hidden']}), vocab "
        f"{s['vocab_size']}, MLM only (masking {s['masked_lm_prob']}, 80/10/10), batch "
        f"{s['batch_size']} x {s['seq_len']}, AdamW lr {s['lr']:g} warmup {s['warmup']} linear to "
        f"{s['max_steps']} steps, dropout {s['dropout']:g}, fp32; {s['train_rows']} train rows; "
        f"eval every {s['eval_every']} steps on {s['eval_rows']} held-out rows "
        f"({s['eval_predictions']} masked predictions); target {result['target_mlm_accuracy']:g}, "
        f"budget {result['budget_s']:g} s; torch threads {s['torch_threads']}")
  cols = [n for n in ("ours", "hf") if n in runs]
  b = {n: runs[n].get("breakdown") or {} for n in cols}
  rows = [
      ("seconds to target", lambda n: _fmt(runs[n]["time_to_target_s"])),
      ("steps to target", lambda n: _fmt(runs[n].get("target_step"), "d")),
      (f"accuracy at {result['budget_s']:g} s",
       lambda n: _fmt(result[f"{n}_accuracy_at_budget"], ".4f")),
      ("best accuracy", lambda n: _fmt(max((c["mlm_accuracy"] for c in runs[n]["curve"]),
                                           default=None), ".4f")),
      ("start-up s (imports, data, model)", lambda n: _fmt(
          b[n].get("state_ready_s") if n == "ours" else (
              b[n]["trainer_setup_s"] + b[n]["model_s"] + b[n]["data_s"] + b[n]["imports_s"]
              + b[n]["interpreter_s"] if b[n] else None))),
      ("first step s (compile)", lambda n: _fmt(b[n].get("first_step_s"))),
      ("steps/s (between evals)", lambda n: _fmt(b[n].get("steps_per_s"), ".2f")),
      ("train steps s (steps / steps/s)", lambda n: _fmt(
          runs[n]["target_step"] / b[n]["steps_per_s"]
          if runs[n].get("target_step") and b[n].get("steps_per_s") else None)),
      ("evals: count", lambda n: _fmt(b[n].get("num_evals"), "d")),
      ("evals: s each (median)", lambda n: _fmt(b[n].get("eval_s_each"), ".2f")),
      ("evals: s total", lambda n: _fmt(b[n].get("eval_s_total"))),
      ("load average before", lambda n: _fmt(runs[n]["load_before"], ".2f")),
  ]
  print(f"{'':36s}" + "".join(f"{n:>12s}" for n in cols))
  for label, f in rows:
    print(f"{label:36s}" + "".join(f"{f(n):>12s}" for n in cols))
  ratio = result["hf_over_ours"]
  print(f"hf/ours time to target: {_fmt(ratio, '.2f')}x"
        + ("" if ratio is not None else "  (" + "; ".join(
            f"{n}: {runs[n]['reason']}" for n in cols if runs[n]["reason"]) + ")"))
  if result.get("plot"):
    print(f"plot: {result['plot']}")
  else:
    print(f"plot: not written ({result['plot_reason']})")


def main(argv=None) -> int:
  args = resolve(parser().parse_args(argv))
  os.makedirs(args.work_dir, exist_ok=True)
  with contextlib.redirect_stdout(sys.stderr):  # TFDS prints its progress to stdout
    data = prepare_data(args)
  sizes = model_sizes(args.preset, args.dropout)
  runs = {}
  for name in args.trainers:
    runs[name] = (run_ours if name == "ours" else run_hf)(args, data)
    r = runs[name]
    log(f"[{name}] " + (f"target reached after {r['time_to_target_s']:.1f} s (step "
                        f"{r['target_step']})" if r["reached"] else r["reason"]))
  result = {
      "target_mlm_accuracy": args.target, "budget_s": args.budget_s,
      "ours_seconds": runs["ours"]["time_to_target_s"] if "ours" in runs else None,
      "hf_seconds": runs["hf"]["time_to_target_s"] if "hf" in runs else None,
  }
  for n in ("ours", "hf"):
    r = runs.get(n)
    result[f"{n}_accuracy_at_budget"] = accuracy_at(r["curve"], args.budget_s) if r else None
    result[f"{n}_reason"] = r["reason"] if r else "not run (--trainers)"
    result[f"{n}_target_step"] = r.get("target_step") if r else None
    # A run that stopped at the target before the budget: its accuracy at the budget is that of
    # its last eval (a lower bound on what it would have reached).
    result[f"{n}_stopped_before_budget"] = bool(r and r["reached"]
                                                and r["time_to_target_s"] < args.budget_s)
  o, h = result["ours_seconds"], result["hf_seconds"]
  result["hf_over_ours"] = h / o if o and h else None
  result["settings"] = {
      "preset": args.preset, "layers": sizes["num_hidden_layers"], "hidden": sizes["hidden_size"],
      "vocab_size": data["vocab_size"], "seq_len": args.seq_len, "batch_size": args.batch_size,
      "lr": args.lr, "warmup": args.warmup, "max_steps": args.max_steps,
      "eval_every": args.eval_every, "eval_batch_size": args.eval_batch_size,
      "masked_lm_prob": args.masked_lm_prob, "dropout": args.dropout, "seed": args.seed,
      "torch_threads": args.torch_threads, "train_rows": data["train_rows"],
      "eval_rows": data["eval_rows"], "eval_predictions": data["eval_predictions"],
      "corpus": os.path.abspath(args.corpus), "quick": args.quick, "cpus": os.cpu_count()}
  result["runs"] = runs
  os.makedirs(args.out_dir, exist_ok=True)
  png = os.path.join(args.out_dir, "time_to_accuracy.png")
  result["plot"] = plot(png, runs, args)
  result["plot_reason"] = None if result["plot"] else (
      "matplotlib is not installed: pip install -e '.[hf]'")
  with open(os.path.join(args.out_dir, "time_to_accuracy.json"), "w") as f:
    json.dump(result, f, indent=1)
  report(result)
  if args.json:
    print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
