"""Example generation: exact equality with a transcription of google-research/bert's
create_pretraining_data.py (written here, on token strings), layout and statistics."""

import collections
import random

import numpy as np
import pytest

from bert_jax import paths
from bert_jax.data import examples as pdata

# ------------------------------------------------- the reference (latest master), on token strings


def ref_create_training_instances(all_documents, vocab_words, rng, max_seq_length, dupe_factor,
                                  short_seq_prob, masked_lm_prob, max_predictions_per_seq,
                                  do_whole_word_mask, do_mask=True, random_next_sentence=True):
  rng.shuffle(all_documents)
  instances = []
  for _ in range(dupe_factor):
    for document_index in range(len(all_documents)):
      instances.extend(ref_instances_from_document(
          all_documents, document_index, max_seq_length, short_seq_prob, masked_lm_prob,
          max_predictions_per_seq, vocab_words, rng, do_whole_word_mask, do_mask,
          random_next_sentence))
  rng.shuffle(instances)
  return instances


def ref_instances_from_document(all_documents, document_index, max_seq_length, short_seq_prob,
                                masked_lm_prob, max_predictions_per_seq, vocab_words, rng,
                                do_whole_word_mask, do_mask, random_next_sentence):
  # random_next_sentence=False: google-research/albert's sentence-order prediction (its flag).
  document = all_documents[document_index]
  max_num_tokens = max_seq_length - 3
  target_seq_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)
  instances = []
  current_chunk = []
  current_length = 0
  i = 0
  while i < len(document):
    segment = document[i]
    current_chunk.append(segment)
    current_length += len(segment)
    if i == len(document) - 1 or current_length >= target_seq_length:
      if current_chunk:
        a_end = 1
        if len(current_chunk) >= 2:
          a_end = rng.randint(1, len(current_chunk) - 1)
        tokens_a = []
        for j in range(a_end):
          tokens_a.extend(current_chunk[j])
        tokens_b = []
        if len(current_chunk) == 1 or (random_next_sentence and rng.random() < 0.5):
          is_random_next = True
          target_b_length = target_seq_length - len(tokens_a)
          for _ in range(10):
            random_document_index = rng.randint(0, len(all_documents) - 1)
            if random_document_index != document_index:
              break
          random_document = all_documents[random_document_index]
          random_start = rng.randint(0, len(random_document) - 1)
          for j in range(random_start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
              break
          num_unused_segments = len(current_chunk) - a_end
          i -= num_unused_segments
        elif not random_next_sentence and rng.random() < 0.5:
          is_random_next = True
          for j in range(a_end, len(current_chunk)):
            tokens_b.extend(current_chunk[j])
          tokens_a, tokens_b = tokens_b, tokens_a
        else:
          is_random_next = False
          for j in range(a_end, len(current_chunk)):
            tokens_b.extend(current_chunk[j])
        while True:  # truncate_seq_pair
          if len(tokens_a) + len(tokens_b) <= max_num_tokens:
            break
          trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
          if rng.random() < 0.5:
            del trunc_tokens[0]
          else:
            trunc_tokens.pop()
        tokens = ["[CLS]"] + tokens_a + ["[SEP]"] + tokens_b + ["[SEP]"]
        segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
        positions, labels = [], []
        if do_mask:
          tokens, positions, labels = ref_masked_lm(tokens, masked_lm_prob,
                                                    max_predictions_per_seq, vocab_words, rng,
                                                    do_whole_word_mask)
        instances.append((tokens, segment_ids, is_random_next, positions, labels))
      current_chunk = []
      current_length = 0
    i += 1
  return instances


def ref_masked_lm(tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng,
                  do_whole_word_mask):
  cand_indexes = []
  for (i, token) in enumerate(tokens):
    if token == "[CLS]" or token == "[SEP]":
      continue
    if do_whole_word_mask and len(cand_indexes) >= 1 and token.startswith("##"):
      cand_indexes[-1].append(i)
    else:
      cand_indexes.append([i])
  rng.shuffle(cand_indexes)
  output_tokens = list(tokens)
  num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
  masked_lms = []
  covered_indexes = set()
  for index_set in cand_indexes:
    if len(masked_lms) >= num_to_predict:
      break
    if len(masked_lms) + len(index_set) > num_to_predict:
      continue
    if any(index in covered_indexes for index in index_set):
      continue
    for index in index_set:
      covered_indexes.add(index)
      if rng.random() < 0.8:
        masked_token = "[MASK]"
      else:
        if rng.random() < 0.5:
          masked_token = tokens[index]
        else:
          masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
      output_tokens[index] = masked_token
      masked_lms.append((index, tokens[index]))
  masked_lms = sorted(masked_lms, key=lambda x: x[0])
  return output_tokens, [p for p, _ in masked_lms], [t for _, t in masked_lms]


# ------------------------------------------------- fixtures


def _copy(documents):
  return [[list(s) for s in d] for d in documents]


def _make(documents, tokenizer, seed=7, **kw):
  options = pdata.InstanceOptions(**kw)
  return pdata.create_instances(_copy(documents), random.Random(seed), options,
                                pdata.SpecialIds.of(tokenizer))


# ------------------------------------------------- tests


@pytest.mark.parametrize("masking,wwm,objective", [
    ("static", False, "nsp"), ("static", True, "nsp"), ("dynamic", False, "nsp"),
    ("static", False, "sop"), ("static", True, "sop")])
def test_identical_to_reference(documents, tokenizer, masking, wwm, objective):
  vocab = tokenizer.tokens
  kw = dict(max_seq_length=64, short_seq_prob=0.2, masked_lm_prob=0.15,
            max_predictions_per_seq=10)
  ours = _make(documents, tokenizer, seed=3, masking=masking,
               masking_strategy="whole_word" if wwm else "token", objective=objective,
               dupe_factor=2, **kw)
  str_docs = [[[vocab[t] for t in s] for s in d] for d in documents]
  ref = ref_create_training_instances(
      str_docs, vocab, random.Random(3), kw["max_seq_length"], 2 if masking == "static" else 1,
      kw["short_seq_prob"], kw["masked_lm_prob"], kw["max_predictions_per_seq"], wwm,
      do_mask=masking == "static", random_next_sentence=objective == "nsp")
  assert len(ours) == len(ref) > 500
  for mine, (tokens, segment_ids, is_random_next, positions, labels) in zip(ours, ref):
    assert [vocab[t] for t in mine["input_ids"]] == tokens
    assert mine["token_type_ids"].tolist() == segment_ids
    assert mine["next_sentence_label"] == int(is_random_next)
    if masking == "static":
      assert mine["masked_positions"].tolist() == positions
      assert [vocab[t] for t in mine["masked_ids"]] == labels
    else:
      assert "masked_positions" not in mine


def test_layout_and_lengths(documents, tokenizer):
  instances = _make(documents, tokenizer, max_seq_length=128)
  for inst in instances:
    ids, types = inst["input_ids"], inst["token_type_ids"]
    assert len(ids) <= 128 and ids.dtype == np.int32 and len(types) == len(ids)
    seps = np.flatnonzero(ids == tokenizer.sep_id)
    assert ids[0] == tokenizer.cls_id and len(seps) == 2 and seps[1] == len(ids) - 1
    assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # A and B non-empty
    assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:] == 1).all()
    assert tokenizer.mask_id not in ids
  lengths = np.array([len(i["input_ids"]) for i in instances])
  # Many examples are filled up. How many depends on the trained vocabulary (tokenizers' WordPiece
  # breaks ties by hash order): 0.44-0.79 over 16 vocabularies of this sample; the exact draws
  # are checked against the reference in test_identical_to_reference.
  assert (lengths == 128).mean() > 0.4


