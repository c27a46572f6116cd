r"""Downstream gains: does pretraining pay on a real task? Pretrained vs from-scratch fine-tuning.

  python benchmarks/downstream.py --corpus=FILE --task_dir=DIR [--seeds=0,1,2] [--json]
  python benchmarks/downstream.py --corpus=FILE --task_dir=DIR --train_rows=1000   # few labels
  python benchmarks/downstream.py --corpus=FILE --task_dir=DIR --ft_lr=3e-4,1e-3   # lr per arm
  python benchmarks/downstream.py --corpus=FILE --task_dir=DIR --quick --json   # the test's size

DIR is the Debian package sections task (`configs/finetune/suites/debian.py`: train.tsv,
dev.tsv, test.tsv, `label<TAB>text`; this project's copy is ../shared/tasks/debian-sections, a
slice ships as tests/fixtures/debian-sections-slice). On this CPU, one stage after the other:

1. Prepare from --corpus and, with --task_text (default), the task's train.tsv texts without
   their labels (task-adaptive pretraining; dev and test texts never), cached in --work_dir
   (shared with benchmarks/time_to_accuracy.py): a WordPiece vocab.txt, which both arms use,
   and a masked-LM dataset (`--objective=none`, dynamic masking).
2. Pretrain (cached per corpus and settings): `python -m bert_jax.train --config=configs/tiny.py`
   with `model.preset=--preset` (BERT-mini), AdamW, warmup then linear decay, --pretrain_steps;
   its final held-out MLM accuracy and unigram baseline are reported. Then `python -m
   bert_jax.export --format=hf`: the model as a user would hand it on.
3. Fine-tune twice with the same recipe, seeds and budget, each a `python -m
   bert_jax.finetune_suite --suite=debian` (a `bert_jax.finetune` run per seed with the suite's
   TSV reader config, like any user's local task): from the export (`--init_from=EXPORT`), and from
   random init (`model.preset` and the same vocab.txt). Both: dropout 0.1, AdamW at --ft_lr with
   10% warmup then linear decay, --ft_epochs at --ft_batch_size, --max_seq_length tokens, dev
   accuracy every --eval_every steps; each run's best-on-dev model scores test.tsv
   (results.json `best_test`). With --train_rows=N both arms fine-tune on the same fixed random
   sample of N labelled train rows (the regime of few labels and much unlabelled text, which
   --task_text still pretrains on in full); dev and test stay whole. With several --ft_lr
   (comma-separated), each arm is fine-tuned at every one and reports the one with the best
   mean dev accuracy over the seeds (as BERT chose its fine-tuning rate on dev): the arms'
   rates may differ, and test never chooses.

Reports per arm the test accuracy of every seed, its mean ± sample std and range, the dev
accuracy, and the gap (pretrained - scratch, in mean test accuracy, with the two spreads), with
a table of every rate when there are several; the majority-class baseline (the train set's most
frequent label, on test). Writes --out_dir/downstream.json and downstream.png (dev accuracy
against fine-tuning step, mean and range over the seeds, both arms; test accuracy per seed);
with --json the last line of stdout is the JSON object (pretrained_test_accuracy,
scratch_test_accuracy, their _std and per-seed lists, gap, majority_test_accuracy, pretraining,
settings; each arm's chosen ft_lr and its sweep under arms).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import repo_configs  # benchmarks/repo_configs.py
from bert_jax.paths import atomic_write
import time_to_accuracy as tta  # benchmarks/time_to_accuracy.py: prepare_data, _sha, log

QUICK = dict(preset="tiny", seq_len=64, batch_size=16, vocab_size=2000, pretrain_steps=60,
             warmup=10, lr=2e-3, max_lines=1500, ft_epochs=1.0, ft_batch_size=16, ft_lr=1e-3,
             max_seq_length=32, eval_every=10, seeds="0,1")
DEFAULTS = dict(preset="mini", seq_len=128, batch_size=16, vocab_size=8000, pretrain_steps=8000,
                warmup=100, lr=1e-3, max_lines=0, ft_epochs=3.0, ft_batch_size=32,
                ft_lr="1e-4,1e-3", max_seq_length=48, eval_every=200, seeds="0,1,2")
ARMS = ("pretrained", "scratch")


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--corpus", required=True,
                 help="pretraining text: one sentence per line, a blank line between documents")
  p.add_argument("--task_dir", required=True,
                 help="the Debian sections task: a directory with train.tsv, dev.tsv, test.tsv")
  p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
  p.add_argument("--quick", action="store_true",
                 help=f"the test's size: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
  p.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "bert_jax_downstream"),
                 help="caches (vocab, dataset, pretraining run, export) and the fine-tuning runs")
  p.add_argument("--out_dir", default=None,
                 help="where downstream.json and .png go (default: --work_dir)")
  p.add_argument("--seeds", default=None, help="fine-tuning seeds, both arms (default 0,1,2)")
  p.add_argument("--preset", default=None, help="model.preset of both arms (default mini)")
  p.add_argument("--vocab_size", type=int, default=None)
  p.add_argument("--max_lines", type=int, default=None,
                 help="use the corpus's first N lines (0: all)")
  p.add_argument("--seq_len", type=int, default=None, help="pretraining sequence length")
  p.add_argument("--batch_size", type=int, default=None, help="pretraining batch")
  p.add_argument("--pretrain_steps", type=int, default=None)
  p.add_argument("--warmup", type=int, default=None, help="pretraining warmup steps")
  p.add_argument("--lr", type=float, default=None, help="pretraining peak learning rate")
  p.add_argument("--masked_lm_prob", type=float, default=0.15)
  p.add_argument("--max_predictions_per_seq", type=int, default=20)
  p.add_argument("--ft_lr", default=None,
                 help="fine-tuning peak learning rate; several, comma-separated: each arm runs "
                      "every one and keeps the best on dev (default 1e-4,1e-3)")
  p.add_argument("--ft_epochs", type=float, default=None)
  p.add_argument("--ft_batch_size", type=int, default=None)
  p.add_argument("--max_seq_length", type=int, default=None, help="fine-tuning tokens per row")
  p.add_argument("--eval_every", type=int, default=None, help="fine-tuning steps between evals")
  p.add_argument("--task_text", action=argparse.BooleanOptionalAction, default=True,
                 help="also pretrain on the task's train.tsv texts without their labels "
                      "(task-adaptive pretraining); dev and test texts never")
  p.add_argument("--train_rows", type=int, default=0,
                 help="fine-tune both arms on a fixed random sample of this many labelled "
                      "train.tsv rows (the same for both; 0: all); --task_text still pretrains on "
                      "every train text, without labels (the semi-supervised regime)")
  p.add_argument("--arms", default="pretrained,scratch", help="which arms to fine-tune")
  p.add_argument("--max_wall_s", type=float, default=3600.0,
                 help="a stage still running after this many seconds is stopped")
  return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
  base = QUICK if args.quick else DEFAULTS
  for k, v in base.items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  if not os.path.isfile(args.corpus):
    raise SystemExit(f"error: --corpus={args.corpus}: no such file")
  missing = [f for f in ("train.tsv", "dev.tsv", "test.tsv")
             if not os.path.isfile(os.path.join(args.task_dir, f))]
  if missing:
    raise SystemExit(f"error: --task_dir={args.task_dir}: no {', '.join(missing)} there; pass the "
                     "Debian sections task's directory (train.tsv, dev.tsv, test.tsv)")
  try:
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
  except ValueError:
    raise SystemExit(f"error: --seeds={args.seeds}: integers, e.g. --seeds=0,1,2") from None
  if not args.seeds:
    raise SystemExit("error: --seeds: at least one seed")
  try:
    args.ft_lrs = sorted({float(x) for x in str(args.ft_lr).split(",") if x.strip()})
  except ValueError:
    args.ft_lrs = []
  if not args.ft_lrs or min(args.ft_lrs) <= 0:
    raise SystemExit(f"error: --ft_lr={args.ft_lr}: positive numbers, comma-separated, e.g. "
                     "--ft_lr=3e-4,1e-3")
  args.arms = [a for a in args.arms.split(",") if a]
  if not args.arms or not set(args.arms) <= set(ARMS):
    raise SystemExit(f"error: --arms={','.join(args.arms)}: pretrained and/or scratch")
  if args.train_rows < 0 or args.train_rows == 1:
    raise SystemExit(f"error: --train_rows={args.train_rows}: 0 (all rows) or at least 2")
  if args.warmup >= args.pretrain_steps:
    raise SystemExit(f"error: --warmup={args.warmup} must be below "
                     f"--pretrain_steps={args.pretrain_steps}")
  # What prepare_data reads besides these (no HF export here).
  args.vocab, args.validation_fraction = None, 0.05
  args.task_dir = os.path.abspath(args.task_dir)
  args.out_dir = args.out_dir or args.work_dir
  return args


TASK_TEXT_DOC = 32  # train.tsv texts per pretraining document (in the file's order)


def pretraining_corpus(args) -> str:
  """--corpus, or with --task_text --corpus then the task's train.tsv texts (no labels), 32 to
  a document, one per line (written once to --work_dir; the vocabulary is trained on it too)."""
  if not args.task_text:
    return args.corpus
  with open(os.path.join(args.task_dir, "train.tsv"), encoding="utf-8") as f:
    next(f)
    texts = [line.rstrip("\n").split("\t", 1)[1].strip() for line in f if "\t" in line]
  with open(args.corpus, encoding="utf-8") as f:  # its first --max_lines lines (0: all)
    corpus = "".join(line for i, line in enumerate(f) if not args.max_lines or i < args.max_lines)
  args.max_lines = 0  # applied here, before the task's texts
  docs = ["\n".join(texts[i:i + TASK_TEXT_DOC]) for i in range(0, len(texts), TASK_TEXT_DOC)]
  text = corpus.rstrip("\n") + "\n\n" + "\n\n".join(docs) + "\n"
  path = os.path.join(args.work_dir, "corpus_" + hashlib.sha1(text.encode()).hexdigest()[:12]
                      + ".txt")
  if not os.path.exists(path):
    atomic_write(path, text)
  return path


def _tsv(task_dir: str, name: str) -> tuple[str, list[str]]:
  """A task TSV's header line and its rows as lines (newlines kept; blank lines dropped)."""
  with open(os.path.join(task_dir, name), encoding="utf-8") as f:
    header, *rows = [line for line in f if line.strip()]
  return header, rows


