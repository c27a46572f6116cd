"""SQuAD: official normalisation and scores, doc-stride windows, features, span post-processing,
all against hand-checked values."""

import json

import numpy as np
import pytest

from bert_jax.finetuning import squad
from bert_jax.errors import DataError
from bert_jax.text.tokenization import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", ".",
         "dog", "ran", "in", "park", "where", "is", "who"]
CONTEXT = "The cat sat on the mat. The dog ran in the park."
# tokens:  0 the 1 cat 2 sat 3 on 4 the 5 mat 6 . 7 the 8 dog 9 ran 10 in 11 the 12 park 13 .


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  path.write_text("\n".join(VOCAB) + "\n")
  return Tokenizer.from_file(str(path))


def test_normalize_and_scores():
  assert squad.normalize_answer("  The Cat,  sat!  ") == "cat sat"
  assert squad.normalize_answer("an apple a day") == "apple day"
  assert squad.exact_match("the cat", "A cat.") == 1
  assert squad.exact_match("Denver Broncos", "Broncos") == 0
  # gold [cat, sat, on, mat], prediction [cat, on, mat]: precision 1, recall 3/4.
  assert squad.f1_score("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)
  assert squad.f1_score("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
  assert squad.f1_score("", "") == 1.0 and squad.f1_score("", "cat") == 0.0
  assert squad.f1_score("cat", "") == 0.0 and squad.f1_score("cat", "dog") == 0.0


def test_evaluate_v2_with_null_answers():
  ex = [squad.SquadExample("q1", "", "", [("Denver Broncos", 0), ("Broncos", 7)]),
        squad.SquadExample("q2", "", "", [], is_impossible=True),
        squad.SquadExample("q3", "", "", [], is_impossible=True),
        squad.SquadExample("q4", "", "", [("the mat", 0)])]
  preds = {"q1": "broncos", "q2": "", "q3": "the park", "q4": "mat and dog"}
  out = squad.evaluate(ex, preds)
  # q1 EM 1 F1 1; q2 EM 1 F1 1; q3 0 0; q4 EM 0, F1: gold [mat], pred [mat, and, dog] -> 0.5
  assert out["exact_match"] == pytest.approx(50.0)
  assert out["f1"] == pytest.approx(100 * 2.5 / 4)
  assert (out["HasAns_exact_match"], out["HasAns_f1"], out["HasAns_total"]) == (
      pytest.approx(50.0), pytest.approx(75.0), 2)
  assert (out["NoAns_exact_match"], out["NoAns_total"]) == (pytest.approx(50.0), 2)
  assert "HasAns_total" not in squad.evaluate(ex[:1], preds)  # v1.1-style set: no split


def test_doc_windows_and_max_context():
  assert squad.doc_windows(14, 6, 3) == [(0, 6), (3, 6), (6, 6), (9, 5)]
  assert squad.doc_windows(5, 6, 3) == [(0, 5)]
  assert squad.doc_windows(0, 6, 3) == [(0, 0)]
  best = squad.max_context_window(squad.doc_windows(14, 6, 3), 14)
  # token 4 ties between windows 0 and 1 (min(4, 1) + .06 = min(1, 4) + .06): the earlier
  # wins, as run_squad's strict ">"; token 6: window 1 (min(3, 2) + .06) over window 2
  # (min(0, 5) + .06); token 10: window 2 (1.06) over window 3 (1.05).
  np.testing.assert_array_equal(best, [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


def test_features_map_answers_into_windows(tokenizer):
  ex = squad.SquadExample("q", "where is the dog", CONTEXT,
                          [("in the park", CONTEXT.index("in the park"))])
  f, lost = squad.featurize([ex], tokenizer, max_seq_length=13, doc_stride=3,
                            max_query_length=64, training=True)
  assert lost == 0 and f["input_ids"].shape == (4, 13)
  # [CLS] where is the dog [SEP] + 6 context tokens + [SEP]; context starts at position 6.
  assert tokenizer.convert_ids_to_tokens(f["input_ids"][3]) == [
      "[CLS]", "where", "is", "the", "dog", "[SEP]", "ran", "in", "the", "park", ".", "[SEP]",
      "[PAD]"]
  np.testing.assert_array_equal(f["token_type_ids"][3], [0] * 6 + [1] * 6 + [0])
  np.testing.assert_array_equal(f["attention_mask"][3], [1] * 12 + [0])
  # The answer (context tokens 10..12) lies whole only in the last window.
  np.testing.assert_array_equal(f["start_positions"], [0, 0, 0, 7])
  np.testing.assert_array_equal(f["end_positions"], [0, 0, 0, 9])
  np.testing.assert_array_equal(f["example_index"], [0, 0, 0, 0])
  assert f["offsets"][3, 7].tolist() == [CONTEXT.index("in the"), CONTEXT.index("in the") + 2]
  assert f["offsets"][3, 0].tolist() == [-1, -1] and f["offsets"][3, 11].tolist() == [-1, -1]
  np.testing.assert_array_equal(f["max_context"][3, 6:11], [False, False, True, True, True])
  # Evaluation features carry no positions; question cut to max_query_length.
  f, _ = squad.featurize([ex], tokenizer, max_seq_length=13, doc_stride=3, max_query_length=2,
                         training=False)
  assert "start_positions" not in f
  assert tokenizer.convert_ids_to_tokens(f["input_ids"][0][:4]) == ["[CLS]", "where", "is",
                                                                    "[SEP]"]


def _logits(features, picks):
  """Zero logits except {(window, position): (start, end)} values."""
  start = np.zeros(features["input_ids"].shape, np.float32)
  end = np.zeros_like(start)
  for (w, pos), (s, e) in picks.items():
    start[w, pos] += s
    end[w, pos] += e
  return start, end


def test_postprocess_maps_back_to_context_characters(tokenizer):
  ex = squad.SquadExample("q", "who ran", CONTEXT, [("The cat", 0)])
  f, _ = squad.featurize([ex], tokenizer, max_seq_length=11, doc_stride=3, max_query_length=64,
                         training=False)
  # [CLS] who ran [SEP]: the context starts at position 4; 6 tokens per window, windows at
  # context tokens 0, 3, 6, 9. "The cat" = tokens 0..1 = window 0 positions 4..5 (original case).
  start, end = _logits(f, {(0, 4): (5.0, 0.0), (0, 5): (0.0, 5.0)})
  preds, _, nbest = squad.postprocess([ex], f, start, end, n_best_size=3, max_answer_length=30)
  assert preds == {"q": "The cat"}
  assert nbest["q"][0]["text"] == "The cat" and nbest["q"][0]["probability"] > 0.9
  # Longer than max_answer_length tokens: not a candidate.
  preds, _, _ = squad.postprocess([ex], f, start, end, max_answer_length=1)
  assert preds["q"] in ("The", "cat")
  # "dog" (token 8) from window 1 (position 9), where it does NOT have its most context (window
  # 2 does): rejected; the lower-scoring "ran" (window 2, position 7) wins instead.
  start, end = _logits(f, {(1, 9): (5.0, 0.0), (2, 7): (1.0, 1.0)})
  preds, _, _ = squad.postprocess([ex], f, start, end)
  assert preds["q"] == "ran"
  # A span ending in [SEP] / padding or before its start is never produced.
  start, end = _logits(f, {(0, 5): (5.0, 1.0), (0, 4): (0.0, 5.0), (0, 10): (0.0, 9.0)})
  preds, _, _ = squad.postprocess([ex], f, start, end)
  assert preds["q"] == "cat"


def test_postprocess_null_answer_v2(tokenizer):
  ex = squad.SquadExample("q", "who ran", CONTEXT, [], is_impossible=True)
  f, _ = squad.featurize([ex], tokenizer, max_seq_length=11, doc_stride=3, max_query_length=64,
                         training=False)
  picks = {(w, 0): (10.0, 10.0) for w in range(4)}
  picks[(3, 0)] = (9.0, 9.0)  # the null score is the smallest over the windows: 18
  picks.update({(0, 4): (5.0, 0.0), (0, 5): (0.0, 5.0)})  # the best span "The cat": 10
  start, end = _logits(f, picks)
  preds, odds, nbest = squad.postprocess([ex], f, start, end, version_2_with_negative=True)
  assert preds == {"q": ""} and odds["q"] == pytest.approx(8.0)
  assert "" in [c["text"] for c in nbest["q"]]
  preds, _, _ = squad.postprocess([ex], f, start, end, version_2_with_negative=True,
                                  null_score_diff_threshold=9.0)
  assert preds == {"q": "The cat"}


def test_read_squad_json(tmp_path):
  path = tmp_path / "dev.json"
  path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [{
      "context": CONTEXT, "qas": [
          {"id": "a", "question": "who ran", "answers": [{"text": "The dog", "answer_start": 24}]},
          {"id": "b", "question": "who flew", "answers": [], "is_impossible": True}]}]}]}))
  ex = squad.read_squad_json(str(path))
  assert [(e.qid, e.answers, e.is_impossible) for e in ex] == [
      ("a", [("The dog", 24)], False), ("b", [], True)]
  bad = tmp_path / "bad.json"
  bad.write_text('{"paragraphs": []}')
  with pytest.raises(DataError, match=r"bad.json: not a SQuAD JSON file \(KeyError"):
    squad.read_squad_json(str(bad))
