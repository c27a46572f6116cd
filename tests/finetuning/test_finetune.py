"""Fine-tuning end to end on CPU: pretrain (fixture) -> export -> fine-tune small LOCAL tasks whose
labels depend on the text, well above the trivial baseline; resume; bad input in one line.

Tasks are generated from the bundled sample corpus (sentences of the Python docs):
- classification: does the sentence contain the word "the"? (balanced: majority = 50%);
- tagging: words from a fixed list are B-KEY, the rest O (entity F1; all-O scores 0);
- span QA: the context holds exactly one keyword of the list; the answer is that span (a
  random word of the ~15-word context would be right ~7% of the time). A question-conditioned
  copy task (answer = the question's word) also learns, but needs a few hundred steps.
"""

import csv
import json
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import errors
from bert_jax.training import export
from bert_jax import load_pretrained
from bert_jax.finetuning import run
from bert_jax.data import SAMPLE_CORPUS
from bert_jax.errors import DataError
from configs.finetune import default

KEYWORDS = {"module", "function", "python", "object", "class", "value", "argument", "file",
            "method", "code"}


def _sentences(max_words: int) -> list[str]:
  with open(SAMPLE_CORPUS, encoding="utf-8") as f:
    lines = [l.strip() for l in f if 4 <= len(l.split()) <= max_words]
  random.Random(0).shuffle(lines)
  return lines


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
  root = tmp_path_factory.mktemp("tasks")
  lines = _sentences(20)
  has = [l for l in lines if re.search(r"\bthe\b", l.lower())]
  hasnt = [l for l in lines if not re.search(r"\bthe\b", l.lower())]
  for name, lo, hi in (("train", 0, 320), ("dev", 320, 420)):
    rows = [(s, "yes") for s in has[lo:hi]] + [(s, "no") for s in hasnt[lo:hi]]
    random.Random(1).shuffle(rows)
    with open(root / f"cls_{name}.csv", "w", newline="", encoding="utf-8") as f:
      csv.writer(f).writerows([("sentence", "label")] + rows)
  tagged = [{"tokens": l.split(), "tags": ["B-KEY" if re.sub(r"\W", "", w.lower()) in KEYWORDS
                                           else "O" for w in l.split()]} for l in lines]
  (root / "tag_train.jsonl").write_text("\n".join(json.dumps(t) for t in tagged[:640]) + "\n")
  with open(root / "tag_dev.conll", "w", encoding="utf-8") as f:  # CoNLL columns for eval
    for t in tagged[640:840]:
      f.write("".join(f"{w} _ {g}\n" for w, g in zip(t["tokens"], t["tags"])) + "\n")
  paragraphs = []
  for i, l in enumerate(lines):
    hits = [m for m in re.finditer(r"[A-Za-z]+", l) if m.group().lower() in KEYWORDS]
    if len(hits) == 1:
      paragraphs.append({"context": l, "qas": [{"id": f"q{i}", "question": "which keyword",
                                                "answers": [{"text": hits[0].group(),
                                                             "answer_start": hits[0].start()}]}]})
  for name, part in (("train", paragraphs[:480]), ("dev", paragraphs[480:600])):
    (root / f"qa_{name}.json").write_text(json.dumps(
        {"version": "1.1", "data": [{"title": "docs", "paragraphs": part}]}))
  return root


@pytest.fixture(scope="module")
def exports(pretrained_run, tmp_path_factory):
  root = tmp_path_factory.mktemp("exports")
  return {fmt: str(export.export(pretrained_run["workdir"], str(root / fmt), format=fmt)[0])
          for fmt in ("hf", "tf1", "orbax")}


def _config(**overrides):
  c = default.get_config()
  c.train.batch_size, c.eval.batch_size, c.train.log_every_steps = 32, 64, 20
  c.checkpoint.async_save = False
  for key, value in overrides.items():
    group, _, name = key.rpartition(".")
    (c[group] if group else c)[name] = value
  return c


@pytest.mark.slow
def test_classification_from_hf_export(exports, tasks, tmp_path):
  workdir = tmp_path / "cls"
  c = _config(**{"init_from": exports["hf"], "data.train_file": str(tasks / "cls_train.csv"),
                 "data.eval_file": str(tasks / "cls_dev.csv"),
                 "data.test_file": str(tasks / "cls_dev.csv"), "data.max_seq_length": 40,
                 "optimizer.learning_rate": 1e-3, "train.num_steps": 60,
                 "eval.every_steps": 30, "export.format": "hf"})
  results = run.finetune_and_evaluate(c, str(workdir))
  accuracy = results["best"]
  assert results["metric"] == "accuracy" and accuracy >= 0.75, results  # majority: 0.5
  assert set(results["final_eval"]) >= {"accuracy", "f1", "mcc"}
  lines = (workdir / "eval_predictions.tsv").read_text().splitlines()
  assert lines[0] == "index\tprediction\tlabel" and len(lines) == 201
  # The labelled test file (here the dev file again) is scored with the best model.
  assert results["best_test"] == {k: v for k, v in results["best_eval"].items() if k != "epoch"}
  test_lines = (workdir / "test_predictions.tsv").read_text().splitlines()
  hits = [l.split("\t")[1] == l.split("\t")[2] for l in test_lines[1:]]
  assert results["best_test"]["accuracy"] == pytest.approx(np.mean(hits), abs=1e-12)
  best = load_pretrained(str(workdir / "best"), None)
  assert type(best).__name__ == "BertForSequenceClassification" and best.num_labels == 2
  assert json.loads((workdir / "best" / "bert_jax.json").read_text())["id2label"] == {
      "0": "no", "1": "yes"}
  hf_config = json.loads((workdir / "export" / "config.json").read_text())
  assert hf_config["id2label"] == {"0": "no", "1": "yes"}
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["kind"] == "eval"] == [30, 60]
  # Restarting with the same workdir resumes from the last checkpoint: nothing left to do.
  again = run.finetune_and_evaluate(c, str(workdir))
  assert again["best"] == accuracy and again["best_step"] == results["best_step"]