LABELLED_SAMPLE_SEED = 0


def labelled_task_dir(args) -> str:
  """--task_dir itself, or with --train_rows=N a copy of it in --work_dir whose train.tsv is a
  fixed random sample of N rows (numpy seed 0, in the file's order); dev.tsv and test.tsv whole."""
  if not args.train_rows:
    return args.task_dir
  header, rows = _tsv(args.task_dir, "train.tsv")
  if args.train_rows > len(rows):
    raise SystemExit(f"error: --train_rows={args.train_rows}: {args.task_dir}/train.tsv has only "
                     f"{len(rows)} rows; pass at most that, or 0 for all")
  import numpy as np
  keep = np.sort(np.random.default_rng(LABELLED_SAMPLE_SEED).choice(
      len(rows), args.train_rows, replace=False))
  train = header + "".join(rows[i] for i in keep)
  out = os.path.join(args.work_dir, f"task_{args.train_rows}_"
                     + hashlib.sha1(train.encode()).hexdigest()[:10])
  if not os.path.exists(out):
    tmp = out + f".tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "train.tsv"), "w", encoding="utf-8") as f:
      f.write(train)
    for name in ("dev.tsv", "test.tsv"):
      shutil.copyfile(os.path.join(args.task_dir, name), os.path.join(tmp, name))
    os.replace(tmp, out)
  return out