def test_next_sentence_ratio(documents, tokenizer):
  labels = [i["next_sentence_label"] for seed in range(5) for i in _make(documents, tokenizer, seed)]
  assert len(labels) > 3000
  # 0.5, plus a little for the single-sentence chunks (always NotNext).
  assert 0.48 < np.mean(labels) < 0.62, np.mean(labels)


def test_short_seq_prob(documents, tokenizer):
  never = _make(documents, tokenizer, short_seq_prob=0.0)
  always = _make(documents, tokenizer, short_seq_prob=1.0)
  mean = lambda xs: np.mean([len(i["input_ids"]) for i in xs])  # noqa: E731
  assert mean(never) > 110 and mean(always) < 0.8 * mean(never)


def test_static_masking_statistics(documents, tokenizer):
  unmasked = _make(documents, tokenizer, seed=5, masking="dynamic")
  instances = _make(documents, tokenizer, seed=5, masking="static", dupe_factor=3)
  kinds = collections.Counter()
  for inst in instances:
    ids, pos, orig = inst["input_ids"], inst["masked_positions"], inst["masked_ids"]
    expected = min(20, max(1, round(len(ids) * 0.15)))
    assert len(pos) == expected == len(orig)
    assert (np.diff(pos) > 0).all()
    assert not np.isin(orig, [tokenizer.cls_id, tokenizer.sep_id]).any()
    kinds["mask"] += int((ids[pos] == tokenizer.mask_id).sum())
    kinds["same"] += int((ids[pos] == orig).sum())
    kinds["random"] += int(((ids[pos] != orig) & (ids[pos] != tokenizer.mask_id)).sum())
  total = sum(kinds.values())
  assert total > 20_000
  assert abs(kinds["mask"] / total - 0.8) < 0.015
  assert abs(kinds["same"] / total - 0.1) < 0.012
  assert abs(kinds["random"] / total - 0.1) < 0.012
  assert len(instances) > 2.5 * len(unmasked)  # dupe_factor copies


