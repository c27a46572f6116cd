"""tf.data input pipeline over the `bert_pretraining` TFDS dataset: numpy batches for the trainer.

  info = dataset_info(data_dir)                      # sizes, vocab, masking, counts
  it = train_iterator(data_dir, batch_size=32, seq_len=128, max_predictions_per_seq=20, seed=0,
                      process_index=jax.process_index(), process_count=jax.process_count())
  batch = next(it)                                   # dict of numpy arrays, this process's part
  it.save(ckpt_dir); it.restore(ckpt_dir)            # exact resume
  for batch in eval_batches(data_dir, batch_size=32, seq_len=128, max_predictions_per_seq=20): ...

Batch (per process, B = batch_size, L = seq_len, P = max_predictions_per_seq):
  input_ids int32 [B, L] (masked), token_type_ids int32 [B, L], attention_mask int32 [B, L],
  masked_positions int32 [B, P] (sorted, 0 in padded slots), masked_ids int32 [B, P],
  masked_weights float32 [B, P] (0 in padded slots), next_sentence_label int32 [B]
  (0 = IsNext, 1 = NotNext); eval batches add example_weight float32 [B] (0 for padding rows).

Packed (`pack=True`, for data with short sequences, e.g. phase 2 at 512): each row holds up to
S = max_sequences_per_row whole sequences, chosen first-fit decreasing (by length) from a group
of `pack_group` masked examples under three budgets (L tokens, S sequences, P predictions),
so no example is dropped or cut. Rows add segment_ids int32 [B, L] (1..S, 0 = padding),
position_ids int32 [B, L] (restarting at 0 per sequence), cls_positions int32 [B, S], and
next_sentence_label int32 [B, S] with nsp_weights float32 [B, S]; masked_positions index the row.

How: the split's TFRecord files are read through TFDS's file instructions (each process takes
its `tfds.even_splits` part: disjoint, together everything), files shuffled per epoch,
serialized examples shuffled in a buffer, repeated, batched, then parsed with one vectorised
`tf.io.parse_example` per batch and masked per batch with stateless random ops seeded by
(seed, process, batch number): deterministic for a seed, and the whole state (file order, shuffle
buffer, batch number) lives in the tf.data iterator, which `save`/`restore` checkpoint.

Dynamic masking is the reference's: num_to_predict = min(P, max(1, round(len * masked_lm_prob)))
of the non-special tokens, chosen uniformly (whole-word: whole words in a random order, a word
that does not fit skipped, as create_pretraining_data.py), then per chosen token 80% [MASK],
10% kept, 10% a uniformly random vocabulary id (mask_token_prob / random_token_prob change the
shares). Span (SpanBERT) and n-gram (ALBERT) masking run data.examples'
create_masked_lm_predictions, the code of static masking, per row in a tf.numpy_function.
Words come from the dataset's word_starts feature (a segmenter's words, e.g. Chinese with jieba);
datasets of version 1.0.0 have none and derive them from the vocabulary's ## pieces. The
strategy defaults to the dataset's (prepare --masking_strategy).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from etils import epath

from bert_jax.errors import UserError

_NAME = "bert_pretraining"



# --------------------------------------------------------------------------- dataset lookup


def find_dataset(data_dir: str, dataset: str | None = None) -> str:
  """Version directory of a prepared dataset in `data_dir`.

  dataset: None (the only one there), "bert_pretraining", "bert_pretraining:1.1.0",
    "bert_pretraining/CONFIG" or "bert_pretraining/CONFIG:1.1.0".
  """
  root = epath.Path(os.path.expanduser(data_dir))  # local or gs://
  found = []
  for info in list(root.glob("*/*/dataset_info.json")) + list(root.glob("*/*/*/dataset_info.json")):
    rel = info.parent.relative_to(root).parts
    if any(part.startswith("incomplete.") for part in rel):
      continue  # a prepare that did not finish
    name, version = rel[0], rel[-1]
    config = rel[1] if len(rel) == 3 else None
    found.append((name, config, version, str(info.parent)))
  if dataset is not None:
    name, _, version = dataset.partition(":")
    name, _, config = name.partition("/")
    found = [f for f in found if f[0] == name and (f[1] or "") == config
             and (not version or f[2] == version)]
  if not found:
    raise FileNotFoundError(f"no prepared dataset {dataset or ''} in {data_dir}: run "
                            f"python -m bert_jax.prepare --data_dir={data_dir} first")
  names = {(f[0], f[1]) for f in found}
  if len(names) > 1:
    listed = ", ".join(sorted(n + (f"/{c}" if c else "") for n, c in names))
    raise ValueError(f"{data_dir} holds several datasets ({listed}): pass dataset=NAME")
  return max(found, key=lambda f: tuple(int(x) for x in f[2].split(".")))[3]


def dataset_info(data_dir: str, dataset: str | None = None) -> dict:
  """Settings and sizes of a prepared dataset (reads its JSON files; no TensorFlow).

  Returns vocab_size, vocab_path (the dataset's own copy), max_seq_length,
  max_predictions_per_seq, masking, whole_word_masking, num_train_examples,
  num_validation_examples, name, version, path, and the rest of the metadata (seed, lower_case,
  special_ids, masked_lm_prob, counts, ...).
  """
  path = find_dataset(data_dir, dataset)
  info = json.loads((epath.Path(path) / "dataset_info.json").read_text())
  metadata = json.loads((epath.Path(path) / "metadata.json").read_text())
  sizes = {s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in info["splits"]}
  name = info["name"] + (f"/{info['configName']}" if info.get("configName") else "")
  return {**metadata, "vocab_path": str(epath.Path(path) / metadata["vocab_file"]),
          "num_train_examples": sizes.get("train", 0),
          "num_validation_examples": sizes.get("validation", 0),
          "name": name, "version": info["version"], "path": path}


# --------------------------------------------------------------------------- tf.data


def _tf():
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  return tf


def _file_instructions(path: str, split: str, process_index: int, process_count: int):
  """(filenames, skip, take) of this process's part of `split` (tfds.even_splits)."""
  import tensorflow_datasets as tfds
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise ValueError(f"dataset {path} has no {split} split")
  part = tfds.even_splits(split, n=process_count)[process_index]
  instructions = builder.info.splits[part].file_instructions
  return ([i.filename for i in instructions], [i.skip for i in instructions],
          [i.take for i in instructions])


def dataset_masking_strategy(info: dict) -> str:
  """The strategy a dataset was prepared with (1.0.0 datasets: token or whole_word)."""
  return info.get("masking_strategy") or ("whole_word" if info["whole_word_masking"] else "token")


def _check(info: dict, seq_len: int, max_predictions_per_seq: int,
           whole_word_masking: bool | None, masking_strategy: str | None) -> str:
  """The masking strategy to use (masking_strategy, else whole_word_masking, else the
  dataset's), after checking the arguments against the dataset."""
  from bert_jax.data.examples import MASKING_STRATEGIES
  if seq_len != info["max_seq_length"]:
    raise ValueError(f"seq_len {seq_len} differs from the dataset's max_seq_length "
                     f"{info['max_seq_length']} ({info['path']}): prepare a dataset with "
                     f"--max_seq_length={seq_len}")
  if masking_strategy is None and whole_word_masking is not None:
    masking_strategy = "whole_word" if whole_word_masking else "token"
  strategy = masking_strategy or dataset_masking_strategy(info)
  if strategy not in MASKING_STRATEGIES:
    raise ValueError(f"masking strategy {strategy!r} is not one of {', '.join(MASKING_STRATEGIES)}")
  if info["masking"] == "static":
    if max_predictions_per_seq < info["max_predictions_per_seq"]:
      raise ValueError(f"max_predictions_per_seq {max_predictions_per_seq} is below the static "
                       f"dataset's {info['max_predictions_per_seq']}")
    if strategy != dataset_masking_strategy(info):
      raise ValueError(f"the masking strategy cannot change for a statically masked dataset "
                       f"(it is {dataset_masking_strategy(info)}, asked for {strategy})")
  return strategy


def _parse_and_mask(tf, info: dict, *, seq_len: int, max_predictions_per_seq: int,
                    masked_lm_prob: float, strategy: str, mask_token_prob: float = 0.8,
                    random_token_prob: float = 0.1):
  """Returns fn(serialized [B], seed [2] int64) -> batch dict of tensors."""
  special = info["special_ids"]
  pad_id = special["[PAD]"]
  spec = {k: tf.io.RaggedFeature(tf.int64) for k in
          ("input_ids", "token_type_ids", "masked_positions", "masked_ids", "word_starts")}
  # Word starts: stored per token since 1.1.0 (segmenter words too); before, from the vocab.
  stored_starts = "masking_strategy" in info
  vocab_starts = None if stored_starts or strategy == "token" else _word_starts(tf, info)
  spec["next_sentence_label"] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
  static = info["masking"] == "static"

  def fn(serialized, seed):
    ex = tf.io.parse_example(serialized, spec)
    batch = tf.shape(serialized)[0]
    ids = tf.cast(ex["input_ids"].to_tensor(pad_id, shape=[batch, seq_len]), tf.int32)
    types = tf.cast(ex["token_type_ids"].to_tensor(0, shape=[batch, seq_len]), tf.int32)
    lengths = tf.cast(ex["input_ids"].row_lengths(), tf.int32)
    valid = tf.sequence_mask(lengths, seq_len)
    if static:
      pos = tf.cast(ex["masked_positions"].to_tensor(0, shape=[batch, max_predictions_per_seq]),
                    tf.int32)
      mids = tf.cast(ex["masked_ids"].to_tensor(0, shape=[batch, max_predictions_per_seq]),
                     tf.int32)
      weights = tf.cast(tf.sequence_mask(ex["masked_positions"].row_lengths(),
                                         max_predictions_per_seq), tf.float32)
    else:
      if stored_starts:
        starts = ex["word_starts"].to_tensor(1, shape=[batch, seq_len]) > 0
      else:
        starts = tf.gather(vocab_starts, ids) if vocab_starts is not None else None
      if strategy in ("span", "ngram"):
        ids, pos, mids, weights = _mask_in_python(
            tf, info, ids, lengths, starts, seed, strategy=strategy,
            max_predictions_per_seq=max_predictions_per_seq, masked_lm_prob=masked_lm_prob,
            mask_token_prob=mask_token_prob, random_token_prob=random_token_prob)
      else:
        ids, pos, mids, weights = mask_tokens(
            tf, ids, valid, lengths, seed, special=special, vocab_size=info["vocab_size"],
            max_predictions_per_seq=max_predictions_per_seq, masked_lm_prob=masked_lm_prob,
            word_starts=starts if strategy == "whole_word" else None,
            mask_token_prob=mask_token_prob, random_token_prob=random_token_prob)
    return {"input_ids": ids, "token_type_ids": types,
            "attention_mask": tf.cast(valid, tf.int32), "masked_positions": pos,
            "masked_ids": mids, "masked_weights": weights,
            "next_sentence_label": tf.cast(ex["next_sentence_label"], tf.int32)}

  return fn


def mask_tokens(tf, ids, valid, lengths, seed, *, special: dict, vocab_size: int,
                max_predictions_per_seq: int, masked_lm_prob: float = 0.15,
                word_starts=None, mask_token_prob: float = 0.8, random_token_prob: float = 0.1):
  """BERT's masked-LM masking of a batch, vectorised, from a stateless seed.

  ids: int32 [B, L]; valid: bool [B, L] (inside the sequence); lengths: int32 [B];
  seed: int64 [2]; word_starts: None (per-token) or bool [B, L], the tokens that begin a word
  (whole words); mask_token_prob / random_token_prob: [MASK] and random shares (80/10/10).
  Returns (masked ids [B, L], positions int32 [B, P], original ids int32 [B, P],
  weights float32 [B, P]).
  """
  P = max_predictions_per_seq
  B, L = tf.shape(ids)[0], tf.shape(ids)[1]
  seeds = tf.random.experimental.stateless_split(seed, 4)
  candidate = valid & (ids != special["[CLS]"]) & (ids != special["[SEP]"])
  # Python's round() and tf.round both round half to even; float64 like Python.
  num_to_predict = tf.cast(tf.round(tf.cast(lengths, tf.float64) * masked_lm_prob), tf.int32)
  num_to_predict = tf.minimum(P, tf.maximum(1, num_to_predict))  # [B]
  if word_starts is None:
    scores = tf.random.stateless_uniform([B, L], seeds[0])
    scores = tf.where(candidate, scores, 2.0)
    _, first = tf.math.top_k(-scores, k=tf.minimum(P, L))  # P lowest scores, [B, P]
    take = ((tf.range(tf.shape(first)[1])[None, :] < num_to_predict[:, None])
            & tf.gather(candidate, first, batch_dims=1))
    selected = tf.reduce_any(
        tf.one_hot(tf.where(take, first, L), L, on_value=True, off_value=False,
                   dtype=tf.bool), axis=1)  # [B, L]
  else:
    selected = _select_whole_words(tf, ids, candidate, num_to_predict, seeds[0], word_starts)
  # Selected positions, ascending, padded: sort keys L + i for unselected i.
  positions = tf.range(L)[None, :]
  keys = tf.where(selected, positions, L + positions)
  keys = -tf.math.top_k(-keys, k=tf.minimum(P, L))[0]  # P smallest keys, ascending
  in_use = keys < L
  pos = tf.where(in_use, keys, 0)
  if P > L:
    pad = [[0, 0], [0, P - L]]
    pos, in_use = tf.pad(pos, pad), tf.pad(in_use, pad)
  original = tf.where(in_use, tf.gather(ids, pos, batch_dims=1), 0)
  u = tf.random.stateless_uniform([B, P], seeds[1])
  random_ids = tf.random.stateless_uniform([B, P], seeds[2], 0, vocab_size, dtype=tf.int32)
  new = tf.where(u < mask_token_prob, special["[MASK]"],
                 tf.where(u < 1.0 - random_token_prob, original, random_ids))
  # Unused slots point at position 0 ([CLS]) and write back its own id: no change.
  new = tf.where(in_use, new, ids[:, :1])
  index = tf.stack([tf.broadcast_to(tf.range(B)[:, None], [B, P]), pos], axis=-1)
  masked = tf.tensor_scatter_nd_update(ids, index, new)
  return masked, pos, original, tf.cast(in_use, tf.float32)


def _select_whole_words(tf, ids, candidate, num_to_predict, seed, word_starts):
  """bool [B, L]: whole words in random order, a word skipped if it does not fit (reference)."""
  B, L = tf.shape(ids)[0], tf.shape(ids)[1]
  cand = tf.cast(candidate, tf.int32)
  # A candidate starts a word if its piece does, or if it is the first candidate (continuation
  # pieces join the previous candidate's word, across [SEP] too, as the reference does).
  starts = candidate & (word_starts | (tf.cumsum(cand, axis=1) == 1))
  word = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1  # [B, L] word index of candidates
  num_words = tf.reduce_sum(tf.cast(starts, tf.int32), axis=1)  # [B]
  segment = tf.where(candidate, word + tf.range(B)[:, None] * L, B * L)
  word_len = tf.reshape(tf.math.unsorted_segment_sum(cand, segment, B * L + 1)[:-1], [B, L])
  scores = tf.random.stateless_uniform([B, L], seed)
  scores = tf.where(tf.range(L)[None, :] < num_words[:, None], scores, 2.0)
  order = tf.argsort(scores, axis=1, stable=True)  # word ids, shuffled; missing words last
  sorted_len = tf.gather(word_len, order, batch_dims=1)  # [B, L]

  def body(r, count, chosen):
    n = sorted_len[:, r]
    ok = (count < num_to_predict) & (count + n <= num_to_predict) & (n > 0)
    count = count + tf.where(ok, n, 0)
    chosen = chosen | (tf.one_hot(r, L, on_value=True, off_value=False, dtype=tf.bool)[None, :]
                       & ok[:, None])
    return r + 1, count, chosen

  def cond(r, count, chosen):
    del chosen
    return (r < L) & tf.reduce_any((count < num_to_predict) & (r < num_words))

  _, _, chosen_sorted = tf.while_loop(
      cond, body, (tf.constant(0), tf.zeros([B], tf.int32), tf.zeros([B, L], tf.bool)))
  chosen_word = tf.gather(chosen_sorted, tf.argsort(order, axis=1), batch_dims=1)
  return candidate & tf.gather(chosen_word, tf.maximum(word, 0), batch_dims=1)


def _mask_in_python(tf, info, ids, lengths, starts, seed, *, strategy, max_predictions_per_seq,
                    masked_lm_prob, mask_token_prob, random_token_prob):
  """Span / n-gram masking of a batch with data.examples.create_masked_lm_predictions, the code
  static masking runs (in tf.numpy_function): row b draws from random.Random seeded by
  (seed, b), so a batch's masks are a function of its stateless seed, as mask_tokens' are."""
  import random
  from bert_jax.data import examples as pdata
  special_ids = info["special_ids"]
  special = pdata.SpecialIds(special_ids["[CLS]"], special_ids["[SEP]"], special_ids["[MASK]"],
                             info["vocab_size"], np.ones(0, bool))
  options = pdata.InstanceOptions(
      masking_strategy=strategy, masked_lm_prob=masked_lm_prob,
      max_predictions_per_seq=max_predictions_per_seq, mask_token_prob=mask_token_prob,
      random_token_prob=random_token_prob)
  P = max_predictions_per_seq

  def np_mask(ids, lengths, starts, seed):
    ids = ids.copy()
    B = ids.shape[0]
    pos, orig, weights = (np.zeros((B, P), np.int32), np.zeros((B, P), np.int32),
                          np.zeros((B, P), np.float32))
    for b in range(B):
      n = int(lengths[b])
      if n == 0:
        continue
      row = ids[b, :n]  # a view: masked in place
      rng = random.Random(int(seed[0]) * 1_000_003 + int(seed[1]) * 65_537 + b)
      out = pdata.create_masked_lm_predictions(row, starts[b, :n], rng, options, special)
      k = len(out["masked_positions"])
      pos[b, :k], orig[b, :k], weights[b, :k] = out["masked_positions"], out["masked_ids"], 1.0
    return ids, pos, orig, weights

  masked, pos, orig, weights = tf.numpy_function(
      np_mask, [ids, lengths, starts, seed], [tf.int32, tf.int32, tf.int32, tf.float32],
      stateful=False)
  masked.set_shape(ids.shape)
  for t in (pos, orig, weights):
    t.set_shape([ids.shape[0], P])
  return masked, pos, orig, weights


def _stream_seed(tf, seed: int, process_index: int, purpose: int):
  """int64 [2]: the base of one process's masking seeds (purpose 0: train, 1: eval)."""
  base = tf.constant([seed, 0], tf.int64)
  fold = tf.random.experimental.stateless_fold_in
  return fold(fold(base, process_index), purpose)


def _word_starts(tf, info: dict):
  from bert_jax.text.tokenization import Tokenizer
  tokenizer = Tokenizer.from_file(info["vocab_path"], lower_case=info["lower_case"])
  return tf.constant(tokenizer.is_word_start)


def _packed_layout(seq_len: int, max_predictions_per_seq: int, max_sequences_per_row: int):
  """Each packed key -> (dtype, shape of one row): what pack_examples builds, in order."""
  L, P, S = seq_len, max_predictions_per_seq, max_sequences_per_row
  return {"input_ids": (np.int32, (L,)), "token_type_ids": (np.int32, (L,)),
          "attention_mask": (np.int32, (L,)), "segment_ids": (np.int32, (L,)),
          "position_ids": (np.int32, (L,)), "masked_positions": (np.int32, (P,)),
          "masked_ids": (np.int32, (P,)), "masked_weights": (np.float32, (P,)),
          "cls_positions": (np.int32, (S,)), "next_sentence_label": (np.int32, (S,)),
          "nsp_weights": (np.float32, (S,)), "row_used": (bool, ())}


def pack_examples(batch: dict, *, max_sequences_per_row: int, pad_id: int) -> dict:
  """Packs a group of N masked examples (a batch dict as `_parse_and_mask` makes it) into at most
  N rows, first-fit decreasing by length under the budgets L tokens, S sequences and P masked
  predictions per row. Returns the rows ([N, ...], unused rows all padding) and row_used [N]."""
  ids, types = batch["input_ids"], batch["token_type_ids"]
  n, length = ids.shape
  p = batch["masked_positions"].shape[1]
  s = max_sequences_per_row
  lengths = batch["attention_mask"].sum(axis=1).astype(np.int64)
  npred = (batch["masked_weights"] > 0).sum(axis=1).astype(np.int64)
  fill = np.zeros(n, np.int64)
  preds = np.zeros(n, np.int64)
  count = np.zeros(n, np.int64)
  row_of = np.zeros(n, np.int64)
  nrows = 0
  for i in np.argsort(-lengths, kind="stable"):
    fits = ((fill[:nrows] + lengths[i] <= length) & (count[:nrows] < s)
            & (preds[:nrows] + npred[i] <= p))
    r = int(np.argmax(fits)) if nrows and fits.any() else nrows
    nrows = max(nrows, r + 1)
    row_of[i] = r
    fill[r] += lengths[i]
    preds[r] += npred[i]
    count[r] += 1
  # Within a row, sequences keep their group order: each one's token offset, prediction offset
  # and slot are the sums over the row's earlier sequences.
  order = np.lexsort((np.arange(n), row_of))
  first = np.r_[True, row_of[order][1:] != row_of[order][:-1]]
  def exclusive_in_row(x):
    c = np.cumsum(x[order]) - x[order]
    return c - np.maximum.accumulate(np.where(first, c, 0))
  start, q0, slot = (np.empty(n, np.int64) for _ in range(3))
  start[order] = exclusive_in_row(lengths)
  q0[order] = exclusive_in_row(npred)
  slot[order] = exclusive_in_row(np.ones(n, np.int64))
  layout = _packed_layout(length, p, s)
  out = {k: np.zeros((n,) + shape, dtype) for k, (dtype, shape) in layout.items()}
  out["input_ids"][:] = pad_id
  for i in range(n):
    r, ln, k, a, q = row_of[i], lengths[i], slot[i], start[i], npred[i]
    out["input_ids"][r, a:a + ln] = ids[i, :ln]
    out["token_type_ids"][r, a:a + ln] = types[i, :ln]
    out["attention_mask"][r, a:a + ln] = 1
    out["segment_ids"][r, a:a + ln] = k + 1
    out["position_ids"][r, a:a + ln] = np.arange(ln)
    out["masked_positions"][r, q0[i]:q0[i] + q] = batch["masked_positions"][i, :q] + a
    out["masked_ids"][r, q0[i]:q0[i] + q] = batch["masked_ids"][i, :q]
    out["masked_weights"][r, q0[i]:q0[i] + q] = batch["masked_weights"][i, :q]
    out["cls_positions"][r, k] = a
    out["next_sentence_label"][r, k] = batch["next_sentence_label"][i]
    out["nsp_weights"][r, k] = 1.0
  out["row_used"] = np.arange(n) < nrows
  return out


def _pack_fn(tf, *, seq_len: int, max_predictions_per_seq: int, max_sequences_per_row: int,
             pad_id: int):
  """tf.data map: a masked group [N, ...] -> packed rows [N, ...] + row_used, via numpy."""
  layout = _packed_layout(seq_len, max_predictions_per_seq, max_sequences_per_row)
  keys = list(layout)
  in_keys = ("input_ids", "token_type_ids", "attention_mask", "masked_positions", "masked_ids",
             "masked_weights", "next_sentence_label")

  def np_pack(*arrays):
    out = pack_examples(dict(zip(in_keys, arrays)), max_sequences_per_row=max_sequences_per_row,
                        pad_id=pad_id)
    return [out[k] for k in keys]

  def fn(batch):
    outs = tf.numpy_function(np_pack, [batch[k] for k in in_keys],
                             [tf.as_dtype(layout[k][0]) for k in keys], stateful=False)
    for k, v in zip(keys, outs):
      v.set_shape((None,) + layout[k][1])
    return dict(zip(keys, outs))

  return fn


class TrainIterator:
  """Infinite iterator of this process's training batches; `save`/`restore` its exact position."""

  def __init__(self, dataset, params: dict, process_index: int):
    tf = _tf()
    self._iterator = iter(dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)
    self._params = params
    self._process_index = process_index

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in next(self._iterator).items()}

  def _prefix(self, directory: str) -> str:
    return str(epath.Path(directory) / f"input_pipeline_process_{self._process_index}")

  def save(self, directory: str) -> None:
    """Writes this process's position into `directory` (input_pipeline_process_<i>*)."""
    epath.Path(directory).mkdir(parents=True, exist_ok=True)
    prefix = self._prefix(directory)
    self._checkpoint.write(prefix)  # TF file APIs: local or gs://
    epath.Path(prefix + ".json").write_text(json.dumps(self._params, indent=1, sort_keys=True))

  def restore(self, directory: str) -> None:
    """Continues from a `save` of an iterator built with the same arguments."""
    prefix = self._prefix(directory)
    if not epath.Path(prefix + ".json").exists():
      raise FileNotFoundError(f"no input pipeline state for process {self._process_index} in "
                              f"{directory}")
    saved = json.loads(epath.Path(prefix + ".json").read_text())
    if saved != self._params:
      differ = sorted(k for k in set(saved) | set(self._params)
                      if saved.get(k) != self._params.get(k))
      if "dataset_fingerprint" in differ:
        raise InputStateMismatch(
            f"input pipeline state in {directory} belongs to a different build of the dataset in "
            f"{self._params['path']} (re-prepared since?); resume with the data it was trained "
            "on, or start a new --workdir")
      raise InputStateMismatch(f"input pipeline state in {directory} was saved with other "
                               f"arguments ({', '.join(differ)}); build the iterator with the "
                               "same ones")
    self._checkpoint.read(prefix).assert_consumed()