def _tag(d: dict) -> str:
  return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def _run(cmd: list[str], log_path: str, max_wall_s: float, env: dict | None = None) -> float:
  """Runs cmd (from the repository root), its output to log_path; returns its wall seconds or
  exits with the log's tail when it fails."""
  tta.log(f"[run] {' '.join(cmd)}  (log: {log_path})")
  t = time.monotonic()
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
  with open(log_path, "w") as f:
    try:
      proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=repo_configs.REPO,
                            env=env, timeout=max_wall_s)
      code = proc.returncode
    except subprocess.TimeoutExpired:
      code = "timeout"
  if code != 0:
    tail = open(log_path).read().splitlines()[-15:]
    raise SystemExit(f"error: {cmd[2] if len(cmd) > 2 else cmd[0]} failed ({code}); the end of "
                     f"{log_path}:\n" + "\n".join(tail))
  return time.monotonic() - t


# --------------------------------------------------------------------------- pretraining


def pretrain(args, data: dict) -> dict:
  """The pretraining run and its HF export, cached per settings; returns their paths, the final
  eval (MLM accuracy, unigram baseline) and the seconds it took (when it ran now)."""
  settings = {"data": data["data_dir"], "preset": args.preset, "seq_len": args.seq_len,
              "batch": args.batch_size, "steps": args.pretrain_steps, "warmup": args.warmup,
              "lr": args.lr, "mlm": args.masked_lm_prob, "preds": args.max_predictions_per_seq}
  workdir = os.path.join(args.work_dir, "pretrain", _tag(settings))
  export = os.path.join(workdir, "export")
  seconds = None
  if not os.path.exists(os.path.join(export, "config.json")):
    if os.path.exists(workdir):  # an interrupted earlier attempt: start it over
      shutil.rmtree(workdir)
    os.makedirs(workdir)
    flags = {
        "model.preset": args.preset, "data.data_dir": data["data_dir"],
        "data.seq_len": args.seq_len, "data.max_predictions_per_seq": args.max_predictions_per_seq,
        "data.masked_lm_prob": args.masked_lm_prob, "model.hidden_dropout_prob": 0.0,
        "model.attention_probs_dropout_prob": 0.0, "train.batch_size": args.batch_size,
        "train.num_steps": args.pretrain_steps, "train.log_every_steps": 50,
        "optimizer.name": "adamw", "optimizer.learning_rate": args.lr,
        "optimizer.warmup_steps": args.warmup, "optimizer.decay": "wsd",
        "optimizer.decay_steps": args.pretrain_steps - args.warmup,
        "optimizer.wsd_decay_shape": "linear", "optimizer.end_learning_rate": 0.0,
        "optimizer.eps": 1e-6, "optimizer.weight_decay": 0.01, "optimizer.clip_grad_norm": 1.0,
        "checkpoint.every_steps": args.pretrain_steps,
        "eval.every_steps": args.pretrain_steps, "eval.num_batches": -1,
    }
    cmd = [sys.executable, "-m", "bert_jax.train", f"--config={repo_configs.path('tiny')}",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()]
    seconds = _run(cmd, os.path.join(workdir, "train.log"), args.max_wall_s)
    tmp = export + ".tmp"
    _run([sys.executable, "-m", "bert_jax.export", f"--workdir={workdir}",
          f"--output_dir={tmp}", "--format=hf", "--overwrite"],
         os.path.join(workdir, "export.log"), args.max_wall_s)
    os.replace(tmp, export)
  else:
    tta.log(f"[pretrain] cached: {workdir}")
  evals = [r for r in tta._metrics(workdir) if r.get("kind") == "eval" and "mlm_accuracy" in r]
  last = evals[-1] if evals else {}
  return {"workdir": workdir, "export": export, "steps": args.pretrain_steps,
          "seconds": seconds, "mlm_accuracy": last.get("mlm_accuracy"),
          "unigram_accuracy": last.get("unigram_accuracy"), "settings": settings}


