"""Fine-tuning the ModernBERT family through the same bert_jax.finetune configs: a briefly
pretrained ModernBERT-tiny (objective none) exported to HF and ours, then classification with
cls and mean pooling, token tagging and span QA on the local tasks of test_finetune.py."""

import json

import pytest

from bert_jax import load_pretrained
from bert_jax.finetuning import run
from bert_jax.training import export
from test_finetune import _config, tasks  # noqa: F401  (the module's task files fixture)


@pytest.fixture(scope="module")
def modern_exports(sample_data, tmp_path_factory):
  """ModernBERT-tiny, 40 steps of 30% MLM on the sample (the fixed WordPiece vocabulary),
  exported as hf and orbax."""
  from configs import modernbert_tiny

  from bert_jax.data import SAMPLE_CORPUS, prepare
  from bert_jax.training import trainer
  vocab, _ = sample_data
  root = tmp_path_factory.mktemp("modern")
  prepare.prepare(input=str(SAMPLE_CORPUS), vocab=vocab, data_dir=str(root / "data"),
                  max_seq_length=64, max_predictions_per_seq=20, masked_lm_prob=0.3,
                  objective="none", validation_fraction=0.1)
  c = modernbert_tiny.get_config()
  c.data.data_dir, c.data.seq_len, c.data.max_predictions_per_seq = str(root / "data"), 64, 20
  c.data.pack = False
  c.train.batch_size, c.train.num_steps, c.train.log_every_steps = 16, 40, 20
  c.train.batch_size_warmup_min = 0  # the whole run at 16
  c.optimizer.warmup_steps, c.optimizer.decay_steps = 5, 10
  c.checkpoint.every_steps, c.eval.every_steps, c.eval.num_batches = 40, 40, 1
  c.train.peak_tflops_per_device = 1.0
  trainer.train_and_evaluate(c, str(root / "run"))
  return {fmt: str(export.export(str(root / "run"), str(root / fmt), format=fmt)[0])
          for fmt in ("hf", "orbax")}


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classification(modern_exports, tasks, tmp_path, pooling):  # noqa: F811
  c = _config(**{"init_from": modern_exports["hf"], "data.train_file": str(tasks / "cls_train.csv"),
                 "data.eval_file": str(tasks / "cls_dev.csv"), "data.max_seq_length": 40,
                 "model.classifier_pooling": pooling, "optimizer.learning_rate": 1e-3,
                 "train.num_steps": 60, "eval.every_steps": 60, "export.format": "hf"})
  results = run.finetune_and_evaluate(c, str(tmp_path))
  assert results["metric"] == "accuracy" and results["best"] >= 0.75, results  # majority: 0.5
  best = load_pretrained(str(tmp_path / "best"), None)
  assert type(best).__name__ == "ModernBertForSequenceClassification"
  assert best.config.classifier_pooling == pooling
  hf_config = json.loads((tmp_path / "export" / "config.json").read_text())
  assert hf_config["architectures"] == ["ModernBertForSequenceClassification"]
  assert hf_config["classifier_pooling"] == pooling


@pytest.mark.slow
def test_token_tagging(modern_exports, tasks, tmp_path):  # noqa: F811
  c = _config(**{"task": "token_classification", "init_from": modern_exports["orbax"],
                 "data.train_file": str(tasks / "tag_train.jsonl"),
                 "data.eval_file": str(tasks / "tag_dev.conll"), "data.max_seq_length": 40,
                 "optimizer.learning_rate": 1e-3, "train.num_steps": 60})
  results = run.finetune_and_evaluate(c, str(tmp_path))
  assert results["metric"] == "f1" and results["best"] >= 0.7, results  # all-O: f1 0


@pytest.mark.slow
def test_span_qa(modern_exports, tasks, tmp_path):  # noqa: F811
  c = _config(**{"task": "question_answering", "init_from": modern_exports["hf"],
                 "data.train_file": str(tasks / "qa_train.json"),
                 "data.eval_file": str(tasks / "qa_dev.json"), "data.max_seq_length": 40,
                 "data.doc_stride": 16, "optimizer.learning_rate": 1e-3, "train.num_steps": 60})
  results = run.finetune_and_evaluate(c, str(tmp_path))
  assert results["metric"] == "f1" and results["best_eval"]["exact_match"] >= 70.0, results
