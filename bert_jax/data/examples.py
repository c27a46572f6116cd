"""BERT pretraining examples from raw text: google-research/bert's create_pretraining_data.py.

No TensorFlow here: this module is what prepare's worker processes (and Beam workers) run.

Input format (BERT's): one sentence per line, a blank line between documents. The corpus is cut
into *shards* (byte ranges of ~`shard_bytes` that end at a document boundary); every shard is
processed on its own, seeded by (seed, shard index), so output does not depend on how many
processes run. Within a shard the algorithm is the reference's, random draw for random draw:

  rng.shuffle(documents)
  for _ in range(dupe_factor):
    for each document: create_instances_from_document (target length, A/B split, 50% random
      next with the unused sentences put back, truncation one token at a time from a random end,
      [CLS] A [SEP] B [SEP], masking when static)
  rng.shuffle(instances)

with `random.Random(shard_seed)`. `create_instances` on one shard and the same seed gives exactly
the reference's instances (tests/data/test_examples.py checks this). The "random next"
document comes from the same shard (the reference draws from the whole corpus, which it holds in
memory); a shard of 256 KiB (the default) holds dozens to hundreds of documents.

An instance is a dict of numpy arrays:
  input_ids          int32 [n]  [CLS] A [SEP] B [SEP], n <= max_seq_length
  token_type_ids     int32 [n]  0 for [CLS] A [SEP], 1 for B [SEP]
  next_sentence_label int       0 = IsNext, 1 = NotNext (B from another document)
  masked_positions   int32 [k]  static masking only: sorted positions, k <= max_predictions_per_seq
  masked_ids         int32 [k]  static masking only: original ids there (input_ids holds the
                                [MASK] / random / kept ids)
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import random
import re

import numpy as np
from etils import epath

from bert_jax.paths import file_size

MASKING_MODES = ("dynamic", "static")
# 256 KiB: a unit of parallel work small enough that a small corpus keeps every core busy (1 MiB
# shards left one of two workers idle on the 1.2 MB sample: 1.03 s vs 0.76 s), and a random-next
# pool of dozens to hundreds of documents.
DEFAULT_SHARD_BYTES = 1 << 18


@dataclasses.dataclass(frozen=True)
class TextShard:
  """Whole documents: byte ranges (path, start, end) of one or more files, in corpus order.
  `index` is the shard's place in the whole corpus (it seeds the shard's random draws)."""
  index: int
  segments: tuple  # ((path, start, end), ...)

  @property
  def num_bytes(self) -> int:
    return sum(end - start for _, start, end in self.segments)


def plan_text_shards(files: list[str], shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[TextShard]:
  """Cuts the files into shards of about `shard_bytes`, each piece ending after a blank line or
  at the end of a file (small files share a shard). Depends only on the files and shard_bytes."""
  shards, segments, size_in_shard = [], [], 0

  def close():
    nonlocal segments, size_in_shard
    if segments:
      shards.append(TextShard(len(shards), tuple(segments)))
    segments, size_in_shard = [], 0

  for path in files:
    size = file_size(path)
    start = 0
    with epath.Path(path).open("rb") as f:
      while start < size:
        end = min(size, start + shard_bytes - size_in_shard)
        if end < size:
          f.seek(end)
          if end > 0:
            f.seek(end - 1)
            if f.read(1) != b"\n":
              f.readline()  # finish the current line
          while True:
            line = f.readline()
            if not line or not line.strip():
              break
          end = f.tell()
        segments.append((path, start, end))
        size_in_shard += end - start
        start = end
        if size_in_shard >= shard_bytes:
          close()
  close()
  return shards


class _ReplacementCounter:
  """A codecs error handler that replaces invalid UTF-8 with U+FFFD and counts the bytes."""

  def __init__(self):
    self.count = 0
    self.name = f"bert_jax_count_{id(self)}"
    codecs.register_error(self.name, self)

  def __call__(self, error):
    self.count += error.end - error.start
    return "\ufffd", error.end


def read_text_documents(shard: TextShard) -> tuple[list[list[str]], int]:
  """Documents of a shard (lists of stripped, non-empty lines) and the count of invalid UTF-8
  bytes (replaced by U+FFFD, which the tokenizer's text cleanup then drops)."""
  counter = _ReplacementCounter()
  documents = []
  for path, start, end in shard.segments:
    with epath.Path(path).open("rb") as f:
      f.seek(start)
      text = f.read(end - start).decode("utf-8", errors=counter.name)
    current = []
    for line in text.split("\n"):
      line = line.strip()
      if line:
        current.append(line)
      elif current:
        documents.append(current)
        current = []
    if current:
      documents.append(current)
  return documents, counter.count


# A sentence ends at . ! or ? (optionally followed by closing quotes/brackets), then whitespace,
# then something that starts a sentence; common abbreviations and initials do not end one.
_SENTENCE_END = re.compile(r"""(?<=[.!?])["')\]]*\s+(?=["'(\[]?[A-Z0-9])""")
_ABBREVIATIONS = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|etc|e\.g|i\.e|cf|No|Fig|Vol|U\.S|Inc|Ltd|Co)"
    r"|\b[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
  """Sentences of a raw document by a simple rule: line breaks, and [.!?] followed by whitespace
  and an upper-case letter, digit, quote or bracket, except after common abbreviations/initials."""
  sentences = []
  for paragraph in text.split("\n"):
    paragraph = paragraph.strip()
    if not paragraph:
      continue
    start = 0
    for m in _SENTENCE_END.finditer(paragraph):
      candidate = paragraph[start:m.start()]
      if _ABBREVIATIONS.search(candidate):
        continue
      if candidate.strip():
        sentences.append(candidate.strip())
      start = m.end()
    tail = paragraph[start:].strip()
    if tail:
      sentences.append(tail)
  return sentences