# --------------------------------------------------------------------------- fine-tuning


def finetune(args, arm: str, lr: float, vocab: str, export: str, root: str) -> dict:
  """One arm at one peak learning rate: `bert_jax.finetune_suite --suite=debian` over --seeds;
  returns its suite.json."""
  workdir = os.path.join(root, arm)
  os.makedirs(workdir, exist_ok=True)
  sets = {"model.preset": args.preset, "model.hidden_dropout_prob": 0.1,
          "model.attention_probs_dropout_prob": 0.1, "data.max_seq_length": args.max_seq_length,
          "data.vocab": vocab, "train.num_epochs": args.ft_epochs,
          "train.batch_size": args.ft_batch_size, "optimizer.learning_rate": lr,
          "eval.every_steps": args.eval_every, "train.log_every_steps": args.eval_every}
  cmd = [sys.executable, "-m", "bert_jax.finetune_suite", "--suite=debian",
         f"--data_dir={args.labelled_dir}", f"--workdir={workdir}",
         f"--init_from={export}" if arm == "pretrained" else "--from_scratch",
         f"--seeds={','.join(map(str, args.seeds))}", "--json"]
  cmd += [f"--set={k}={v}" for k, v in sets.items()]
  seconds = _run(cmd, os.path.join(workdir, "suite.log"), args.max_wall_s)
  # The seconds of every command on this workdir, summed: a rerun skips finished runs (a few
  # seconds) and resumes unfinished ones, so the total is what fine-tuning this arm cost.
  total_path = os.path.join(workdir, "seconds.json")
  if os.path.exists(total_path):
    seconds += json.load(open(total_path))["seconds"]
  atomic_write(total_path, json.dumps({"seconds": seconds}))
  summary = json.load(open(os.path.join(workdir, "suite.json")))
  summary["seconds"] = seconds
  return summary


