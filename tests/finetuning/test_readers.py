"""Fine-tuning data: file readers, label checks, classification and tagging features."""

import json

import numpy as np
import pytest

from bert_jax.errors import DataError
from bert_jax.finetuning import readers as fd
from bert_jax.text.tokenization import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "run", "##ning",
         "dogs", ".", "a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  path.write_text("\n".join(VOCAB) + "\n")
  return Tokenizer.from_file(str(path))


def test_table_readers(tmp_path):
  csv_path = tmp_path / "train.csv"
  csv_path.write_text('sentence,label\n"the cat, sat",yes\nrunning dogs,no\n')
  tsv_path = tmp_path / "dev.tsv"  # GLUE TSVs hold stray quotes: read literally
  tsv_path.write_text('sentence1\tsentence2\tlabel\n"the cat\tdogs\t1\n')
  jsonl_path = tmp_path / "test.jsonl"
  jsonl_path.write_text(json.dumps({"text": "the cat", "idx": 7}) + "\n\n")
  ex = fd.read_classification_file(str(csv_path), "", "sentence", "", "label")
  assert ex == [{"text_a": "the cat, sat", "text_b": None, "label": "yes", "index": 0},
                {"text_a": "running dogs", "text_b": None, "label": "no", "index": 1}]
  ex = fd.read_classification_file(str(tsv_path), "", "sentence1", "sentence2", "label")
  assert ex == [{"text_a": '"the cat', "text_b": "dogs", "label": "1", "index": 0}]
  ex = fd.read_classification_file(str(jsonl_path), "", "text", "", "label", labelled=False)
  assert ex == [{"text_a": "the cat", "text_b": None, "label": None, "index": 7}]


def test_reader_errors(tmp_path):
  path = tmp_path / "train.csv"
  path.write_text("sentence1,label\nthe cat,yes\n")
  with pytest.raises(DataError) as e:
    fd.read_classification_file(str(path), "", "sentence1", "sentence2", "label")
  assert str(e.value) == (f"{path}: no column 'sentence2' (--config.data.text_b_key); the "
                          "columns are: sentence1, label")
  with pytest.raises(DataError) as e:
    fd.read_classification_file(str(tmp_path / "nope.csv"), "", "s", "", "label")
  assert str(e.value) == (f"{tmp_path / 'nope.csv'}: no such file (check "
                          "--config.data.train_file/eval_file/test_file)")
  odd = tmp_path / "train.xyz"
  odd.write_text("x")
  with pytest.raises(DataError, match=r"cannot tell the format from the extension '.xyz'"):
    fd.read_records(str(odd))
  examples = [{"label": "yes"}, {"label": "maybe"}]
  with pytest.raises(DataError) as e:
    fd.label_ids(examples, ["no", "yes"], "dev.csv")
  assert str(e.value) == ("dev.csv example 1: label 'maybe' is not in the label set [no, yes]; "
                          "fix the data or set --config.data.labels")


def test_conll_and_tagging_jsonl(tmp_path):
  conll = tmp_path / "train.conll"
  conll.write_text("-DOCSTART- -X- O O\n\nthe DT O\ncat NN B-ANIMAL\n\n\nrunning VB O\n")
  assert fd.read_tagging_file(str(conll), "", "tokens", "tags") == [
      {"tokens": ["the", "cat"], "tags": ["O", "B-ANIMAL"]},
      {"tokens": ["running"], "tags": ["O"]}]
  jsonl = tmp_path / "train.jsonl"
  jsonl.write_text(json.dumps({"words": ["a", "b"], "ner": ["O"]}) + "\n")
  with pytest.raises(DataError, match=r"train.jsonl example 0: 2 tokens but 1 tags"):
    fd.read_tagging_file(str(jsonl), "", "words", "ner")


def test_truncate_pair():
  a, b = [1, 2, 3, 4, 5], [6, 7, 8]
  fd.truncate_pair(a, b, 6)
  assert (a, b) == ([1, 2, 3], [6, 7, 8])
  a, b = [1, 2], [3, 4, 5, 6]
  fd.truncate_pair(a, b, 3)
  assert (a, b) == ([1, 2], [3])  # the longer one first; on a tie b (run_classifier.py)
  a = [1, 2, 3]
  fd.truncate_pair(a, None, 2)
  assert a == [1, 2]


def test_featurize_classification(tokenizer):
  ex = [{"text_a": "the cat sat", "text_b": "running dogs", "label": "yes"},
        {"text_a": "a b c d e", "text_b": "the", "label": "no"}]
  f = fd.featurize_classification(ex, tokenizer, 8, [1, 0])
  # 3 + 3 sub-tokens > 8 - 3: the tie pops from b.
  assert tokenizer.convert_ids_to_tokens(f["input_ids"][0]) == [
      "[CLS]", "the", "cat", "sat", "[SEP]", "run", "##ning", "[SEP]"]
  assert f["label"].tolist() == [1, 0] and f["label"].dtype == np.int32
  f = fd.featurize_classification(ex, tokenizer, 10, [1.5, 0.0])
  assert tokenizer.convert_ids_to_tokens(f["input_ids"][0]) == [
      "[CLS]", "the", "cat", "sat", "[SEP]", "run", "##ning", "dogs", "[SEP]", "[PAD]"]
  np.testing.assert_array_equal(f["token_type_ids"][0], [0] * 5 + [1] * 4 + [0])
  np.testing.assert_array_equal(f["attention_mask"][0], [1] * 9 + [0])
  assert tokenizer.convert_ids_to_tokens(f["input_ids"][1]) == [
      "[CLS]", "a", "b", "c", "d", "e", "[SEP]", "the", "[SEP]", "[PAD]"]
  assert f["label"].dtype == np.float32