def shard_seed(seed: int, shard_index: int, purpose: str) -> int:
  """A 64-bit seed for one shard and purpose ("holdout", "train", "validation")."""
  digest = hashlib.sha256(f"{seed}/{shard_index}/{purpose}".encode()).digest()
  return int.from_bytes(digest[:8], "little")


def split_documents(documents: list, validation_fraction: float, seed: int,
                    shard_index: int) -> tuple[list, list]:
  """(train, validation) documents of a shard: round(fraction * n) documents, at least 1 when the
  fraction is > 0 and the shard has two or more documents, are held out for validation."""
  n = len(documents)
  if validation_fraction <= 0 or n < 2:
    return list(documents), []
  num_validation = min(n - 1, max(1, round(validation_fraction * n)))
  held = set(random.Random(shard_seed(seed, shard_index, "holdout")).sample(range(n),
                                                                            num_validation))
  train = [d for i, d in enumerate(documents) if i not in held]
  validation = [d for i, d in enumerate(documents) if i in held]
  return train, validation


def tokenize_documents(tokenizer, documents: list[list[str]]) -> list[list[list[int]]]:
  """Token ids per sentence per document; sentences with no tokens and empty documents dropped."""
  flat = [s for doc in documents for s in doc]
  ids = tokenizer.encode_batch(flat)
  out, k = [], 0
  for doc in documents:
    sentences = [s for s in ids[k:k + len(doc)] if s]
    k += len(doc)
    if sentences:
      out.append(sentences)
  return out


# ----------------------------------------------------------------------------- the algorithm


@dataclasses.dataclass(frozen=True)
class InstanceOptions:
  """Settings of create_pretraining_data.py (names as its flags) plus our masking mode."""
  max_seq_length: int = 128
  short_seq_prob: float = 0.1
  masking: str = "dynamic"  # dynamic: no masks stored; static: masked as the reference.
  dupe_factor: int = 1  # static only (the reference's default is 10, its README uses 5).
  masked_lm_prob: float = 0.15
  max_predictions_per_seq: int = 20
  whole_word_masking: bool = False


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  cls_id: int
  sep_id: int
  mask_id: int
  vocab_size: int
  is_word_start: np.ndarray  # bool [vocab_size]

  @classmethod
  def of(cls, tokenizer) -> "SpecialIds":
    return cls(tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.vocab_size,
               tokenizer.is_word_start)


def create_instances(documents: list[list[list[int]]], rng: random.Random,
                     options: InstanceOptions, special: SpecialIds) -> list[dict]:
  """The reference's create_training_instances after reading: documents -> shuffled instances.

  documents: per document, per sentence, token ids (no empty sentences or documents).
  Shuffles `documents` in place, as the reference does.
  """
  rng.shuffle(documents)
  dupe_factor = options.dupe_factor if options.masking == "static" else 1
  instances = []
  for _ in range(dupe_factor):
    for document_index in range(len(documents)):
      instances.extend(_instances_from_document(documents, document_index, rng, options, special))
  rng.shuffle(instances)
  return instances


