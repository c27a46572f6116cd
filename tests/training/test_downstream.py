"""benchmarks/downstream.py --quick --json end to end: the bundled sample corpus, the shipped slice
of the Debian sections task (tests/fixtures/debian-sections-slice).

Every stage runs for real: vocab and dataset, `python -m bert_jax.train` (BERT-tiny, 60 steps),
`python -m bert_jax.export --format=hf`, then `python -m bert_jax.finetune_suite --suite=debian`
twice (from the export, and --from_scratch), two seeds each. At this size both arms sit near the
majority class, so the test checks the bookkeeping, not the gap: every reported number against
the runs' own files (test accuracy recounted from test_predictions.tsv, mean and sample std, the
majority baseline from the TSVs), what each arm started from, and the plot. ~60-120 s on the
shared 2-core host.
"""

import collections
import json
import pathlib
import statistics
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "downstream.py"
TASK = REPO / "tests" / "fixtures" / "debian-sections-slice"


def _rows(path):
  lines = path.read_text(encoding="utf-8").splitlines()[1:]
  return [line.split("\t") for line in lines if line.strip()]


@pytest.mark.slow
def test_quick_json_end_to_end(tmp_path):
  from bert_jax.data import SAMPLE_CORPUS
  out_dir = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, str(SCRIPT), f"--corpus={SAMPLE_CORPUS}", f"--task_dir={TASK}", "--quick",
       "--json", "--train_rows=320", "--ft_lr=2e-3,1e-3", f"--work_dir={tmp_path / 'work'}", f"--out_dir={out_dir}"],
      capture_output=True, text=True, timeout=900, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-4000:]
  print(proc.stdout)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  seeds = result["settings"]["seeds"]
  assert seeds == [0, 1]
  test_rows = _rows(TASK / "test.tsv")
  # --train_rows=320: both arms fine-tune on the same fixed sample of 320 distinct labelled rows
  # (in the file's order); dev and test are whole.
  labelled = pathlib.Path(result["settings"]["labelled_task_dir"])
  sample, all_train = _rows(labelled / "train.tsv"), _rows(TASK / "train.tsv")
  assert len(sample) == 320 == result["settings"]["train_rows"]
  assert result["settings"]["all_train_rows"] == len(all_train) == 640
  positions = [all_train.index(row) for row in sample]
  assert positions == sorted(positions) and len(set(map(tuple, sample))) == 320
  assert positions != list(range(320))  # a random sample, not the head of the file
  assert _rows(labelled / "test.tsv") == test_rows
  assert _rows(labelled / "dev.tsv") == _rows(TASK / "dev.tsv")
  assert result["settings"]["ft_lrs"] == [1e-3, 2e-3]
  for arm in ("pretrained", "scratch"):
    r = result["arms"][arm]
    assert r["seeds"] == seeds
    # Each arm ran both rates and reports the one with the best mean dev accuracy (ties: the
    # lower), whose run directory and config the checks below then read.
    sweep = r["sweep"]
    assert [row["ft_lr"] for row in sweep] == [1e-3, 2e-3]
    best = max(sweep, key=lambda row: row["dev_accuracy"])
    assert r["ft_lr"] == best["ft_lr"] and r["dev_accuracy"] == best["dev_accuracy"]
    assert r["test_accuracy"] == best["test_accuracy"]
    accs = result[f"{arm}_test_accuracies"]
    assert accs == r["test_accuracies"] and len(accs) == len(seeds)
    assert result[f"{arm}_test_accuracy"] == pytest.approx(statistics.mean(accs), abs=1e-12)
    assert result[f"{arm}_test_accuracy_std"] == pytest.approx(statistics.stdev(accs), abs=1e-12)
    for seed, acc in zip(seeds, accs):
      run = pathlib.Path(r["workdir"]) / "debian" / f"seed{seed}"
      preds = _rows(run / "test_predictions.tsv")  # index, prediction, gold label
      assert len(preds) == len(test_rows)
      assert [p[2] for p in preds] == [t[0] for t in test_rows]
      assert acc == pytest.approx(sum(p[1] == p[2] for p in preds) / len(preds), abs=1e-12)
      config = json.loads((run / "config.json").read_text())
      assert config["train"]["seed"] == seed and config["model"]["preset"] == "tiny"
      assert config["optimizer"]["learning_rate"] == r["ft_lr"]
      assert config["model"]["hidden_dropout_prob"] == 0.1
      assert config["data"]["train_file"] == str(labelled / "train.tsv")
      if arm == "pretrained":
        assert config["init_from"] == result["pretraining"]["export"]
      else:
        assert config["init_from"] == ""
    # Dev evals every eval_every steps to the end (320 rows / 16 = 20 steps: 10, 20).
    for curve in r["curves"]:
      assert [e["step"] for e in curve] == [10, 20]
      assert all(0 <= e["accuracy"] <= 1 for e in curve)
  vocabs = {json.loads((pathlib.Path(result["arms"][a]["workdir"]) / "debian" / "seed0" /
                        "config.json").read_text())["data"]["vocab"] for a in result["arms"]}
  assert len(vocabs) == 1
  export = pathlib.Path(result["pretraining"]["export"])
  assert json.loads((export / "config.json").read_text())["model_type"] == "bert"
  assert (export / "model.safetensors").exists()
  assert result["pretraining"]["steps"] == 60 and 0 <= result["pretraining"]["mlm_accuracy"] <= 1
  assert result["gap"] == pytest.approx(
      result["pretrained_test_accuracy"] - result["scratch_test_accuracy"], abs=1e-12)
  assert result["gap_worst_vs_best"] == pytest.approx(
      min(result["pretrained_test_accuracies"]) - max(result["scratch_test_accuracies"]),
      abs=1e-12)
  label, _ = collections.Counter(t[0] for t in sample).most_common(1)[0]
  assert result["majority_label"] == label
  assert result["majority_test_accuracy"] == pytest.approx(
      sum(t[0] == label for t in test_rows) / len(test_rows), abs=1e-12)
  plot = pathlib.Path(result["plot"])
  assert plot.parent == out_dir and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert (out_dir / "downstream.json").exists()


