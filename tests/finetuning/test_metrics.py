"""Fine-tuning metrics against hand-computed values (and scipy where it is installed)."""

import numpy as np
import pytest

from bert_jax.finetuning import metrics as fm


def test_accuracy_f1_mcc():
  pred, gold = np.array([1, 1, 1, 0, 0, 0]), np.array([1, 1, 0, 0, 0, 1])
  # TP 2, FP 1, TN 2, FN 1.
  assert fm.accuracy(pred, gold) == pytest.approx(4 / 6)
  assert fm.binary_f1(pred, gold) == pytest.approx(2 * 2 / (3 + 3))
  assert fm.matthews_corrcoef(pred, gold) == pytest.approx((2 * 2 - 1 * 1) / 9)
  assert fm.matthews_corrcoef(np.ones(4, int), np.array([1, 0, 1, 0])) == 0.0  # undefined -> 0
  assert fm.matthews_corrcoef(gold, gold) == pytest.approx(1.0)
  # 3 classes, Gorodkin's R_K: confusion [[2,1,0],[0,2,0],[1,0,1]] (rows true).
  gold3, pred3 = np.array([0, 0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 1, 0, 2])
  c, s = 5, 7
  t, p = np.array([3, 2, 2]), np.array([3, 3, 1])
  expected = (c * s - t @ p) / np.sqrt((s * s - p @ p) * (s * s - t @ t))
  assert fm.matthews_corrcoef(pred3, gold3) == pytest.approx(expected)
  logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])
  assert fm.classification_metrics(logits, np.array([1, 0, 0])) == pytest.approx(
      {"accuracy": 2 / 3, "mcc": 0.5, "f1": 2 / 3})


def test_correlations():
  x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  assert fm.pearson(x, 2 * x + 1) == pytest.approx(1.0)
  assert fm.spearman(x, x ** 3) == pytest.approx(1.0)
  assert fm.spearman(x, -x) == pytest.approx(-1.0)
  # Ties take average ranks: [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4].
  a, b = np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])
  ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4])
  assert fm.spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  u, v = rng.integers(0, 6, 50).astype(float), rng.normal(size=50)
  assert fm.pearson(u, v) == pytest.approx(stats.pearsonr(u, v)[0])
  assert fm.spearman(u, v) == pytest.approx(stats.spearmanr(u, v)[0])
  out = fm.regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0]))
  assert out["mse"] == pytest.approx(1 / 3) and out["spearman"] == pytest.approx(1.0)


def test_entity_spans():
  assert fm.entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3)}
  assert fm.entity_spans(["O", "I-PER", "I-PER"]) == {("PER", 1, 2)}  # I- after O starts one
  assert fm.entity_spans(["B-PER", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 1)}  # type change
  assert fm.entity_spans(["B-PER", "B-PER"]) == {("PER", 0, 0), ("PER", 1, 1)}
  assert fm.entity_spans(["B-ORG", "I-ORG", "I-ORG"]) == {("ORG", 0, 2)}
  assert fm.entity_spans(["S-PER", "B-LOC", "E-LOC"]) == {("PER", 0, 0), ("LOC", 1, 2)}
  assert fm.entity_spans(["O", "O"]) == set()


def test_tagging_metrics_seqeval_example():
  # seqeval's README example: one of two gold MISC/PER entities predicted exactly.
  gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
  pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
  out = fm.tagging_metrics(pred, gold)
  assert out == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 8 / 10})
  assert fm.tagging_metrics([["O"]], [["O"]])["f1"] == 0.0
  with pytest.raises(ValueError, match="2 predicted tags but 1 gold"):
    fm.tagging_metrics([["O", "O"]], [["O"]])