def _curves(summary: dict) -> list[list[dict]]:
  """Each seed's dev evals [{step, accuracy}], from its run's results.json."""
  out = []
  task = summary["tasks"]["debian"]
  for rel in task["runs"]:
    results = json.load(open(os.path.join(summary["workdir"], rel, "results.json")))
    out.append([{"step": e["step"], "accuracy": e["accuracy"]} for e in results["evals"]])
  return out


def majority_accuracy(task_dir: str) -> tuple[str, float]:
  """The train set's most frequent label and its share of test.tsv."""
  def labels(name):
    return [line.split("\t", 1)[0] for line in _tsv(task_dir, name)[1]]
  label = collections.Counter(labels("train.tsv")).most_common(1)[0][0]
  test = labels("test.tsv")
  return label, sum(t == label for t in test) / len(test)


def arm_result(summary: dict, lr: float) -> dict:
  t = summary["tasks"]["debian"]
  if not t.get("test"):
    raise SystemExit(f"error: {summary['workdir']}/suite.json has no test scores: is test.tsv "
                     "labelled?")
  test = t["test"]["scores"]
  return {"ft_lr": lr, "test_accuracy": t["test"]["mean"], "test_accuracy_std": t["test"]["std"],
          "test_accuracies": test, "test_min": min(test), "test_max": max(test),
          "dev_accuracy": t["eval"]["accuracy"]["mean"],
          "dev_accuracy_std": t["eval"]["accuracy"]["std"], "seeds": t["seeds"],
          "fine_tune_seconds": summary.get("seconds"), "workdir": summary["workdir"],
          "curves": _curves(summary)}


def best_on_dev(by_lr: dict[float, dict]) -> dict:
  """The arm's result at the rate with the highest mean dev accuracy (ties: the lower rate),
  with `sweep`: every rate's dev and test means, in rate order."""
  lr = max(sorted(by_lr), key=lambda k: by_lr[k]["dev_accuracy"])  # max keeps the first of ties
  sweep = [{"ft_lr": k, "dev_accuracy": r["dev_accuracy"], "test_accuracy": r["test_accuracy"],
            "test_accuracy_std": r["test_accuracy_std"]} for k, r in sorted(by_lr.items())]
  return {**by_lr[lr], "sweep": sweep}


# --------------------------------------------------------------------------- report