def test_whole_word_grouping(documents, tokenizer):
  instances = _make(documents, tokenizer, seed=9, masking="static", masking_strategy="whole_word")
  starts = tokenizer.is_word_start
  checked = 0
  for inst in instances:
    ids = inst["input_ids"].copy()
    ids[inst["masked_positions"]] = inst["masked_ids"]  # undo the masking
    masked = np.zeros(len(ids), bool)
    masked[inst["masked_positions"]] = True
    # Every word (a start piece and its ## continuations; [CLS]/[SEP] are not part of words, so
    # a B that starts with a continuation joins A's last word, as in the reference) is masked
    # entirely or not at all.
    cand = ~np.isin(ids, [tokenizer.cls_id, tokenizer.sep_id])
    word = np.full(len(ids), -1)
    word[cand] = np.cumsum(starts[ids[cand]])
    assert not masked[~cand].any()
    for w in np.unique(word[masked]):
      assert masked[word == w].all()
      checked += (word == w).sum() > 1
  assert checked > 100  # multi-piece words were masked


def test_shards_and_invalid_utf8(tmp_path):
  text = b"First doc one.\nFirst doc two.\n\nSecond \xff\xfe doc.\nMore.\n\n\nThird.\nx\n\n"
  path = tmp_path / "c.txt"
  path.write_bytes(text * 50)
  files = paths.expand_inputs(str(path))
  for shard_bytes in (30, 200, 1 << 20):
    shards = pdata.plan_text_shards(files, shard_bytes)
    docs, invalid = [], 0
    for s in shards:
      d, n = pdata.read_text_documents(s)
      docs += d
      invalid += n
    assert len(docs) == 150 and invalid == 100
    assert docs.count(["Second \ufffd\ufffd doc.", "More."]) == 50


def test_split_sentences():
  text = ("Dr. Smith went to Washington. He arrived at 5 p.m. on Monday! Did he? "
          "Yes.\nNew paragraph e.g. this one. The U.S. Army.")
  assert pdata.split_sentences(text) == [
      "Dr. Smith went to Washington.", "He arrived at 5 p.m. on Monday!", "Did he?", "Yes.",
      "New paragraph e.g. this one.", "The U.S. Army."]


def test_validation_holdout():
  docs = [[f"d{i}"] for i in range(100)]
  train, validation = pdata.split_documents(docs, 0.05, seed=1, shard_index=0)
  assert len(validation) == 5 and len(train) == 95
  assert sorted(train + validation) == sorted(docs)
  assert pdata.split_documents(docs, 0.05, seed=1, shard_index=0) == (train, validation)
  assert len(pdata.split_documents(docs[:3], 0.01, 1, 0)[1]) == 1  # at least one
