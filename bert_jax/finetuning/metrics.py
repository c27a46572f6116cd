"""Fine-tuning metrics, computed on the host over a whole evaluation set (numpy, no sklearn).

- Classification: accuracy, F1 of the positive class (binary: label id 1, as GLUE's MRPC/QQP),
  Matthews correlation (CoLA; the multi-class generalisation, R_K, for more classes).
- Regression: Pearson and Spearman correlation (STS-B; Spearman with average ranks for ties).
- Token tagging: entity-level precision / recall / F1 over BIO (IOB2) chunks, as conlleval and
  seqeval's default mode score them (a chunk is correct when its type, start and end all match;
  an I-X after O or after another type starts a new chunk), plus word accuracy.
SQuAD's exact match / F1 live in `bert_jax.finetuning.squad` (they need the official answer normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  """predictions, labels: int [N]."""
  return float(np.mean(np.asarray(predictions) == np.asarray(labels))) if len(labels) else 0.0


def binary_f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
  """F1 of class `positive` (0 when it is never predicted nor present)."""
  p, y = np.asarray(predictions) == positive, np.asarray(labels) == positive
  tp = float(np.sum(p & y))
  denom = float(np.sum(p) + np.sum(y))
  return 2 * tp / denom if denom else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation coefficient (Gorodkin's R_K for K classes; 0 when undefined)."""
  p, y = np.asarray(predictions), np.asarray(labels)
  classes = np.union1d(p, y)
  confusion = np.zeros((len(classes), len(classes)), np.float64)  # [true, predicted]
  np.add.at(confusion, (np.searchsorted(classes, y), np.searchsorted(classes, p)), 1)
  t, pk, c, s = confusion.sum(1), confusion.sum(0), np.trace(confusion), confusion.sum()
  denom = np.sqrt((s * s - pk @ pk) * (s * s - t @ t))
  return float((c * s - t @ pk) / denom) if denom else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  xc, yc = x - x.mean(), y - y.mean()
  denom = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
  return float(np.sum(xc * yc) / denom) if denom else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.arange(1, len(x) + 1)
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  sums = np.zeros(len(counts))
  np.add.at(sums, inverse, ranks)
  return (sums / counts)[inverse]  # ties share the mean of their ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  return pearson(_average_ranks(np.asarray(x)), _average_ranks(np.asarray(y)))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
  """logits [N, C], labels int [N] -> accuracy, mcc (+ f1 for C = 2)."""
  predictions = np.argmax(logits, -1)
  out = {"accuracy": accuracy(predictions, labels),
         "mcc": matthews_corrcoef(predictions, labels)}
  if logits.shape[-1] == 2:
    out["f1"] = binary_f1(predictions, labels)
  return out


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict:
  """predictions, labels float [N] -> pearson, spearman, mse."""
  predictions, labels = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
  return {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels),
          "mse": float(np.mean((predictions - labels) ** 2)) if len(labels) else 0.0}


# ---- entity-level scores for BIO tags ---------------------------------------------------------
def _split_tag(tag: str) -> tuple[str, str]:
  if tag in ("O", "") or "-" not in tag:
    return ("O", "") if tag in ("O", "") else (tag[:1], "")
  prefix, kind = tag.split("-", 1)
  return prefix, kind


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """BIO/IOB2 tags of one sentence -> {(type, first word, last word)} (conlleval's rules)."""
  spans, start, kind = set(), None, None
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, t = _split_tag(tag)
    starts_new = prefix in ("B", "S") or (prefix in ("I", "E") and (kind != t or start is None))
    if start is not None and (prefix == "O" or starts_new):
      spans.add((kind, start, i - 1))
      start, kind = None, None
    if starts_new:
      start, kind = i, t
    if prefix in ("E", "S") and start is not None:  # IOBES endings close the chunk here
      spans.add((kind, start, i))
      start, kind = None, None
  return spans


def tagging_metrics(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict:
  """Per-sentence tag sequences (words) -> entity precision / recall / f1, word accuracy."""
  tp = n_pred = n_gold = correct = words = 0
  for p, g in zip(predicted, gold, strict=True):
    if len(p) != len(g):
      raise ValueError(f"a sentence has {len(p)} predicted tags but {len(g)} gold tags")
    ps, gs = entity_spans(p), entity_spans(g)
    tp, n_pred, n_gold = tp + len(ps & gs), n_pred + len(ps), n_gold + len(gs)
    correct += sum(a == b for a, b in zip(p, g))
    words += len(g)
  precision = tp / n_pred if n_pred else 0.0
  recall = tp / n_gold if n_gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1,
          "accuracy": correct / words if words else 0.0}