class InputStateMismatch(UserError):
  """A saved input position that does not belong to this iterator (other data or settings)."""


def dataset_fingerprint(info: dict) -> str:
  """Identifies one build of a dataset: its metadata and every split's shard sizes in bytes
  and examples. A saved input position (file offsets) is only valid for the same build."""
  import hashlib
  path = epath.Path(info["path"])
  splits = json.loads((path / "dataset_info.json").read_text()).get("splits", [])
  parts = [(path / "metadata.json").read_text(),
           json.dumps([(sp.get("name"), sp.get("shardLengths"), sp.get("numBytes"))
                       for sp in splits], sort_keys=True)]
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def train_iterator(data_dir: str, dataset: str | None = None, *, batch_size: int, seq_len: int,
                   max_predictions_per_seq: int, seed: int, process_index: int = 0,
                   process_count: int = 1, masked_lm_prob: float = 0.15,
                   whole_word_masking: bool | None = None, masking_strategy: str | None = None,
                   mask_token_prob: float = 0.8, random_token_prob: float = 0.1,
                   shuffle_buffer: int = 10_000, pack: bool = False,
                   max_sequences_per_row: int = 4, pack_group: int = 256) -> TrainIterator:
  """This process's infinite, shuffled, dynamically masked training batches (see module doc);
  pack=True: rows packed with up to max_sequences_per_row sequences, from groups of pack_group
  examples."""
  tf = _tf()
  info = dataset_info(data_dir, dataset)
  strategy = _check(info, seq_len, max_predictions_per_seq, whole_word_masking, masking_strategy)
  files, skips, takes = _file_instructions(info["path"], "train", process_index, process_count)
  if sum(takes) < (pack_group if pack else batch_size):
    raise ValueError(f"process {process_index} has {sum(takes)} training examples, fewer than "
                     + (f"pack_group {pack_group}" if pack else f"batch_size {batch_size}"))
  shuffle_seed = (seed * 1_000_003 + process_index) % (2**31 - 1)
  ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(skips, tf.int64),
                                           tf.constant(takes, tf.int64)))
  ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True).repeat()
  ds = ds.interleave(lambda f, s, t: tf.data.TFRecordDataset(f).skip(s).take(t),
                     cycle_length=min(len(files), 16), block_length=1,
                     num_parallel_calls=min(len(files), 4), deterministic=True)
  ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
  ds = ds.batch(pack_group if pack else batch_size, drop_remainder=True).enumerate()
  fn = _parse_and_mask(tf, info, seq_len=seq_len, max_predictions_per_seq=max_predictions_per_seq,
                       masked_lm_prob=masked_lm_prob, strategy=strategy,
                       mask_token_prob=mask_token_prob, random_token_prob=random_token_prob)
  base = _stream_seed(tf, seed, process_index, 0)
  fold = tf.random.experimental.stateless_fold_in
  ds = ds.map(lambda step, serialized: fn(serialized, fold(base, step)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if pack:
    ds = ds.map(_pack_fn(tf, seq_len=seq_len, max_predictions_per_seq=max_predictions_per_seq,
                         max_sequences_per_row=max_sequences_per_row,
                         pad_id=info["special_ids"]["[PAD]"]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.unbatch().filter(lambda row: row["row_used"])
    ds = ds.map(lambda row: {k: v for k, v in row.items() if k != "row_used"})
    ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  params = {"path": info["path"], "batch_size": batch_size, "seq_len": seq_len,
            "max_predictions_per_seq": max_predictions_per_seq, "seed": seed,
            "process_index": process_index, "process_count": process_count,
            "masked_lm_prob": masked_lm_prob, "whole_word_masking": strategy == "whole_word",
            "shuffle_buffer": shuffle_buffer, "dataset_fingerprint": dataset_fingerprint(info)}
  # (keys absent at their defaults: positions saved before they existed still restore)
  if strategy not in ("token", "whole_word"):
    params["masking_strategy"] = strategy
  if (mask_token_prob, random_token_prob) != (0.8, 0.1):
    params.update(mask_token_prob=mask_token_prob, random_token_prob=random_token_prob)
  if pack:  # (absent when off: positions saved before packing existed still restore)
    params.update(pack=True, max_sequences_per_row=max_sequences_per_row, pack_group=pack_group)
  return TrainIterator(ds, params, process_index)


class EvalBatches:
  """A fixed, finite, re-iterable pass over this process's part of the validation split."""

  def __init__(self, dataset, num_batches: int):
    self._dataset = dataset
    self._num_batches = num_batches

  def __len__(self) -> int:
    return self._num_batches

  def __iter__(self):
    for batch in self._dataset:
      yield {k: v.numpy() for k, v in batch.items()}


def eval_batches(data_dir: str, dataset: str | None = None, *, batch_size: int, seq_len: int,
                 max_predictions_per_seq: int, seed: int = 0, process_index: int = 0,
                 process_count: int = 1, max_batches: int | None = None,
                 masked_lm_prob: float = 0.15,
                 whole_word_masking: bool | None = None, masking_strategy: str | None = None,
                 mask_token_prob: float = 0.8, random_token_prob: float = 0.1) -> EvalBatches:
  """Validation batches with fixed masks (the same on every call), the same number on every
  process: ceil(largest process share / batch_size), at most max_batches; padding rows have
  example_weight 0 (and no masked tokens)."""
  tf = _tf()
  info = dataset_info(data_dir, dataset)
  strategy = _check(info, seq_len, max_predictions_per_seq, whole_word_masking, masking_strategy)
  total = info["num_validation_examples"]
  if total == 0:
    raise ValueError(f"dataset {info['path']} has no validation examples")
  files, skips, takes = _file_instructions(info["path"], "validation", process_index,
                                           process_count)
  largest = math.ceil(total / process_count)
  num_batches = math.ceil(largest / batch_size)
  if max_batches is not None:
    num_batches = min(num_batches, max_batches)
  real = tf.data.Dataset.from_tensor_slices((files, tf.constant(skips, tf.int64),
                                             tf.constant(takes, tf.int64)))
  real = real.flat_map(lambda f, s, t: tf.data.TFRecordDataset(f).skip(s).take(t))
  real = real.map(lambda x: (x, 1.0))
  padding = tf.data.Dataset.from_tensors((tf.constant(b""), 0.0)).repeat()
  ds = real.concatenate(padding).take(num_batches * batch_size)
  ds = ds.batch(batch_size, drop_remainder=True).enumerate()
  fn = _parse_and_mask(tf, info, seq_len=seq_len, max_predictions_per_seq=max_predictions_per_seq,
                       masked_lm_prob=masked_lm_prob, strategy=strategy,
                       mask_token_prob=mask_token_prob, random_token_prob=random_token_prob)
  base = _stream_seed(tf, seed, process_index, 1)

  def parse(step, batch):
    serialized, weight = batch
    out = fn(serialized, tf.random.experimental.stateless_fold_in(base, step))
    out["masked_weights"] = out["masked_weights"] * weight[:, None]
    out["example_weight"] = tf.cast(weight, tf.float32)
    return out

  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return EvalBatches(ds.prefetch(2), num_batches)