def plot(path: str, result: dict) -> str | None:
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
  except ImportError:
    return None
  arms = result["arms"]
  s = result["settings"]
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120,
                               gridspec_kw={"width_ratios": [2.2, 1]})
  names = {"pretrained": f"pretrained ({result['pretraining']['steps']} steps)",
           "scratch": "from random init"}
  names = {a: f"{n}, lr {arms[a]['ft_lr']:g}" for a, n in names.items() if a in arms}
  colours = {"pretrained": "tab:blue", "scratch": "tab:orange"}
  for arm, r in arms.items():
    steps = [e["step"] for e in r["curves"][0]]
    acc = np.array([[e["accuracy"] for e in c] for c in r["curves"]
                    if [e["step"] for e in c] == steps])
    ax.plot(steps, acc.mean(0), color=colours[arm], marker="o", markersize=3, label=names[arm])
    ax.fill_between(steps, acc.min(0), acc.max(0), color=colours[arm], alpha=0.2)
  ax.axhline(result["majority_test_accuracy"], color="gray", linestyle="--", linewidth=1,
             label=f"majority class ({result['majority_label']})")
  ax.set_xlabel("fine-tuning step")
  ax.set_ylabel("dev accuracy (mean, range over seeds)")
  rows = (f", {s['train_rows']} of {s['all_train_rows']} labelled rows"
          if s["train_rows"] != s["all_train_rows"] else "")
  lrs = ("" if len(s["ft_lrs"]) == 1 else
         f"\nlr per arm: the best mean dev of {', '.join(f'{x:g}' for x in s['ft_lrs'])}")
  ax.set_title(f"Debian sections (12 classes{rows}), BERT-{s['preset']}, batch "
               f"{s['ft_batch_size']}{lrs}", fontsize=9)
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  for i, (arm, r) in enumerate(arms.items()):
    ys = r["test_accuracies"]
    bx.scatter([i] * len(ys), ys, color=colours[arm], s=18, zorder=3)
    bx.errorbar([i + 0.15], [r["test_accuracy"]], yerr=[r["test_accuracy_std"]],
                color=colours[arm], fmt="s", capsize=4)
  bx.axhline(result["majority_test_accuracy"], color="gray", linestyle="--", linewidth=1)
  bx.set_xticks(range(len(arms)), [a for a in arms])
  bx.set_xlim(-0.5, len(arms) - 0.5)
  bx.set_ylim(0, 1)
  bx.set_ylabel("test accuracy (seeds; mean ± std)")
  bx.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def report(result: dict) -> None:
  s, p = result["settings"], result["pretraining"]
  mlm = p["mlm_accuracy"]
  print(f"pretraining: BERT-{s['preset']}, {p['steps']} steps of masked LM at batch "
        f"{s['batch_size']} x {s['seq_len']} on {os.path.basename(s['corpus'])}"
        f"{' + the task train texts (no labels)' if s['task_text'] else ''}; held-out MLM "
        f"accuracy {'-' if mlm is None else f'{mlm:.4f}'} (unigram baseline "
        f"{'-' if p['unigram_accuracy'] is None else format(p['unigram_accuracy'], '.4f')})"
        + (f", {p['seconds']:.0f} s" if p["seconds"] else ", cached"))
  lrs = (f"{s['ft_lrs'][0]:g}" if len(s["ft_lrs"]) == 1 else
         f"{{{', '.join(f'{x:g}' for x in s['ft_lrs'])}}} (each arm's best mean dev)")
  sample = (f" (a fixed random sample of the {s['all_train_rows']})"
            if s["train_rows"] != s["all_train_rows"] else "")
  print(f"fine-tuning: Debian sections, {s['train_rows']} train{sample} / {s['dev_rows']} dev / "
        f"{s['test_rows']} test rows, {s['ft_epochs']:g} epochs at batch {s['ft_batch_size']} "
        f"x {s['max_seq_length']}, AdamW lr {lrs}, dropout 0.1, seeds "
        f"{','.join(map(str, s['seeds']))}; test = each seed's best-on-dev model")
  if len(s["ft_lrs"]) > 1:
    print(f"{'':12s}{'lr':>8s}{'dev acc':>9s}{'test acc mean ± std':>22s}")
    for arm, r in result["arms"].items():
      for row in r["sweep"]:
        mark = "  <- best on dev" if row["ft_lr"] == r["ft_lr"] else ""
        print(f"{arm:12s}{row['ft_lr']:>8g}{row['dev_accuracy']:>9.4f}"
              f"{row['test_accuracy']:>13.4f} ± {row['test_accuracy_std']:.4f}{mark}")
  print(f"{'':12s}{'lr':>8s}{'test acc mean ± std':>22s}{'min':>8s}{'max':>8s}{'dev acc':>9s}"
        f"{'seconds':>9s}  per seed")
  for arm, r in result["arms"].items():
    secs = r["fine_tune_seconds"]
    print(f"{arm:12s}{r['ft_lr']:>8g}{r['test_accuracy']:>13.4f} ± {r['test_accuracy_std']:.4f}"
          f"{r['test_min']:>8.4f}{r['test_max']:>8.4f}{r['dev_accuracy']:>9.4f}"
          f"{'-' if secs is None else f'{secs:.0f}':>9s}  "
          + " ".join(f"{a:.4f}" for a in r["test_accuracies"]))
  print(f"majority class ({result['majority_label']}): test accuracy "
        f"{result['majority_test_accuracy']:.4f}")
  if result["gap"] is not None:
    print(f"gap (pretrained - scratch, mean test accuracy): {result['gap']:+.4f}; worst "
          f"pretrained seed - best scratch seed: {result['gap_worst_vs_best']:+.4f}")
  why = ("it compares the two arms: run both" if len(result["arms"]) < 2 else
         "matplotlib is not installed: pip install -e .[hf]")
  print(f"plot: {result['plot'] or f'not written ({why})'}")