def test_featurize_tagging_labels_first_subtoken(tokenizer):
  ex = [{"tokens": ["the", "running", "dogs"], "tags": ["O", "B-X", "I-X"]},
        {"tokens": ["a", "running", "b"], "tags": ["O", "B-X", "O"]}]
  tag_ids = fd.label_ids(ex, ["O", "B-X", "I-X"], "x", key="tags")
  f, cut = fd.featurize_tagging(ex, tokenizer, 6, tag_ids)
  # [CLS] the run ##ning dogs [SEP]: "running" labelled on "run" only.
  assert tokenizer.convert_ids_to_tokens(f["input_ids"][0]) == [
      "[CLS]", "the", "run", "##ning", "dogs", "[SEP]"]
  np.testing.assert_array_equal(f["labels"][0], [0, 0, 1, 0, 2, 0])
  np.testing.assert_array_equal(f["label_weights"][0], [0, 1, 1, 0, 1, 0])
  np.testing.assert_array_equal(f["word_index"][0], [-1, 0, 1, -1, 2, -1])
  # Second sentence: a run ##ning b -> 4 sub-tokens + 2 specials = 6, fits exactly.
  assert cut == 0
  f, cut = fd.featurize_tagging(ex, tokenizer, 5, tag_ids)
  assert cut == 2  # "dogs" and "b" do not fit
  assert tokenizer.convert_ids_to_tokens(f["input_ids"][1]) == [
      "[CLS]", "a", "run", "##ning", "[SEP]"]
  predicted = np.array([0, 0, 1, 2, 0])
  assert fd.word_predictions(predicted, f["word_index"][1], 3, ["O", "B-X", "I-X"]) == [
      "O", "B-X", "O"]  # the cut word is predicted O


def test_tfds_dataset_not_prepared(tmp_path):
  with pytest.raises(DataError) as e:
    fd.tfds_examples("glue/sst2", "train", str(tmp_path))
  assert str(e.value) == (f"--config.data.tfds_name=glue/sst2 is not prepared in {tmp_path}: run "
                          "`tfds build glue/sst2 --data_dir=DIR` where there is network, or use "
                          "local files (--config.data.train_file=...)")


class _Names:
  def __init__(self, names):
    self.names = names
    self.feature = self


def test_tfds_rows_become_examples(monkeypatch):
  """The TFDS readers' mapping of GLUE / CoNLL-2003 / SQuAD rows (as tfds.as_numpy gives them)."""
  from bert_jax.finetuning import squad
  rows = {
      "glue/mrpc": ([{"sentence1": b"a b", "sentence2": b"c", "label": 1, "idx": 3},
                     {"sentence1": b"d", "sentence2": b"e", "label": -1, "idx": 4}],
                    {"label": _Names(["not_equivalent", "equivalent"])}),
      "glue/stsb": ([{"sentence1": b"a", "sentence2": b"b", "label": 3.5, "idx": 0}], {}),
      "conll2003": ([{"tokens": [b"EU", b"rejects"], "ner": [3, 0]}],
                    {"ner": _Names(["O", "B-PER", "I-PER", "B-ORG"])}),
      "squad/v2.0": ([{"id": b"q1", "question": b"who?", "context": b"Ann ran.",
                       "answers": {"text": [b"Ann"], "answer_start": [0]}, "is_impossible": False},
                      {"id": b"q2", "question": b"why?", "context": b"Ann ran.",
                       "answers": {"text": [], "answer_start": []}, "is_impossible": True}], {}),
  }
  monkeypatch.setattr(fd, "tfds_examples", lambda name, split, data_dir: rows[name])
  examples, names = fd.read_glue_tfds("glue/mrpc", "train", "")
  assert names == ["not_equivalent", "equivalent"]
  assert examples == [{"text_a": "a b", "text_b": "c", "label": "equivalent", "index": 3},
                      {"text_a": "d", "text_b": "e", "label": None, "index": 4}]
  examples, names = fd.read_glue_tfds("glue/stsb", "train", "")
  assert names is None and examples[0]["label"] == "3.5"
  assert fd.read_conll2003_tfds("train", "") == (
      [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}], ["O", "B-PER", "I-PER", "B-ORG"])
  assert squad.read_squad_tfds("squad/v2.0", "validation", "") == [
      squad.SquadExample("q1", "who?", "Ann ran.", [("Ann", 0)], False),
      squad.SquadExample("q2", "why?", "Ann ran.", [], True)]
  with pytest.raises(DataError, match=r"glue/imdb: not a GLUE task"):
    fd.read_glue_tfds("glue/imdb", "train", "")