def _instances_from_document(all_documents, document_index, rng, options, special):
  document = all_documents[document_index]
  max_num_tokens = options.max_seq_length - 3  # [CLS], [SEP], [SEP]
  target_seq_length = max_num_tokens
  if rng.random() < options.short_seq_prob:
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
        a_end = 1  # how many sentences of the chunk go into A
        if len(current_chunk) >= 2:
          a_end = rng.randint(1, len(current_chunk) - 1)
        tokens_a = [t for sentence in current_chunk[:a_end] for t in sentence]
        tokens_b = []
        if len(current_chunk) == 1 or rng.random() < 0.5:
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
          # The unused sentences are put back for the next chunk.
          i -= len(current_chunk) - a_end
        else:
          is_random_next = False
          tokens_b = [t for sentence in current_chunk[a_end:] for t in sentence]
        _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
        assert tokens_a and tokens_b
        input_ids = np.array([special.cls_id, *tokens_a, special.sep_id, *tokens_b,
                              special.sep_id], dtype=np.int32)
        token_type_ids = np.zeros(len(input_ids), dtype=np.int32)
        token_type_ids[len(tokens_a) + 2:] = 1
        instance = {"input_ids": input_ids, "token_type_ids": token_type_ids,
                    "next_sentence_label": int(is_random_next)}
        if options.masking == "static":
          instance.update(create_masked_lm_predictions(input_ids, rng, options, special))
        instances.append(instance)
      current_chunk = []
      current_length = 0
    i += 1
  return instances


def _truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng) -> None:
  """Removes one token at a time from the longer list (B on ties), front or back at random."""
  excess = len(tokens_a) + len(tokens_b) - max_num_tokens
  if excess <= 0:
    return
  len_a, len_b = len(tokens_a), len(tokens_b)
  front_a = back_a = front_b = back_b = 0
  for _ in range(excess):
    front = rng.random() < 0.5
    if len_a > len_b:
      len_a -= 1
      front_a += front
      back_a += not front
    else:
      len_b -= 1
      front_b += front
      back_b += not front
  tokens_a[:] = tokens_a[front_a:len(tokens_a) - back_a]
  tokens_b[:] = tokens_b[front_b:len(tokens_b) - back_b]


def create_masked_lm_predictions(input_ids: np.ndarray, rng: random.Random,
                                 options: InstanceOptions, special: SpecialIds) -> dict:
  """Static masking, the reference's draw for draw (whole-word grouping by `is_word_start`).

  input_ids: int32 [n]; replaced in place. Returns masked_positions / masked_ids int32 [k].
  """
  candidates = np.flatnonzero((input_ids != special.cls_id) & (input_ids != special.sep_id))
  if options.whole_word_masking and len(candidates):
    # A continuation piece joins the previous candidate's word (also across [SEP], as the
    # reference does); the first candidate always starts a word.
    starts = special.is_word_start[input_ids[candidates]]
    starts[0] = True
    bounds = [*np.flatnonzero(starts).tolist(), len(candidates)]
    cand = candidates.tolist()
    cand_indexes = [cand[bounds[k]:bounds[k + 1]] for k in range(len(bounds) - 1)]
  else:
    cand_indexes = [[i] for i in candidates.tolist()]
  rng.shuffle(cand_indexes)
  num_to_predict = min(options.max_predictions_per_seq,
                       max(1, int(round(len(input_ids) * options.masked_lm_prob))))
  original = input_ids.tolist()
  positions = []
  for index_set in cand_indexes:
    if len(positions) >= num_to_predict:
      break
    if len(positions) + len(index_set) > num_to_predict:
      continue  # a whole word that does not fit is skipped
    for index in index_set:
      if rng.random() < 0.8:
        input_ids[index] = special.mask_id  # 80%: [MASK]
      elif rng.random() < 0.5:
        pass  # 10%: keep the original
      else:
        input_ids[index] = rng.randint(0, special.vocab_size - 1)  # 10%: random token
      positions.append(index)
  positions.sort()
  return {"masked_positions": np.asarray(positions, dtype=np.int32),
          "masked_ids": np.asarray([original[p] for p in positions], dtype=np.int32)}