@pytest.mark.slow
def test_token_tagging_from_orbax_export(exports, tasks, tmp_path):
  c = _config(**{"task": "token_classification", "init_from": exports["orbax"],
                 "data.train_file": str(tasks / "tag_train.jsonl"),
                 "data.eval_file": str(tasks / "tag_dev.conll"), "data.max_seq_length": 40,
                 "optimizer.learning_rate": 1e-3, "train.num_steps": 60})
  results = run.finetune_and_evaluate(c, str(tmp_path))
  assert results["metric"] == "f1" and results["best"] >= 0.7, results  # all-O: f1 0
  first = json.loads((tmp_path / "eval_predictions.jsonl").read_text().splitlines()[0])
  assert len(first["predictions"]) == len(first["tokens"]) == len(first["tags"])


@pytest.mark.slow
def test_span_qa_from_tf1_export(exports, tasks, tmp_path):
  c = _config(**{"task": "question_answering", "init_from": exports["tf1"],
                 "data.train_file": str(tasks / "qa_train.json"),
                 "data.eval_file": str(tasks / "qa_dev.json"), "data.max_seq_length": 40,
                 "data.doc_stride": 16, "optimizer.learning_rate": 1e-3, "train.num_steps": 60})
  results = run.finetune_and_evaluate(c, str(tmp_path))
  assert results["metric"] == "f1" and results["best_eval"]["exact_match"] >= 70.0, results
  predictions = json.loads((tmp_path / "eval_predictions.json").read_text())
  assert len(predictions) == 120 and all(isinstance(v, str) for v in predictions.values())


# ---- bad input: one line naming the file / flag and the fix -----------------------------------
def test_bad_input_errors(exports, tasks, tmp_path):
  bad_dev = tmp_path / "dev.csv"
  bad_dev.write_text("sentence,label\nthe cat,yes\nthe dog,maybe\n")
  c = _config(**{"init_from": exports["hf"], "data.train_file": str(tasks / "cls_train.csv"),
                 "data.eval_file": str(bad_dev)})
  with pytest.raises(DataError) as e:
    run.finetune_and_evaluate(c, str(tmp_path / "w1"))
  assert str(e.value) == (f"{bad_dev} example 1: label 'maybe' is not in the label set "
                          "[no, yes]; fix the data or set --config.data.labels")
  c = _config(**{"init_from": exports["hf"], "data.train_file": str(tasks / "cls_train.csv"),
                 "data.text_b_key": "sentence2"})
  with pytest.raises(DataError) as e:
    run.finetune_and_evaluate(c, str(tmp_path / "w2"))
  assert str(e.value) == (f"{tasks / 'cls_train.csv'}: no column 'sentence2' "
                          "(--config.data.text_b_key); the columns are: sentence, label")
  c = _config(**{"init_from": exports["hf"], "data.train_file": str(tasks / "cls_train.csv"),
                 "model.preset": "mini"})
  with pytest.raises(errors.UserError) as e:
    run.finetune_and_evaluate(c, str(tmp_path / "w3"))
  assert str(e.value) == (
      f"--config.init_from={exports['hf']}: the checkpoint has hidden_size=128 but "
      "--config.model.preset=mini has hidden_size=256; set --config.model.preset='' to use the "
      "checkpoint's size or pick the matching preset")
  c = _config(**{"init_from": exports["hf"], "data.train_file": str(tasks / "cls_train.csv"),
                 "train.batch_size": 12})
  with pytest.raises(errors.UserError, match=r"batch_size=12 is not divisible by the "
                                                 r"data-parallel size 8"):
    run.finetune_and_evaluate(c, str(tmp_path / "w4"))


def test_cli_error_is_one_line(exports, tasks, tmp_path, repo_root):
  cmd = [sys.executable, "-m", "bert_jax.finetune", "--config=configs/finetune/glue_sst2.py",
         f"--workdir={tmp_path / 'w'}", f"--config.init_from={exports['hf']}",
         "--config.data.source=files", f"--config.data.train_file={tasks / 'cls_train.csv'}",
         "--config.data.text_a_key=text"]
  run = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2, run.stderr[-2000:]
  assert run.stderr.strip().splitlines()[-1] == (
      f"error: {tasks / 'cls_train.csv'}: no column 'text' (--config.data.text_a_key); the "
      "columns are: sentence, label")
