"""Objectives and masking strategies through prepare and the input pipeline: the dataset records
them, dynamic span/n-gram masking is exact and reproducible, Chinese whole words stay whole."""

import json
import os
import pathlib

import numpy as np
import pytest

import helpers
from bert_jax.data import SAMPLE_CORPUS
from bert_jax.data import input_pipeline as ip
from bert_jax.data.prepare import prepare
from bert_jax.text.tokenization import Tokenizer
from bert_jax.text.vocab import train_vocab

L, P = 128, 40
ZH = str(pathlib.Path(__file__).parents[1] / "fixtures" / "manpages-zh-slice.txt")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  return helpers.sample_vocab()


def _prepare(tmp_path, vocab, corpus=SAMPLE_CORPUS, **kw):
  out = prepare(input=corpus, vocab=vocab, data_dir=str(tmp_path), max_seq_length=L,
                max_predictions_per_seq=P, **kw)
  return json.loads((pathlib.Path(out) / "metadata.json").read_text())


def test_the_dataset_records_objective_and_strategy(vocab, tmp_path):
  meta = _prepare(tmp_path, vocab, objective="sop", masking_strategy="span", masked_lm_prob=0.3)
  assert (meta["objective"], meta["masking_strategy"], meta["masked_lm_prob"]) == ("sop", "span", 0.3)
  info = ip.dataset_info(str(tmp_path))
  assert info["objective"] == "sop" and ip.dataset_masking_strategy(info) == "span"
  # Validation holds out about 5% of the tokens (not of the documents).
  counts = meta["counts"]
  share = counts["validation"]["tokens"] / (counts["train"]["tokens"] + counts["validation"]["tokens"])
  assert abs(share - 0.05) < 0.01, share


@pytest.mark.parametrize("strategy", ["span", "ngram", "whole_word", "token"])
def test_dynamic_masking_rate_and_reproducibility(vocab, tmp_path, strategy):
  _prepare(tmp_path, vocab, masking_strategy=strategy, masked_lm_prob=0.3)
  args = dict(batch_size=16, seq_len=L, max_predictions_per_seq=P, seed=3, masked_lm_prob=0.3)
  it = ip.train_iterator(str(tmp_path), **args)
  masked = tokens = 0
  batches = [next(it) for _ in range(20)]
  for b in batches:
    w = b["masked_weights"] > 0
    masked += w.sum()
    tokens += b["attention_mask"].sum()
    special = ip.dataset_info(str(tmp_path))["special_ids"]
    assert not np.isin(b["masked_ids"][w], [special["[CLS]"], special["[SEP]"]]).any()
    for row_pos, row_w in zip(b["masked_positions"], w):
      assert len(set(row_pos[row_w].tolist())) == row_w.sum()  # no position twice
  assert abs(masked / tokens - 0.3) < 0.005, masked / tokens
  again = ip.train_iterator(str(tmp_path), **args)
  for b in batches[:3]:
    a = next(again)
    assert all(np.array_equal(a[k], b[k]) for k in b)


def _jieba_words_partly_masked(data_dir):
  """(multi-character jieba words partly masked, multi-character words touched by a mask)."""
  import tensorflow_datasets as tfds
  info = ip.dataset_info(data_dir)
  partly = touched = 0
  ds = tfds.builder_from_directory(info["path"]).as_dataset(split="train")
  for ex in tfds.as_numpy(ds):
    ids = ex["input_ids"].copy()
    ids[ex["masked_positions"]] = ex["masked_ids"]
    masked = np.zeros(len(ids), bool)
    masked[ex["masked_positions"]] = True
    starts = ex["word_starts"].astype(bool)  # jieba's words (test_chinese_word_starts_follow_jieba)
    # Words over the candidates ([CLS]/[SEP] are not part of words: a B that starts inside a
    # word, after truncation, continues A's last one, as in the reference's whole-word masking).
    special = info["special_ids"]
    cand = ~np.isin(ids, [special["[CLS]"], special["[SEP]"]])
    starts = starts & cand
    starts[np.flatnonzero(cand)[0]] = True
    word = np.where(cand, np.cumsum(starts), 0)
    for w in np.unique(word[cand]):
      members = word == w
      if members.sum() < 2:
        continue
      if masked[members].any():
        touched += 1
        partly += not masked[members].all()
  return partly, touched


def test_chinese_whole_words_stay_whole(tmp_path):
  zh_vocab = train_vocab(ZH, str(tmp_path / "vocab"), vocab_size=3000, lower_case=True)
  whole = tmp_path / "whole"
  _prepare(whole, zh_vocab, corpus=ZH, masking="static", dupe_factor=3,
           masking_strategy="whole_word", segmenter="jieba", validation_fraction=0)
  token = tmp_path / "token"
  _prepare(token, zh_vocab, corpus=ZH, masking="static", dupe_factor=3,
           masking_strategy="token", segmenter="jieba", validation_fraction=0)
  partly, touched = _jieba_words_partly_masked(str(whole))
  assert touched > 1500 and partly == 0, (partly, touched)
  partly, touched = _jieba_words_partly_masked(str(token))
  assert partly > 0.5 * touched, (partly, touched)  # token masking splits most of them


def test_chinese_word_starts_follow_jieba(tmp_path):
  from bert_jax.data import examples as pdata
  from bert_jax.text.segmentation import get_segmenter, word_start_flags
  zh_vocab = train_vocab(ZH, str(tmp_path / "vocab"), vocab_size=3000, lower_case=True)
  tok = Tokenizer.from_file(zh_vocab)
  jieba = get_segmenter("jieba")
  raw, _ = pdata.read_text_documents(pdata.plan_text_shards([ZH])[0])
  docs = pdata.tokenize_documents(tok, raw[:5], jieba)
  continued = 0
  for doc_text, doc in zip(raw[:5], docs):
    for text, sentence in zip(doc_text, doc):
      ids = [t & (pdata.CONTINUES_WORD - 1) for t in sentence]
      flags = word_start_flags(tok.convert_ids_to_tokens(ids), text, jieba)
      got = [bool(tok.is_word_start[i]) and not t & pdata.CONTINUES_WORD
             for i, t in zip(ids, sentence)]
      assert got == flags
      continued += flags.count(False)
  assert continued > 100


def test_masked_lm_dataset_end_to_end_rows(vocab, tmp_path):
  meta = _prepare(tmp_path, vocab, objective="none")
  assert meta["objective"] == "none" and meta["cross_documents"] is True
  it = ip.train_iterator(str(tmp_path), batch_size=32, seq_len=L, max_predictions_per_seq=P,
                         seed=0)
  b = next(it)
  # Full sentences up to the limit: at 128 about half a sentence is left free per row (at 512,
  # RoBERTa's length, rows are 96% full: test_objectives.py).
  assert b["attention_mask"].sum(1).mean() > 0.8 * L
  assert not b["token_type_ids"].any() and not b["next_sentence_label"].any()
  assert os.path.exists(ip.dataset_info(str(tmp_path))["vocab_path"])