def _rows(task_dir: str, name: str) -> int:
  return len(_tsv(task_dir, name)[1])


def main(argv=None) -> int:
  args = resolve(parser().parse_args(argv))
  os.makedirs(args.work_dir, exist_ok=True)
  given_corpus = args.corpus
  args.labelled_dir = labelled_task_dir(args)  # before pretraining: a bad --train_rows fails fast
  args.corpus = pretraining_corpus(args)
  with contextlib.redirect_stdout(sys.stderr):  # TFDS prints its progress to stdout
    data = tta.prepare_data(args, hf_export=False)
    pre = pretrain(args, data)
  ft_settings = {k: getattr(args, k) for k in ("preset", "ft_epochs", "ft_batch_size",
                                               "max_seq_length", "eval_every")}
  arms = {}
  for arm in args.arms:
    by_lr = {}
    for lr in args.ft_lrs:
      root = os.path.join(args.work_dir, "finetune", _tag(
          {"pretrain": pre["workdir"], "task": args.labelled_dir, **ft_settings, "ft_lr": lr}))
      by_lr[lr] = arm_result(finetune(args, arm, lr, data["vocab"], pre["export"], root), lr)
      tta.log(f"[{arm}, lr {lr:g}] dev accuracy {by_lr[lr]['dev_accuracy']:.4f}, test "
              f"accuracy {by_lr[lr]['test_accuracy']:.4f} ± {by_lr[lr]['test_accuracy_std']:.4f}")
    arms[arm] = best_on_dev(by_lr)
  label, majority = majority_accuracy(args.labelled_dir)
  both = "pretrained" in arms and "scratch" in arms
  result = {
      "pretrained_test_accuracy": arms.get("pretrained", {}).get("test_accuracy"),
      "pretrained_test_accuracy_std": arms.get("pretrained", {}).get("test_accuracy_std"),
      "pretrained_test_accuracies": arms.get("pretrained", {}).get("test_accuracies"),
      "scratch_test_accuracy": arms.get("scratch", {}).get("test_accuracy"),
      "scratch_test_accuracy_std": arms.get("scratch", {}).get("test_accuracy_std"),
      "scratch_test_accuracies": arms.get("scratch", {}).get("test_accuracies"),
      "gap": (arms["pretrained"]["test_accuracy"] - arms["scratch"]["test_accuracy"]
              if both else None),
      "gap_worst_vs_best": (arms["pretrained"]["test_min"] - arms["scratch"]["test_max"]
                            if both else None),
      "majority_label": label, "majority_test_accuracy": majority,
      "pretraining": pre, "arms": arms,
      "settings": {**ft_settings, "ft_lrs": args.ft_lrs, "seeds": args.seeds,
                   "batch_size": args.batch_size,
                   "seq_len": args.seq_len, "vocab_size": data["vocab_size"],
                   "corpus": os.path.abspath(given_corpus), "task_text": args.task_text,
                   "pretraining_corpus": args.corpus, "task_dir": args.task_dir,
                   "labelled_task_dir": args.labelled_dir,
                   "train_rows": _rows(args.labelled_dir, "train.tsv"),
                   "all_train_rows": _rows(args.task_dir, "train.tsv"),
                   "dev_rows": _rows(args.task_dir, "dev.tsv"),
                   "test_rows": _rows(args.task_dir, "test.tsv"), "quick": args.quick,
                   "cpus": os.cpu_count()},
  }
  os.makedirs(args.out_dir, exist_ok=True)
  result["plot"] = plot(os.path.join(args.out_dir, "downstream.png"), result) if both else None
  with open(os.path.join(args.out_dir, "downstream.json"), "w") as f:
    json.dump(result, f, indent=1)
  report(result)
  if args.json:
    print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
