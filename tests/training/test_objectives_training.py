"""Training on datasets prepared with each objective and masking strategy: the model and loss
follow the dataset, and every eval also reports MLM at BERT's 15% token masking."""

import json
import os

import numpy as np
import pytest

from bert_jax.data import SAMPLE_CORPUS
from bert_jax.data.prepare import prepare
from bert_jax.training import trainer
from helpers import tiny_config


def _records(workdir, kind):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == kind]


@pytest.mark.slow
@pytest.mark.parametrize("objective,strategy,rate", [("none", "span", 0.3),
                                                     ("sop", "whole_word", 0.15)])
def test_training_follows_the_dataset(sample_data, tmp_path, caplog, objective, strategy, rate):
  vocab, _ = sample_data
  data_dir = str(tmp_path / "data")
  prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=data_dir, max_seq_length=64,
          max_predictions_per_seq=20, objective=objective, masking_strategy=strategy,
          masked_lm_prob=rate, validation_fraction=0.1)
  config = tiny_config(data_dir, **{"data.max_predictions_per_seq": 20,
                                    "data.masked_lm_prob": rate})
  with caplog.at_level("INFO"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  train, evals = _records(tmp_path / "run", "train"), _records(tmp_path / "run", "eval")
  assert [e["step"] for e in evals] == [3, 6]
  has_nsp = any("nsp" in k for r in train + evals for k in r)
  assert has_nsp == (objective != "none")
  for e in evals:
    assert np.isfinite(e["mlm15_accuracy"]) and np.isfinite(e["mlm15_loss"])
    assert e["mlm15_loss"] != e["mlm_loss"]  # another masking: a second eval pass
  assert "| mlm at 15% acc " in caplog.text
  if objective == "sop":
    assert "| sop " in caplog.text and "| nsp " not in caplog.text
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["data"]["objective"] == objective
