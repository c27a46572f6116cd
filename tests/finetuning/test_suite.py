"""The fine-tuning suite (`bert_jax.finetune_suite`, `bert_jax.finetuning.suite`) on the toy tasks
of tests/fixtures/suite (see its README) from the tiny fixture model tests/fixtures/pre_move/
export_hf: the table and suite.json against the runs' own results.json, reruns skipping finished
runs, --tasks / --seeds, the data check's one-line errors, --parallel's scheduling, the CLI.

Cost: three real fine-tuning runs (6 steps each) on one CPU device, two in the CLI's process and
one in a --parallel child (the CLI's compilation cache, WORKDIR/jax_cache, compiles each task's
train step once): ~60-90 s on a loaded 2-core machine, the tests that use them marked slow.
The other tests read those runs (a fake finetune_and_evaluate where a run would start), fake
the child command, or fail before any run.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.finetuning import suite

REPO = pathlib.Path(__file__).resolve().parents[2]
FIX = str(REPO / "tests" / "fixtures" / "suite")
TOY = str(REPO / "tests" / "fixtures" / "suite" / "toy.py")
MODEL = str(REPO / "tests" / "fixtures" / "pre_move" / "export_hf")
METRICS = {"topic": ["accuracy"], "score": ["pearson", "spearman"]}


def _cli(args, timeout=300):
  """python -m bert_jax.finetune_suite in one CPU device (this process has 8 fake ones, whose
  SPMD compiles take several times longer)."""
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if not f.startswith("--xla_force_host_platform_device_count"))
  env = dict(os.environ, XLA_FLAGS=flags, BERT_JAX_HUGE_PAGES="0", JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the CLI's own: WORKDIR/jax_cache
  return subprocess.run([sys.executable, "-m", "bert_jax.finetune_suite", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


def _toy(data_dir=FIX):
  s = suite.load_suite(TOY)
  s.data_dir = data_dir
  return s


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """The toy suite run by the CLI twice: --seeds=0 (topic and score at seed 0, one after the
  other in its process), then the suite's own seeds with --parallel=2 (score's seed 1, the one
  left, in a `bert_jax.finetune` child; the rest skipped) -> (workdir, the second run's --json
  summary, its stdout)."""
  workdir = tmp_path_factory.mktemp("suite") / "w"
  common = [f"--suite={TOY}", f"--init_from={MODEL}", f"--workdir={workdir}", f"--data_dir={FIX}"]
  first = _cli(common + ["--seeds=0"])
  assert first.returncode == 0, first.stderr[-3000:]
  assert first.stdout.splitlines()[-1] == f"results in {workdir}/suite.json"  # no --json
  second = _cli(common + ["--parallel=2", "--json"])
  assert second.returncode == 0, second.stderr[-3000:]
  assert not (workdir / "score" / "seed0" / "log.txt").exists()  # ran in the CLI's process
  assert (workdir / "score" / "seed1" / "log.txt").exists()  # ran in a child
  return workdir, json.loads(second.stdout.strip().splitlines()[-1]), second.stdout


def _copy(finished, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(finished[0], workdir)
  return workdir


def _expected(workdir, task, seeds):
  """A task's (mean, sample std) over seeds, from each run's results.json."""
  scores = []
  for k in seeds:
    results = json.loads((workdir / task / f"seed{k}" / "results.json").read_text())
    final = results["final_eval"]
    assert final["step"] == 6
    scores.append(float(np.mean([final[m] for m in METRICS[task]])))
  return float(np.mean(scores)), (float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0)


def _table_rows(table: str) -> dict:
  rows = {}
  for line in table.splitlines()[1:]:
    cells = [c for c in line.split("  ") if c.strip()]
    if cells and not set(cells[0]) <= {"-"}:
      rows[cells[0].strip()] = [c.strip() for c in cells]
  return rows


@pytest.mark.slow
def test_table_and_suite_json_hold_the_runs_metrics(finished):
  workdir, summary, stdout = finished
  assert json.loads((workdir / "suite.json").read_text()) == summary
  assert list(summary["tasks"]) == ["topic", "score"]  # the suite's order
  for task, seeds in (("topic", [0]), ("score", [0, 1])):
    t = summary["tasks"][task]
    mean, std = _expected(workdir, task, seeds)
    assert t["seeds"] == seeds and t["n"] == len(seeds) and t["metrics"] == METRICS[task]
    assert t["mean"] == pytest.approx(mean, rel=1e-12, abs=1e-15)
    assert t["std"] == pytest.approx(std, rel=1e-12, abs=1e-15)
    assert (workdir / task / f"seed{seeds[0]}" / "suite_config.py").exists()
  assert summary["tasks"]["score"]["std"] > 0  # two seeds, two different models
  average = np.mean([summary["tasks"][t]["mean"] for t in ("topic", "score")])
  assert summary["average"] == pytest.approx(average, rel=1e-12)
  table = stdout.strip().splitlines()[:-2]  # then "results in ...", the JSON line
  assert table == suite.format_table(summary).splitlines()
  rows = _table_rows("\n".join(table))
  for task in ("topic", "score"):
    t = summary["tasks"][task]
    assert rows[task][:4] == [task, "/".join(METRICS[task]), f"{t['mean']:.4f} ± {t['std']:.4f}",
                              str(t["n"])]
  assert rows["average"] == ["average", "over 2 tasks", f"{summary['average']:.4f}"]


@pytest.mark.slow
def test_a_rerun_skips_finished_runs_and_tasks_selects(finished, tmp_path, monkeypatch):
  from bert_jax.finetuning import run
  workdir = _copy(finished, tmp_path)
  stamps = {p: p.stat().st_mtime_ns for p in workdir.glob("*/seed*/results.json")}
  assert len(stamps) == 3

  def must_not_run(config, wd):
    raise AssertionError(f"{wd} was finished and ran again")

  monkeypatch.setattr(run, "finetune_and_evaluate", must_not_run)
  assert suite.run_suite(_toy(), str(workdir), init_from=MODEL)["tasks"] == finished[1]["tasks"]
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

  calls = []

  def fake(config, wd):  # a finished run's results.json, as finetune_and_evaluate writes it
    calls.append((wd, config.train.seed))
    final = {"step": 6, "pearson": 0.25, "spearman": 0.5, "mse": 1.0, "epoch": 1.5}
    (pathlib.Path(wd) / "results.json").write_text(json.dumps(
        {"task": "regression", "metric": "pearson", "best": 0.25, "best_step": 6,
         "best_eval": final, "evals": [final], "final_eval": final}))

  monkeypatch.setattr(run, "finetune_and_evaluate", fake)
  summary = suite.run_suite(_toy(), str(workdir), init_from=MODEL, tasks=["score"],
                            seeds=[0, 1, 2])
  assert calls == [(str(workdir / "score" / "seed2"), 2)]  # only the unfinished one ran
  assert list(summary["tasks"]) == ["score"] and summary["tasks"]["score"]["n"] == 3
  mean, std = _expected(workdir, "score", [0, 1, 2])
  assert summary["tasks"]["score"]["mean"] == pytest.approx(mean, rel=1e-12)
  assert summary["tasks"]["score"]["std"] == pytest.approx(std, rel=1e-12)
  assert summary["average"] == pytest.approx(mean, rel=1e-12)

  with pytest.raises(UserError) as e:  # a changed config never reuses another run's numbers
    suite.run_suite(_toy(), str(workdir), init_from=MODEL, sets=["train.num_steps=7"])
  assert str(e.value) == (
      f"suite task topic seed 0: {workdir / 'topic' / 'seed0'} holds a run with another config "
      "(train.num_steps: 6 there, 7 now); use another --workdir or remove that directory")


def test_missing_data_and_bad_selections_are_one_line(tmp_path):
  empty = tmp_path / "empty"
  with pytest.raises(UserError) as e:
    suite.run_suite(_toy(str(empty)), str(tmp_path / "w"), init_from=MODEL)
  assert str(e.value) == (
      f"suite task topic: missing {empty}/toy_topic/train.tsv (looked for "
      f"{empty}/toy_topic/train.tsv, {empty}/toy_topic/dev.tsv); pass --data_dir=DIR, the "
      "directory holding toy_topic/train.tsv, toy_topic/dev.tsv")
  with pytest.raises(UserError) as e:
    suite.run_suite(_toy(""), str(tmp_path / "w"), init_from=MODEL)
  assert str(e.value) == (
      "suite task topic: data.train_file=toy_topic/train.tsv is relative to the suite's data "
      "directory and no --data_dir was given; pass --data_dir=DIR, the directory holding it")
  glue = suite.load_suite("glue")
  glue.data_dir = str(tmp_path / "tfds")
  with pytest.raises(UserError) as e:
    suite.run_suite(glue, str(tmp_path / "w"), init_from=MODEL, tasks=["mrpc", "cola"])
  assert str(e.value) == (  # the suite's order: cola first
      f"suite task cola: no prepared TFDS glue/cola in {tmp_path}/tfds (looked for "
      f"{tmp_path}/tfds/glue/cola/*/dataset_info.json); prepare it with `tfds build glue/cola "
      f"--data_dir={tmp_path}/tfds` where there is network (nothing is downloaded here), or pass "
      "--glue_dir=DIR with GLUE's own TSVs (DIR/CoLA/train.tsv, DIR/CoLA/dev.tsv)")
  glue.glue_dir = str(tmp_path / "GLUE")
  with pytest.raises(UserError) as e:
    suite.run_suite(glue, str(tmp_path / "w"), init_from=MODEL, tasks=["mnli"])
  assert str(e.value) == (
      f"suite task mnli: missing {tmp_path}/GLUE/MNLI/train.tsv (looked for "
      f"{tmp_path}/GLUE/MNLI/train.tsv, {tmp_path}/GLUE/MNLI/dev_matched.tsv); put GLUE's files "
      "there in its own layout (MNLI/train.tsv, MNLI/dev_matched.tsv, as download_glue_data.py "
      "writes them), or drop --glue_dir to read TFDS glue/mnli from --data_dir")
  with pytest.raises(UserError, match=r"^--tasks=topic,nope: nope not in suite toy \(its tasks: "
                                      r"topic, score\)$"):
    suite.run_suite(_toy(), str(tmp_path / "w"), init_from=MODEL, tasks=["topic", "nope"])
  with pytest.raises(UserError, match=r"^--set=train.nope=1: 'train.nope' is not a fine-tuning "
                                      r"config key"):
    suite.run_suite(_toy(), str(tmp_path / "w"), init_from=MODEL, sets=["train.nope=1"])
  with pytest.raises(UserError, match=r"^--suite=nope: no such suite \(looked for .*nope.py\); "
                                      r"pass one of debian, glue or a suite config file$"):
    suite.load_suite("nope")


def test_glue_tsvs_are_read_by_position(tmp_path):
  """CoLA's headerless files and MRPC's (a BOM, quotes) -> named columns for the reader."""
  for name, lines in (("CoLA", ["gj04\t1\t\tOur friends won't buy it.", "gj04\t0\t*\tThey drank "
                                "the pub."]),
                      ("MRPC", ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                                '1\t1\t2\tHe said "hi.\tHe said hello', "0\t3\t4\tA b\tC d"])):
    (tmp_path / "GLUE" / name).mkdir(parents=True)
    for f in ("train.tsv", "dev.tsv"):
      (tmp_path / "GLUE" / name / f).write_text("\n".join(lines) + "\n", encoding="utf-8")
  glue = suite.load_suite("glue")
  glue.glue_dir = str(tmp_path / "GLUE")
  runs, info = suite.resolve(glue, str(tmp_path / "w"), init_from=MODEL, tasks=["cola", "mrpc"])
  assert [(r.task, r.seed) for r in runs] == [("cola", k) for k in range(5)] + [
      ("mrpc", k) for k in range(5)]
  for name in ("cola", "mrpc"):
    suite.check_data(name, info[name]["data"], glue)
    suite.convert_glue_tsvs(info[name]["data"])
  assert (tmp_path / "w/data/CoLA/train.tsv").read_text() == (
      "sentence\tlabel\nOur friends won't buy it.\t1\nThey drank the pub.\t0\n")
  assert (tmp_path / "w/data/MRPC/dev.tsv").read_text() == (
      'sentence1\tsentence2\tlabel\nHe said "hi.\tHe said hello\t1\nA b\tC d\t0\n')
  mrpc = runs[5].config.data
  assert (mrpc.source, mrpc.train_file, mrpc.text_b_key) == (
      "files", str(tmp_path / "w/data/MRPC/train.tsv"), "sentence2")
  assert info["mrpc"]["metrics"] == ["f1", "accuracy"]


FAKE_FINETUNE = textwrap.dedent('''
    import json, os, sys, time
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    workdir = args["workdir"]
    seed = int(workdir.rsplit("seed", 1)[1])
    start = time.time()
    time.sleep(1.0 if seed != 1 else 0.2)
    if seed == int(os.environ.get("FAIL_SEED", "-1")):
      print("error: boom", file=sys.stderr)
      sys.exit(2)
    final = {"step": 6, "accuracy": seed / 10, "mcc": 0.0}
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"final_eval": final, "best_eval": final, "evals": [final]}, f)
    with open(os.path.join(workdir, "fake.json"), "w") as f:
      json.dump({"device": os.environ["CUDA_VISIBLE_DEVICES"], "start": start,
                 "end": time.time()}, f)
''')


def test_parallel_runs_n_at_a_time_each_on_its_device(tmp_path, monkeypatch):
  fake = tmp_path / "fake_finetune.py"
  fake.write_text(FAKE_FINETUNE)
  monkeypatch.setattr(suite, "FINETUNE_COMMAND", (sys.executable, str(fake)))
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
  workdir = tmp_path / "w"
  summary = suite.run_suite(_toy(), str(workdir), init_from=MODEL, tasks=["topic"],
                            seeds=[0, 1, 2], parallel=2)
  spans = [json.loads((workdir / "topic" / f"seed{k}" / "fake.json").read_text())
           for k in range(3)]
  assert {s["device"] for s in spans} == {"5", "7"}
  assert spans[0]["start"] < spans[1]["end"] and spans[1]["start"] < spans[0]["end"]  # overlap
  for t in np.linspace(min(s["start"] for s in spans), max(s["end"] for s in spans), 50):
    assert sum(s["start"] <= t < s["end"] for s in spans) <= 2
  assert summary["tasks"]["topic"]["mean"] == pytest.approx(0.1)  # accuracies 0, 0.1, 0.2
  # What the child ran is the resolved config (a file the CLI can rerun by hand).
  runs, _ = suite.resolve(_toy(), str(workdir), init_from=MODEL, tasks=["topic"], seeds=[2])
  written = suite._load_py(workdir / "topic" / "seed2" / "suite_config.py", "test")
  assert written.to_dict() == runs[0].config.to_dict()

  monkeypatch.setenv("FAIL_SEED", "1")
  with pytest.raises(UserError) as e:  # the first failure stops new starts; exit status 2
    suite.run_suite(_toy(), str(tmp_path / "w2"), init_from=MODEL, tasks=["topic"],
                    seeds=[0, 1, 2], parallel=2)
  log = tmp_path / "w2" / "topic" / "seed1" / "log.txt"
  assert str(e.value) == (f"suite task topic seed 1: python -m bert_jax.finetune exited 2: "
                          f"error: boom (log: {log})")
  assert (tmp_path / "w2/topic/seed0/results.json").exists()  # the running one finished
  assert not (tmp_path / "w2/topic/seed2").exists()  # never started
  with pytest.raises(UserError, match=r"^--parallel=3: only 2 GPUs are visible "
                                      r"\(CUDA_VISIBLE_DEVICES=5,7\); lower it$"):
    suite.run_suite(_toy(), str(tmp_path / "w3"), init_from=MODEL, tasks=["topic"],
                    seeds=[0, 1, 2], parallel=3)


def test_cli_missing_data_is_one_line(tmp_path):
  proc = _cli(["--suite=glue", f"--init_from={MODEL}", f"--workdir={tmp_path / 'w'}",
               f"--glue_dir={tmp_path / 'GLUE'}", "--tasks=rte"], timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: suite task rte: missing {tmp_path}/GLUE/RTE/train.tsv (looked for "
      f"{tmp_path}/GLUE/RTE/train.tsv, {tmp_path}/GLUE/RTE/dev.tsv); put GLUE's files there in "
      "its own layout (RTE/train.tsv, RTE/dev.tsv, as download_glue_data.py writes them), or "
      "drop --glue_dir to read TFDS glue/rte from --data_dir")
  assert not (tmp_path / "w" / "rte").exists()  # nothing ran


def test_a_labelled_test_file_gives_the_best_models_test_score(tmp_path):
  """Runs whose results.json has best_test (a labelled test file): suite.json's test mean ± std
  over the seeds, and the table shows it; a task without it has test None."""
  s = _toy()
  runs, info = suite.resolve(s, str(tmp_path), init_from=MODEL)
  tests = {("score", 0): (0.2, 0.4), ("score", 1): (0.6, 0.8)}
  for r in runs:
    r.workdir.mkdir(parents=True)
    final = ({"step": 6, "accuracy": 0.75} if r.task == "topic" else
             {"step": 6, "pearson": 0.5, "spearman": 0.7, "mse": 1.0})
    results = {"final_eval": final, "evals": [final]}
    if r.task == "score":
      p, sp = tests[(r.task, r.seed)]
      results["best_test"] = {"pearson": p, "spearman": sp, "mse": 2.0}
    (r.workdir / "results.json").write_text(json.dumps(results))
  summary = suite.gather(runs, info, s, init_from=MODEL, workdir=str(tmp_path))
  assert summary["tasks"]["topic"]["test"] is None
  t = summary["tasks"]["score"]["test"]
  assert t["scores"] == pytest.approx([0.3, 0.7], abs=1e-12)
  assert t["mean"] == pytest.approx(0.5, abs=1e-12)
  assert t["std"] == pytest.approx(np.std([0.3, 0.7], ddof=1), abs=1e-12)
  assert t["eval"]["mse"] == {"mean": 2.0, "std": 0.0}
  rows = _table_rows(suite.format_table(summary))
  assert rows["score"][-1].endswith("test 0.5000 ± 0.2828 (best models)"), rows["score"]
  assert "test" not in " ".join(rows["topic"])


def test_cli_from_scratch_or_init_from(tmp_path):
  """--from_scratch (the random-init baseline) and --init_from exclude each other; one of them is
  required. (A --from_scratch suite runs in tests/benchmarks/test_downstream.py.)"""
  common = [f"--suite={TOY}", f"--workdir={tmp_path / 'w'}", f"--data_dir={FIX}"]
  both = _cli(common + [f"--init_from={MODEL}", "--from_scratch"], timeout=120)
  assert both.returncode == 2
  assert both.stderr.strip().splitlines()[-1] == (
      f"error: --from_scratch fine-tunes a randomly initialised model, but --init_from={MODEL} "
      "was given too; drop one of them")
  neither = _cli(common, timeout=120)
  assert neither.returncode == 2
  assert neither.stderr.strip().splitlines()[-1] == (
      "error: --init_from is required: an HF / bert_jax.export directory, a google-research/bert "
      "checkpoint or a pretraining WORKDIR (or --from_scratch --set=model.preset=NAME "
      "--set=data.vocab=FILE for the random-init baseline)")
  assert not (tmp_path / "w").exists()
