"""Extractive QA (SQuAD v1.1 / v2.0): examples, doc-stride features, answer post-processing, and
the official exact-match / F1.

Features follow google-research/bert run_squad.py: [CLS] question [SEP] context-window [SEP];
the question is cut to max_query_length tokens; windows of at most max_seq_length - q - 3
context tokens start every doc_stride tokens; a training answer outside the window (and every
v2.0 unanswerable question) points at [CLS] (position 0). Sub-tokens carry character offsets
into the context (`Tokenizer.encode_with_offsets`), so predicted spans map back to the exact
context characters (run_squad's `get_final_text` alignment is not needed).

Post-processing (run_squad.py `write_predictions`): per example, over all its windows, the
n_best_size top start and end logits form candidate spans (end >= start, at most
max_answer_length tokens, both inside the context, the start token in the window where it has
the most context); the best span by start + end logit wins. v2.0: the null score is the
smallest [CLS] start + end logit over the windows; the answer is "" when null score - best span
score > null_score_diff_threshold.

Scores: the official evaluate-v1.1.py / evaluate-v2.0.py (normalise: lower case, drop
punctuation, drop articles a/an/the, collapse whitespace; F1 over normalised tokens; the max
over the gold answers; an unanswerable question's only gold answer is "").
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import string

import numpy as np
from etils import epath

from bert_jax.errors import DataError
from bert_jax.text.tokenization import Tokenizer


@dataclasses.dataclass
class SquadExample:
  qid: str
  question: str
  context: str
  answers: list[tuple[str, int]]  # (text, start character); [] for unanswerable
  is_impossible: bool = False


# ---- reading ----------------------------------------------------------------------------------
def read_squad_json(path: str) -> list[SquadExample]:
  """A SQuAD v1.1/v2.0 JSON file ({"data": [{"paragraphs": [{"context", "qas"}]}]})."""
  try:
    data = json.loads(epath.Path(path).read_bytes().decode("utf-8"))["data"]
  except FileNotFoundError:
    raise DataError(f"{path}: no such file (check --config.data.train_file/eval_file)") from None
  except (ValueError, KeyError, TypeError) as e:
    raise DataError(f"{path}: not a SQuAD JSON file ({type(e).__name__}: {e}); expected "
                    '{"data": [{"paragraphs": [{"context": ..., "qas": [...]}]}]}') from None
  out = []
  for article in data:
    for paragraph in article["paragraphs"]:
      context = paragraph["context"]
      for qa in paragraph["qas"]:
        impossible = bool(qa.get("is_impossible", False))
        answers = [] if impossible else [(a["text"], int(a["answer_start"]))
                                         for a in qa.get("answers", [])]
        out.append(SquadExample(str(qa["id"]), qa["question"], context, answers, impossible))
  if not out:
    raise DataError(f"{path}: no questions")
  return out


def read_squad_tfds(name: str, split: str, data_dir: str) -> list[SquadExample]:
  from bert_jax.finetuning.readers import _text, tfds_examples
  rows, _ = tfds_examples(name, split, data_dir)
  out = []
  for r in rows:
    texts, starts = r["answers"]["text"], r["answers"]["answer_start"]
    impossible = bool(r.get("is_impossible", False))
    answers = [] if impossible else [(_text(t), int(s)) for t, s in zip(texts, starts)]
    out.append(SquadExample(_text(r["id"]), _text(r["question"]), _text(r["context"]), answers,
                            impossible))
  return out


# ---- features ---------------------------------------------------------------------------------
def doc_windows(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
  """(start, length) of each window over num_tokens context tokens (run_squad's doc spans)."""
  spans, start = [], 0
  while True:
    length = min(num_tokens - start, max_tokens)
    spans.append((start, length))
    if start + length >= num_tokens:
      return spans
    start += min(length, doc_stride)


def max_context_window(spans: list[tuple[int, int]], num_tokens: int) -> np.ndarray:
  """int [num_tokens]: for each context token, the window giving it the most context, scored
  min(left, right context) + 0.01 * window length (run_squad.py `_check_is_max_context`)."""
  positions = np.arange(num_tokens)
  scores = np.full((len(spans), num_tokens), -np.inf)
  for i, (start, length) in enumerate(spans):
    inside = (positions >= start) & (positions < start + length)
    score = np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length
    scores[i] = np.where(inside, score, -np.inf)
  return np.argmax(scores, axis=0)  # ties: the earlier window, as run_squad's strict ">"


def featurize(examples: list[SquadExample], tokenizer: Tokenizer, *, max_seq_length: int,
              doc_stride: int, max_query_length: int, training: bool) -> tuple[dict, int]:
  """-> (features, answers lost). Features, F windows in all, L = max_seq_length:
  input_ids, token_type_ids, attention_mask int32 [F, L]; start_positions, end_positions
  int32 [F] (training); example_index int32 [F]; offsets int32 [F, L, 2] (the context
  characters of each context token, -1 elsewhere); max_context bool [F, L]."""
  questions = tokenizer.encode_batch([e.question for e in examples])
  unique = list(dict.fromkeys(e.context for e in examples))  # contexts repeat ~5x in SQuAD
  encoded = dict(zip(unique, tokenizer.encode_with_offsets(unique)))
  rows = collections.defaultdict(list)
  lost = 0
  for ei, ex in enumerate(examples):
    q = questions[ei][:max_query_length]
    ctx_ids, ctx_offsets = encoded[ex.context]
    answer = None  # (first token, last token) of the first answer, in the context's tokens
    if training and ex.answers and not ex.is_impossible:
      text, start_char = ex.answers[0]
      end_char = start_char + len(text)
      inside = [t for t, (a, b) in enumerate(ctx_offsets) if a < end_char and b > start_char]
      if not inside:
        lost += 1  # the answer's characters do not match any token (bad offsets in the data)
        continue
      answer = (inside[0], inside[-1])
    max_tokens = max_seq_length - len(q) - 3
    spans = doc_windows(len(ctx_ids), max_tokens, doc_stride)
    best_window = max_context_window(spans, len(ctx_ids))
    for si, (start, length) in enumerate(spans):
      ids = [tokenizer.cls_id] + q + [tokenizer.sep_id] + ctx_ids[start:start + length] + [
          tokenizer.sep_id]
      first = len(q) + 2  # position of the window's first context token
      n = len(ids)
      input_ids = np.full(max_seq_length, tokenizer.pad_id, np.int32)
      input_ids[:n] = ids
      types = np.zeros(max_seq_length, np.int32)
      types[first:n] = 1
      offsets = np.full((max_seq_length, 2), -1, np.int32)
      offsets[first:first + length] = ctx_offsets[start:start + length]
      max_ctx = np.zeros(max_seq_length, bool)
      max_ctx[first:first + length] = best_window[start:start + length] == si
      s_pos = e_pos = 0
      if answer is not None and start <= answer[0] and answer[1] < start + length:
        s_pos, e_pos = answer[0] - start + first, answer[1] - start + first
      rows["input_ids"].append(input_ids)
      rows["token_type_ids"].append(types)
      rows["attention_mask"].append((np.arange(max_seq_length) < n).astype(np.int32))
      rows["start_positions"].append(s_pos)
      rows["end_positions"].append(e_pos)
      rows["example_index"].append(ei)
      rows["offsets"].append(offsets)
      rows["max_context"].append(max_ctx)
  features = {k: np.asarray(v, np.int32 if k != "max_context" else bool) for k, v in rows.items()}
  if not training:
    features.pop("start_positions", None)
    features.pop("end_positions", None)
  return features, lost


# ---- post-processing --------------------------------------------------------------------------
def postprocess(examples: list[SquadExample], features: dict, start_logits: np.ndarray,
                end_logits: np.ndarray, *, n_best_size: int = 20, max_answer_length: int = 30,
                version_2_with_negative: bool = False, null_score_diff_threshold: float = 0.0):
  """start/end logits [F, L] -> (predictions {qid: text}, null_odds {qid: null - best score},
  nbest {qid: [{text, start_logit, end_logit, probability}]})."""
  by_example = collections.defaultdict(list)
  for f, ei in enumerate(features["example_index"]):
    by_example[int(ei)].append(f)
  predictions, null_odds, nbest_out = {}, {}, {}
  for ei, ex in enumerate(examples):
    candidates, null_score = [], None
    for f in by_example.get(ei, []):
      s_logits, e_logits = start_logits[f], end_logits[f]
      offsets, max_ctx = features["offsets"][f], features["max_context"][f]
      score0 = float(s_logits[0] + e_logits[0])
      null_score = score0 if null_score is None else min(null_score, score0)
      starts = np.argsort(s_logits)[::-1][:n_best_size]
      ends = np.argsort(e_logits)[::-1][:n_best_size]
      for s in starts:
        for e in ends:
          if offsets[s, 0] < 0 or offsets[e, 0] < 0 or not max_ctx[s]:
            continue
          if e < s or e - s + 1 > max_answer_length:
            continue
          text = ex.context[offsets[s, 0]:offsets[e, 1]].strip()
          candidates.append((float(s_logits[s] + e_logits[e]), float(s_logits[s]),
                             float(e_logits[e]), text))
    candidates.sort(key=lambda c: -c[0])
    nbest, seen = [], set()
    for score, s_logit, e_logit, text in candidates:
      if text in seen:
        continue
      seen.add(text)
      nbest.append({"text": text, "start_logit": s_logit, "end_logit": e_logit, "score": score})
      if len(nbest) >= n_best_size:
        break
    best_non_null = nbest[0] if nbest else None
    if version_2_with_negative and null_score is not None and "" not in seen:
      nbest.append({"text": "", "start_logit": null_score, "end_logit": 0.0,
                    "score": null_score})
      nbest.sort(key=lambda c: -c["score"])
      nbest = nbest[:n_best_size + 1]
    if not nbest:
      nbest = [{"text": "", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0}]
    scores = np.asarray([c["score"] for c in nbest])
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    for c, p in zip(nbest, probs):
      c["probability"] = float(p)
      del c["score"]
    nbest_out[ex.qid] = nbest
    if not version_2_with_negative:
      predictions[ex.qid] = best_non_null["text"] if best_non_null else ""
      continue
    best_score = (best_non_null["start_logit"] + best_non_null["end_logit"]
                  if best_non_null else float("-inf"))
    diff = (null_score if null_score is not None else 0.0) - best_score
    null_odds[ex.qid] = float(diff) if np.isfinite(diff) else 1e9
    predictions[ex.qid] = "" if diff > null_score_diff_threshold else best_non_null["text"]
  return predictions, null_odds, nbest_out


# ---- official scores --------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
  """Lower text and remove punctuation, articles and extra whitespace (evaluate-v2.0.py)."""
  s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(gold: str, prediction: str) -> int:
  return int(normalize_answer(gold) == normalize_answer(prediction))


def f1_score(gold: str, prediction: str) -> float:
  gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
  if not gold_tokens or not pred_tokens:  # no-answer: 1 if both are empty
    return float(gold_tokens == pred_tokens)
  common = collections.Counter(gold_tokens) & collections.Counter(pred_tokens)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def evaluate(examples: list[SquadExample], predictions: dict[str, str]) -> dict:
  """exact_match / f1 in percent over all questions, and the HasAns / NoAns parts when the
  set has unanswerable questions. Missing predictions count as "" (the official scripts skip
  them with a message; we never produce a set with holes)."""
  em, f1, has = {}, {}, {}
  for ex in examples:
    golds = [t for t, _ in ex.answers if normalize_answer(t)] or [""]
    pred = predictions.get(ex.qid, "")
    em[ex.qid] = max(exact_match(g, pred) for g in golds)
    f1[ex.qid] = max(f1_score(g, pred) for g in golds)
    has[ex.qid] = golds != [""]
  total = max(len(em), 1)
  out = {"exact_match": 100.0 * sum(em.values()) / total,
         "f1": 100.0 * sum(f1.values()) / total, "total": len(em)}
  if not all(has.values()):
    for name, want in (("HasAns", True), ("NoAns", False)):
      ids = [q for q in em if has[q] == want]
      if ids:
        out[f"{name}_exact_match"] = 100.0 * sum(em[q] for q in ids) / len(ids)
        out[f"{name}_f1"] = 100.0 * sum(f1[q] for q in ids) / len(ids)
        out[f"{name}_total"] = len(ids)
  return out
