"""Fine-tuning runs pretraining's loop: SIGTERM saves and a resumed run equals an uninterrupted
one; two processes (real jax.distributed, gloo) train the same global batches as one; MFU, ETA
and TensorBoard events are written like pretraining's."""

import csv
import json
import os
import random
import re
import subprocess
import sys

import pytest

from bert_jax.finetuning import run
from bert_jax.data import SAMPLE_CORPUS
from bert_jax.errors import UserError
from configs.finetune import default
import helpers
from helpers import REPO, override, sigterm_after_first_metrics

STEPS = 60


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
  """A small labelled task from the sample corpus: does the sentence contain "the"?"""
  root = tmp_path_factory.mktemp("ft_loop")
  with open(SAMPLE_CORPUS, encoding="utf-8") as f:
    lines = [l.strip() for l in f if 4 <= len(l.split()) <= 16]
  random.Random(0).shuffle(lines)
  rows = [(l, "yes" if re.search(r"\bthe\b", l.lower()) else "no") for l in lines[:200]]
  for name, part in (("train", rows[:160]), ("dev", rows[160:])):
    with open(root / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
      csv.writer(f).writerows([("sentence", "label"), *part])
  return root


def _overrides(task_files, vocab) -> dict:
  return {"task": "classification", "data.train_file": str(task_files / "train.csv"),
          "data.eval_file": str(task_files / "dev.csv"), "data.vocab": vocab,
          "model.preset": "tiny", "data.max_seq_length": 32, "train.batch_size": 8,
          "train.num_steps": STEPS, "eval.every_steps": 10, "eval.batch_size": 8,
          "train.log_every_steps": 1, "train.peak_tflops_per_device": 1.0,
          "optimizer.learning_rate": 1e-3}


def _config(overrides):
  return override(default.get_config(), overrides)


def _args(overrides):
  return [f"--config={REPO / 'configs' / 'finetune' / 'default.py'}",
          *(f"--config.{k}={v}" for k, v in overrides.items())]


def _train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def _env(devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu", BERT_JAX_HUGE_PAGES="0")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


@pytest.mark.slow
def test_sigterm_saves_then_resume_equals_an_uninterrupted_run(sample_data, task_files, tmp_path):
  vocab, _ = sample_data
  overrides = _overrides(task_files, vocab)
  straight = tmp_path / "straight"
  expected = run.finetune_and_evaluate(_config(overrides), str(straight))
  for kind in ("train", "eval"):  # TensorBoard, as pretraining writes it
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(straight / kind))
  train_rows = [json.loads(l) for l in (straight / "metrics.jsonl").read_text().splitlines()
                if '"train"' in l]
  assert {"mfu", "tokens_per_s", "seq_per_s", "steps_per_s"} <= set(train_rows[-1])

  resumed = tmp_path / "resumed"
  out = sigterm_after_first_metrics(
      ["bert_jax.finetune", f"--workdir={resumed}", *_args(overrides)], resumed, env=_env(8))
  assert "| MFU " in out and "| ETA " in out
  saved = int(os.listdir(resumed / "checkpoints")[0])
  assert 2 <= saved < STEPS

  got = run.finetune_and_evaluate(_config(overrides), str(resumed))
  a, b = _train_losses(straight), _train_losses(resumed)
  assert set(range(saved + 2, STEPS + 1)) <= set(b)  # the resumed run's first step compiles
  for step in range(saved + 2, STEPS + 1):
    assert abs(a[step] - b[step]) <= 1e-6 * max(1.0, abs(a[step])), (step, a[step], b[step])
  assert [e["step"] for e in got["evals"]] == [e["step"] for e in expected["evals"]]
  assert got["best"] == pytest.approx(expected["best"], abs=1e-6)
  assert got["best_step"] == expected["best_step"]


@pytest.mark.slow
def test_two_processes_finetune_like_one(sample_data, task_files, tmp_path):
  vocab, _ = sample_data
  overrides = dict(_overrides(task_files, vocab), **{"train.num_steps": 6,
                                                     "eval.every_steps": 3})
  single = tmp_path / "single"
  subprocess.run([sys.executable, "-m", "bert_jax.finetune", f"--workdir={single}",
                  *_args(overrides)], cwd=REPO, env=_env(4), check=True, capture_output=True,
                 timeout=600)
  multi = tmp_path / "multi"
  helpers.run_processes(["bert_jax.finetune", f"--workdir={multi}", *_args(overrides)], 2,
                        tmp_path, env=_env(2))
  a, b = _train_losses(single), _train_losses(multi)
  assert sorted(a) == sorted(b) and len(a) >= 4
  for step in a:
    assert abs(a[step] - b[step]) <= 1e-5 * max(1.0, abs(a[step])), (step, a[step], b[step])
  ra = json.loads((single / "results.json").read_text())
  rb = json.loads((multi / "results.json").read_text())
  assert ra["best"] == pytest.approx(rb["best"], abs=1e-6)
  assert os.listdir(multi / "checkpoints") == ["6"]


@pytest.mark.parametrize("key,value,choices", [("train.on_nonfinite", "halt", "stop, skip"),
                                               ("checkpoint.on_save_error", "ignore",
                                                "stop, continue")])
def test_loop_policies_are_checked_at_start_up(key, value, choices):
  with pytest.raises(UserError) as e:
    run.validate_config(override(default.get_config(), {key: value}))
  assert str(e.value) == f"--config.{key}={value!r} is not one of {choices}"
