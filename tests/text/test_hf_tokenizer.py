"""Tokenizer.from_file on a HF tokenizer.json (kind "hf"), train_vocab(kind="bpe"), and prepare
with --vocab=tokenizer.json: ids as tokenizers / transformers give them, specials by name, word
starts from the JSON, one-line errors."""

import glob
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.data import SAMPLE_CORPUS
from bert_jax.text.tokenization import SPECIAL_TOKENS, Tokenizer, VocabError
from bert_jax.text.vocab import train_vocab

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
SAMPLE_BPE = str(FIXTURES / "sample_bpe" / "tokenizer.json")
SAMPLE_VOCAB = str(FIXTURES / "sample_vocab" / "vocab.txt")
TEXTS = ["Hello, world! The function returns a value.", "", "Paris is [MASK].",
         "Unicode ünïcödé — “quoted” 中文 😀", "version 3.11: x+=1;  two  spaces"]


def _sample_lines(step=5):
  with open(SAMPLE_CORPUS, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()][::step]


def _bpe(tmp_path, specials, added=(), name="tokenizer.json"):
  """A small byte-level BPE of the sample (ModernBERT's pipeline), `specials` at the first ids and
  `added` appended as special added tokens (ModernBERT puts [UNK]..[MASK] at the end)."""
  from tokenizers import AddedToken, Tokenizer as HF, decoders, models, normalizers
  from tokenizers import pre_tokenizers, trainers
  hf = HF(models.BPE())
  hf.normalizer = normalizers.NFC()
  hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  hf.decoder = decoders.ByteLevel()
  hf.train([SAMPLE_CORPUS], trainers.BpeTrainer(
      vocab_size=800, special_tokens=list(specials), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  hf.add_special_tokens([AddedToken(t, special=True, lstrip="mask" in t.lower()) for t in added])
  path = tmp_path / name
  hf.save(str(path))
  return str(path), hf


# ----------------------------------------------------------------- encoding


def test_ids_and_offsets_equal_tokenizers_and_transformers():
  from tokenizers import Tokenizer as HF
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  tok = Tokenizer.from_file(SAMPLE_BPE)
  assert tok.kind == "hf" and tok.path == SAMPLE_BPE and not tok.lower_case
  assert tok.vocab_size == 2000 == len(tok.tokens) == len(tok.is_word_start)
  hf = HF.from_file(SAMPLE_BPE)
  fast = PreTrainedTokenizerFast(tokenizer_file=SAMPLE_BPE)
  texts = _sample_lines() + TEXTS
  got = tok.encode_batch(texts)
  assert sum(map(len, got)) > 10_000
  for text, ids in zip(texts, got):
    assert ids == hf.encode(text, add_special_tokens=False).ids, text
    assert ids == fast.encode(text, add_special_tokens=False), text
  # What the pipeline builds ([CLS] A [SEP] B [SEP], B's types 1) is what AutoTokenizer gives on
  # the exported directory (tokenizer_config.json beside tokenizer.json), offline.
  auto = AutoTokenizer.from_pretrained(os.path.dirname(SAMPLE_BPE))
  assert (auto.cls_token_id, auto.sep_token_id, auto.mask_token_id, auto.pad_token_id,
          auto.unk_token_id) == (2, 3, 4, 0, 1)
  nonempty = [t for t in texts if t]  # transformers reads an empty text_pair as no pair
  for a, b in zip(nonempty[:-1], nonempty[1:]):
    ids_a, ids_b = tok.encode(a), tok.encode(b)
    enc = auto(a, b)
    assert enc["input_ids"] == [2, *ids_a, 3, *ids_b, 3]
    assert enc["token_type_ids"] == [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
    assert auto(a)["input_ids"] == [tok.cls_id, *ids_a, tok.sep_id]
  # Offsets: characters of the original text, the same ids.
  out = tok.encode_with_offsets(texts)
  assert [ids for ids, _ in out] == got
  for text, (ids, spans) in zip(texts, out):
    assert spans == [tuple(o) for o in hf.encode(text, add_special_tokens=False).offsets]
    assert all(0 <= a <= b <= len(text) for a, b in spans)
  # A "Ġx" token's span takes its space (HF's TemplateProcessing, unlike RobertaProcessing,
  # does not trim offsets; ModernBERT's the same).
  (ids, spans), = tok.encode_with_offsets(["The function returns."])
  assert [("The function returns."[a:b]) for a, b in spans] == [
      t.replace("\u0120", " ") for t in tok.convert_ids_to_tokens(ids)]
  assert tok.encode_batch([]) == [] and tok.encode("") == []


def test_padding_and_truncation_in_the_file_are_ignored(tmp_path):
  spec = json.loads(pathlib.Path(SAMPLE_BPE).read_text())
  spec["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst",
                        "stride": 0}
  spec["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None,
                     "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps(spec))
  text = "The function returns a value of the type given."
  assert Tokenizer.from_file(str(path)).encode(text) == Tokenizer.from_file(SAMPLE_BPE).encode(text)
  assert len(Tokenizer.from_file(str(path)).encode(text)) > 4


# ----------------------------------------------------------------- special tokens


def test_bert_named_specials_at_the_end_as_modernbert(tmp_path):
  # ModernBERT: OLMo's BPE (<|endoftext|>, <|padding|> among the first ids), then [UNK] [CLS]
  # [SEP] [PAD] [MASK] appended as added tokens (50280-50284 there).
  path, hf = _bpe(tmp_path, ["<|endoftext|>", "<|padding|>"],
                  added=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
  tok = Tokenizer.from_file(path)
  n = hf.get_vocab_size(with_added_tokens=False)
  assert tok.vocab_size == hf.get_vocab_size(with_added_tokens=True) == n + 5
  assert (tok.unk_id, tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id) == tuple(range(n, n + 5))
  assert tok.special_ids() == {"[PAD]": n + 3, "[UNK]": n, "[CLS]": n + 1, "[SEP]": n + 2,
                               "[MASK]": n + 4}
  assert tok.is_word_start[[0, 1, *range(n, n + 5)]].all()  # special added tokens start words
  assert tok.encode("Paris is [MASK].") == hf.encode("Paris is [MASK].",
                                                     add_special_tokens=False).ids


def test_roberta_named_specials(tmp_path):
  # RoBERTa: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last.
  path, hf = _bpe(tmp_path, ["<s>", "<pad>", "</s>", "<unk>"], added=["<mask>"])
  tok = Tokenizer.from_file(path)
  assert tok.special_ids() == {"[PAD]": 1, "[UNK]": 3, "[CLS]": 0, "[SEP]": 2,
                               "[MASK]": hf.get_vocab_size(with_added_tokens=True) - 1}
  # Each role on its own, BERT's name first: a [MASK] wins over <mask>.
  path, _ = _bpe(tmp_path, ["<s>", "<pad>", "</s>", "<unk>", "[MASK]"], added=["<mask>"],
                 name="mixed.json")
  assert Tokenizer.from_file(path).mask_id == 4
  # No unk token at all: GPT-2's <|endoftext|> stands in (a byte-level BPE never needs it).
  path, _ = _bpe(tmp_path, ["<|endoftext|>", "[CLS]", "[SEP]", "[PAD]", "[MASK]"],
                 name="no_unk.json")
  assert Tokenizer.from_file(path).unk_id == 0


def test_missing_mask_is_one_line(tmp_path):
  path, _ = _bpe(tmp_path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
  with pytest.raises(VocabError) as e:
    Tokenizer.from_file(path)
  assert str(e.value) == (
      f"vocab file {path} lacks the special token(s) [MASK] (or <mask>): add them (tokenizers' "
      f"add_special_tokens, then save) or train a tokenizer that has them with python -m "
      f"bert_jax.vocab --kind=bpe")
  path, _ = _bpe(tmp_path, ["[PAD]"], name="only_pad.json")
  with pytest.raises(VocabError, match=r"lacks the special token\(s\) \[UNK\] \(or <unk>\), "
                                       r"\[CLS\] \(or <s>\), \[SEP\] \(or </s>\), \[MASK\]"):
    Tokenizer.from_file(path)


def test_not_a_tokenizer_json(tmp_path):
  bad = tmp_path / "tokenizer.json"
  bad.write_text('{"model": "nope"}')
  with pytest.raises(VocabError) as e:
    Tokenizer.from_file(str(bad))
  message = str(e.value)
  assert message.startswith(f"vocab file {bad} is not a HF tokenizer.json (")
  assert message.endswith("): pass one saved by tokenizers / transformers, or write one with "
                          "python -m bert_jax.vocab --kind=bpe")
  assert "\n" not in message
  with pytest.raises(VocabError, match="does not exist: pass a vocab.txt, a SentencePiece "
                                       ".model or a tokenizer.json"):
    Tokenizer.from_file(str(tmp_path / "missing.json"))


# ----------------------------------------------------------------- word starts


def test_word_starts_of_a_byte_level_bpe():
  tok = Tokenizer.from_file(SAMPLE_BPE)
  tokens = tok.tokens
  starts = dict(zip(tokens, tok.is_word_start))
  assert all(starts[t] for t in SPECIAL_TOKENS)
  assert starts["\u0120function"] and starts["\u0120"] and starts["."] and starts[","]
  assert not starts["ed"] and not starts["A"] and not starts["0"]
  # Rule: "Ġ" first, or punctuation only (as text: byte-level tokens decoded), or special.
  punct = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
  expected = np.array([t.startswith("\u0120") or (bool(t) and set(t) <= punct) for t in tokens])
  expected[:5] = True
  np.testing.assert_array_equal(tok.is_word_start, expected)
  assert 300 < (~expected).sum() < 1700
  # In a sentence: ["The", "Ġfunction", ...]; the pieces of a word after its "Ġ" continue it.
  ids = tok.encode("The function returns.")
  pieces = tok.convert_ids_to_tokens(ids)
  assert [t for t, s in zip(pieces, tok.is_word_start[ids]) if s] == [
      t for t in pieces if t.startswith("\u0120") or t == "."]


def test_word_starts_of_a_wordpiece_tokenizer_json(tmp_path):
  """The sample WordPiece vocab as a tokenizer.json (BertTokenizerFast's): the same ids, word
  starts, specials and lower-casing as our vocab.txt tokenizer on the same vocabulary."""
  from transformers import BertTokenizerFast
  BertTokenizerFast(vocab=SAMPLE_VOCAB, do_lower_case=True).save_pretrained(str(tmp_path))
  path = str(tmp_path / "tokenizer.json")
  hf, ours = Tokenizer.from_file(path), Tokenizer.from_file(SAMPLE_VOCAB)
  assert hf.kind == "hf" and ours.kind == "wordpiece"
  assert hf.lower_case and ours.lower_case  # BertNormalizer(lowercase=True)
  assert hf.tokens == ours.tokens and hf.special_ids() == ours.special_ids()
  np.testing.assert_array_equal(hf.is_word_start, ours.is_word_start)
  assert (~hf.is_word_start).sum() > 100
  texts = _sample_lines(step=3) + [t for t in TEXTS if "[MASK]" not in t]
  assert hf.encode_batch(texts) == ours.encode_batch(texts)
  # A special token written in the text is that token for HF (as transformers), not for vocab.txt.
  assert hf.encode("is [MASK].") == [*hf.encode("is"), hf.mask_id, *hf.encode(".")]
  assert hf.mask_id not in ours.encode("is [MASK].")


def test_word_starts_of_a_metaspace_unigram(tmp_path):
  from tokenizers import Tokenizer as HF, decoders, models, pre_tokenizers, trainers
  hf = HF(models.Unigram())
  hf.pre_tokenizer = pre_tokenizers.Metaspace()
  hf.decoder = decoders.Metaspace()
  hf.train([SAMPLE_CORPUS], trainers.UnigramTrainer(
      vocab_size=600, special_tokens=list(SPECIAL_TOKENS), unk_token="[UNK]", show_progress=False))
  path = str(tmp_path / "unigram.json")
  hf.save(path)
  tok = Tokenizer.from_file(path)
  punct = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
  expected = np.array([t.startswith("\u2581") or set(t) <= punct for t in tok.tokens])
  expected[:5] = True
  np.testing.assert_array_equal(tok.is_word_start, expected)
  assert 0 < (~expected).sum() < len(expected)


def test_lower_case_follows_the_normalizer(tmp_path):
  path = train_vocab(SAMPLE_CORPUS, str(tmp_path), vocab_size=600, kind="bpe", lower_case=True)
  tok = Tokenizer.from_file(path)
  assert tok.lower_case and tok.encode("The MODULE") == tok.encode("the module")
  with pytest.raises(VocabError, match="its normalizer lower-cases text, so lower_case=False "
                                       "cannot be honoured; leave lower_case unset"):
    Tokenizer.from_file(path, lower_case=False)
  cased = Tokenizer.from_file(SAMPLE_BPE, lower_case=True)  # we lower-case first
  assert cased.lower_case and cased.encode("The MODULE") == cased.encode("the module")
  assert Tokenizer.from_file(SAMPLE_BPE).encode("The") != cased.encode("The")


# ----------------------------------------------------------------- train_vocab(kind="bpe")


def test_train_bpe_round_trip(tmp_path):
  from tokenizers import Tokenizer as HF
  from transformers import AutoTokenizer
  out = tmp_path / "bpe"
  path = train_vocab(SAMPLE_CORPUS, str(out), vocab_size=1200, kind="bpe")
  assert path == str(out / "tokenizer.json")
  assert sorted(os.listdir(out)) == ["tokenizer.json", "tokenizer_config.json"]  # no vocab.txt
  spec = json.loads((out / "tokenizer.json").read_text())
  assert spec["pre_tokenizer"]["type"] == "ByteLevel"
  assert spec["pre_tokenizer"]["add_prefix_space"] is False
  assert spec["decoder"]["type"] == "ByteLevel" and spec["model"]["type"] == "BPE"
  assert spec["post_processor"]["type"] == "TemplateProcessing"
  assert [t["content"] for t in spec["added_tokens"]] == list(SPECIAL_TOKENS)
  tok = Tokenizer.from_file(path)
  assert tok.vocab_size == 1200 and tok.tokens[:5] == list(SPECIAL_TOKENS)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  hf = HF.from_file(path)
  text = "The module defines a function."
  assert hf.encode(text).ids == [2, *tok.encode(text), 3]  # the post-processor
  assert hf.decode(tok.encode(text)) == text
  auto = AutoTokenizer.from_pretrained(str(out))
  assert auto(text)["input_ids"] == [2, *tok.encode(text), 3]
  assert auto.decode(auto(text)["input_ids"], skip_special_tokens=True) == text
  # An existing tokenizer.json is kept unless overwrite; too small a vocabulary is refused.
  from bert_jax.errors import DataError
  with pytest.raises(DataError, match="tokenizer.json already exists; pass --overwrite"):
    train_vocab(SAMPLE_CORPUS, str(out), vocab_size=1200, kind="bpe")
  with pytest.raises(DataError) as e:
    train_vocab(SAMPLE_CORPUS, str(tmp_path / "small"), vocab_size=200, kind="bpe")
  assert str(e.value) == ("--vocab_size=200: a byte-level BPE needs more than 261 (the special "
                          "tokens and 256 bytes)")
  assert not os.path.exists(tmp_path / "small")


def test_bpe_cli(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  r = subprocess.run([sys.executable, "-m", "bert_jax.vocab", f"--input={SAMPLE_CORPUS}",
                      f"--output_dir={tmp_path}", "--vocab_size=700", "--kind=bpe"],
                     capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == str(tmp_path / "tokenizer.json")
  assert Tokenizer.from_file(r.stdout.strip()).vocab_size == 700


# ----------------------------------------------------------------- prepare


def test_prepare_with_a_tokenizer_json(tmp_path):
  """python -m bert_jax.prepare --vocab=DIR/tokenizer.json: the dataset carries the file and
  reads back through the input pipeline's tokenizer with the same ids."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from bert_jax.data.input_pipeline import dataset_info
  data_dir = tmp_path / "data"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  r = subprocess.run([sys.executable, "-m", "bert_jax.prepare", f"--input={SAMPLE_CORPUS}",
                      f"--vocab={SAMPLE_BPE}", f"--data_dir={data_dir}", "--max_seq_length=64",
                      "--max_predictions_per_seq=10", "--num_workers=1",
                      "--masking_strategy=whole_word"],
                     capture_output=True, text=True, env=env, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  out = r.stdout.strip().splitlines()[-1]
  info = dataset_info(str(data_dir))
  assert info["path"] == out and info["vocab_file"] == "tokenizer.json"
  assert info["tokenizer_kind"] == "hf" and info["vocab_size"] == 2000
  assert not info["lower_case"]
  assert info["special_ids"] == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
  assert pathlib.Path(info["vocab_path"]).read_bytes() == pathlib.Path(SAMPLE_BPE).read_bytes()
  tok = Tokenizer.from_file(info["vocab_path"], lower_case=info["lower_case"])
  assert tok.kind == "hf" and tok.tokens == Tokenizer.from_file(SAMPLE_BPE).tokens
  builder = tfds.builder_from_directory(out)
  assert builder.info.splits["train"].num_examples > 300
  files = sorted(glob.glob(os.path.join(out, "bert_pretraining-train.tfrecord-*")))
  rows = 0
  for record in tf.data.TFRecordDataset(files).take(50):
    ex = tf.train.Example.FromString(record.numpy()).features.feature
    ids = list(ex["input_ids"].int64_list.value)
    starts = list(ex["word_starts"].int64_list.value)
    assert ids[0] == 2 and ids[-1] == 3 and len(ids) <= 64 and max(ids) < 2000
    assert starts == [int(s) for s in tok.is_word_start[ids]]
    rows += 1
  assert rows == 50
  # The input pipeline: whole-word dynamic masking over the dataset's word starts.
  from bert_jax.data.input_pipeline import train_iterator
  batch = next(train_iterator(str(data_dir), batch_size=8, seq_len=64, max_predictions_per_seq=10,
                              seed=0, shuffle_buffer=100))
  ids, weights = np.asarray(batch["input_ids"]), np.asarray(batch["masked_weights"])
  assert ids.shape == (8, 64) and (ids[:, 0] == 2).all() and weights.sum() >= 8
  masked = np.asarray(batch["masked_ids"])[weights > 0]
  assert not np.isin(masked, [0, 2, 3]).any() and (masked < 2000).all()