def _error_line(*flags) -> str:
  """downstream.py with these flags on the bundled sample: exits 1; its last stderr line."""
  from bert_jax.data import SAMPLE_CORPUS
  proc = subprocess.run([sys.executable, str(SCRIPT), f"--corpus={SAMPLE_CORPUS}", *flags],
                        capture_output=True, text=True, timeout=120, cwd=REPO)
  assert proc.returncode == 1
  return proc.stderr.strip().splitlines()[-1]


def test_bad_task_dir_is_one_line(tmp_path):
  assert _error_line(f"--task_dir={tmp_path}") == (
      f"error: --task_dir={tmp_path}: no train.tsv, dev.tsv, test.tsv there; pass the Debian "
      "sections task's directory (train.tsv, dev.tsv, test.tsv)")


def test_train_rows_beyond_the_file_is_one_line(tmp_path):
  assert _error_line(f"--task_dir={TASK}", "--train_rows=641", f"--work_dir={tmp_path}") == (
      f"error: --train_rows=641: {TASK}/train.tsv has only 640 rows; pass at most that, or 0 "
      "for all")


@pytest.mark.parametrize("lr", ["0", "1e-3,x"])
def test_bad_ft_lr_is_one_line(tmp_path, lr):
  assert _error_line(f"--task_dir={TASK}", f"--ft_lr={lr}", f"--work_dir={tmp_path}") == (
      f"error: --ft_lr={lr}: positive numbers, comma-separated, e.g. --ft_lr=3e-4,1e-3")


@pytest.mark.parametrize("rows", [-1, 1])
def test_train_rows_below_two_is_one_line(tmp_path, rows):
  assert _error_line(f"--task_dir={TASK}", f"--train_rows={rows}", f"--work_dir={tmp_path}") == (
      f"error: --train_rows={rows}: 0 (all rows) or at least 2")
