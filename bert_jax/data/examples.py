"""Pretraining examples from raw text: google-research/bert's create_pretraining_data.py, with
ALBERT's sentence order (SOP), RoBERTa's sentence-free rows, and whole-word, SpanBERT span and
ALBERT n-gram masking.

No TensorFlow here: this module is what prepare's worker processes (and Beam workers) run.

Input format (BERT's): one sentence per line, a blank line between documents. The corpus is cut
into *shards* of ~`shard_bytes`, each made of pieces from across the whole corpus (see
DEFAULT_SHARD_BYTES); every shard is processed on its own, seeded by (seed, shard index), so
output does not depend on how many processes run. Within a shard the algorithm is the
reference's, random draw for random draw:

  rng.shuffle(documents)
  for _ in range(dupe_factor):
    for each document: create_instances_from_document (target length, A/B split, 50% random
      next with the unused sentences put back [nsp] or 50% A and B swapped [sop, ALBERT's code],
      truncation one token at a time from a random end, [CLS] A [SEP] B [SEP], masking when
      static)
  rng.shuffle(instances)

with `random.Random(shard_seed)`. `create_instances` on one shard and the same seed gives exactly
the reference's instances (google-research/bert for nsp, google-research/albert for sop;
tests/data/test_examples.py checks both). The "random next" document comes from the shard's
documents, which are drawn from across the corpus; a corpus of up to one shard is the
reference's single pool exactly. objective "none" (RoBERTa): see _instances_without_pairs.

An instance is a dict of numpy arrays:
  input_ids          int32 [n]  [CLS] A [SEP] B [SEP] (none: [CLS] sentences [SEP]), n <= max_seq_length
  token_type_ids     int32 [n]  0 for [CLS] A [SEP], 1 for B [SEP] (none: all 0)
  next_sentence_label int       nsp: 0 = IsNext, 1 = NotNext; sop: 0 = in order, 1 = swapped;
                                none: 0
  word_starts        int32 [n]  1 where a token begins a word (WordPiece: not a ## piece; with a
                                segmenter, not inside its word), for whole-word/span/n-gram masking
  masked_positions   int32 [k]  static masking only: sorted positions, k <= max_predictions_per_seq
  masked_ids         int32 [k]  static masking only: original ids there (input_ids holds the
                                [MASK] / random / kept ids)
"""

from __future__ import annotations

import bisect
import codecs
import dataclasses
import hashlib
import itertools
import random
import re

import numpy as np
from etils import epath

from bert_jax.paths import file_size

MASKING_MODES = ("dynamic", "static")
# A shard is the unit of parallel work and its documents are the pool that NSP's random next
# sentence comes from (the reference draws from every document it read). So that the pool is
# not a few neighbouring documents, a shard is PIECES_PER_SHARD pieces of the corpus dealt
# round-robin (shard k of S holds pieces k, k + S, k + 2S, ...): its documents come from across
# the whole corpus. 8 MiB: hundreds to thousands of documents, a few seconds of work; a corpus
# up to 8 MiB is one shard, i.e. exactly the reference's single pool.
DEFAULT_SHARD_BYTES = 8 << 20
PIECES_PER_SHARD = 32


@dataclasses.dataclass(frozen=True)
class TextShard:
  """Whole documents: byte ranges (path, start, end) of one or more files.
  `index` is the shard's place in the whole corpus (it seeds the shard's random draws)."""
  index: int
  segments: tuple  # ((path, start, end), ...)

  @property
  def num_bytes(self) -> int:
    return sum(end - start for _, start, end in self.segments)


def _pieces(files: list[str], piece_bytes: int) -> list[list[tuple]]:
  """The files cut into pieces of about `piece_bytes`, each ending after a blank line or at the
  end of a file (small files share a piece): lists of (path, start, end), in corpus order."""
  pieces, segments, size_in_piece = [], [], 0

  def close():
    nonlocal segments, size_in_piece
    if segments:
      pieces.append(segments)
    segments, size_in_piece = [], 0

  for path in files:
    size = file_size(path)
    start = 0
    with epath.Path(path).open("rb") as f:
      while start < size:
        end = min(size, start + piece_bytes - size_in_piece)
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
        size_in_piece += end - start
        start = end
        if size_in_piece >= piece_bytes:
          close()
  close()
  return pieces


def deal(num_items: int, shard_units: float) -> list[list[int]]:
  """Item indices dealt round-robin into max(1, round(shard_units)) shards (never more than
  items): shard k gets items k, k + S, k + 2S, ..."""
  num_shards = max(1, min(num_items, int(round(shard_units))))
  return [list(range(k, num_items, num_shards)) for k in range(num_shards)]


def plan_text_shards(files: list[str], shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[TextShard]:
  """Shards of about `shard_bytes`, each PIECES_PER_SHARD pieces from across the corpus (see
  DEFAULT_SHARD_BYTES). Depends only on the files and shard_bytes."""
  pieces = _pieces(files, max(1, shard_bytes // PIECES_PER_SHARD))
  total = sum(end - start for piece in pieces for _, start, end in piece)
  return [TextShard(k, tuple(seg for p in members for seg in pieces[p]))
          for k, members in enumerate(deal(len(pieces), total / shard_bytes))]


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
  """(train, validation) documents of a shard, held out by text size so that the fraction means
  what it says with a few large documents too: in a seeded random order, a document is held out
  while the held-out characters stay within validation_fraction of the shard's (the smallest
  document when none fits, if the shard has two or more)."""
  n = len(documents)
  if validation_fraction <= 0 or n < 2:
    return list(documents), []
  sizes = [sum(len(line) for line in d) for d in documents]
  target = validation_fraction * sum(sizes)
  order = list(range(n))
  random.Random(shard_seed(seed, shard_index, "holdout")).shuffle(order)
  held, size = set(), 0
  for k in order:
    if len(held) < n - 1 and size + sizes[k] <= target:
      held.add(k)
      size += sizes[k]
  if not held:
    held.add(min(range(n), key=lambda k: (sizes[k], k)))
  train = [d for i, d in enumerate(documents) if i not in held]
  validation = [d for i, d in enumerate(documents) if i in held]
  return train, validation


def tokenize_documents(tokenizer, documents: list[list[str]],
                       segmenter=None) -> list[list[list[int]]]:
  """Token ids per sentence per document; sentences with no tokens and empty documents dropped.
  With a word segmenter (text.segmentation, e.g. jieba for Chinese), a token that continues a
  segmenter's word carries CONTINUES_WORD, so whole-word and span masking keep the word whole."""
  flat = [s for doc in documents for s in doc]
  ids = tokenizer.encode_batch(flat)
  if segmenter is not None:
    from bert_jax.text.segmentation import word_start_flags
    for k, (text, sentence) in enumerate(zip(flat, ids)):
      starts = word_start_flags(tokenizer.convert_ids_to_tokens(sentence), text, segmenter)
      ids[k] = [t if start or not tokenizer.is_word_start[t] else t | CONTINUES_WORD
                for t, start in zip(sentence, starts)]
  out, k = [], 0
  for doc in documents:
    sentences = [s for s in ids[k:k + len(doc)] if s]
    k += len(doc)
    if sentences:
      out.append(sentences)
  return out


# ----------------------------------------------------------------------------- the algorithm

OBJECTIVES = ("nsp", "sop", "none")
MASKING_STRATEGIES = ("token", "whole_word", "span", "ngram")
# A token id with this bit set continues a word that its piece alone does not show (a CJK
# character inside a segmenter's word); tokenize_documents sets it, instance building clears it.
CONTINUES_WORD = 1 << 30
# SpanBERT (Joshi et al. 2019; facebookresearch/SpanBERT pretraining/fairseq/data/masking.py):
# span lengths in words, Geometric(p = 0.2) clipped to [1, 10] (mean 3.78).
SPAN_P, SPAN_MAX_WORDS = 0.2, 10
# ALBERT (google-research/albert create_pretraining_data.py): n-grams of n <= 3 words,
# p(n) proportional to 1/n (favor_shorter_ngram).
NGRAM_MAX = 3


@dataclasses.dataclass(frozen=True)
class InstanceOptions:
  """Settings of create_pretraining_data.py (names as its flags) plus our objective and masking.

  objective: "nsp" (BERT), "sop" (ALBERT's sentence order) or "none" (RoBERTa's FULL-SENTENCES
    with cross_documents, DOC-SENTENCES without).
  masking_strategy: "token" (BERT), "whole_word" (all pieces of a word), "span" (SpanBERT),
    "ngram" (ALBERT). mask_token_prob / random_token_prob: of the chosen tokens, the share
    replaced by [MASK] and by a random id (the rest kept): BERT's 80/10/10 by default.
  """
  max_seq_length: int = 128
  short_seq_prob: float = 0.1
  masking: str = "dynamic"  # dynamic: no masks stored; static: masked as the reference.
  dupe_factor: int = 1  # static only (the reference's default is 10, its README uses 5).
  masked_lm_prob: float = 0.15
  max_predictions_per_seq: int = 20
  masking_strategy: str = "token"
  mask_token_prob: float = 0.8
  random_token_prob: float = 0.1
  objective: str = "nsp"
  cross_documents: bool = True  # objective "none": rows continue across documents


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


def num_to_predict(length: int, masked_lm_prob: float, max_predictions_per_seq: int) -> int:
  """BERT's count of tokens to mask in a sequence of `length` (specials included)."""
  return min(max_predictions_per_seq, max(1, int(round(length * masked_lm_prob))))


def create_instances(documents: list[list[list[int]]], rng: random.Random,
                     options: InstanceOptions, special: SpecialIds) -> list[dict]:
  """The reference's create_training_instances after reading: documents -> shuffled instances.

  documents: per document, per sentence, token ids (no empty sentences or documents; an id may
  carry CONTINUES_WORD). Shuffles `documents` in place, as the reference does.
  """
  rng.shuffle(documents)
  dupe_factor = options.dupe_factor if options.masking == "static" else 1
  instances = []
  for _ in range(dupe_factor):
    if options.objective == "none":
      instances.extend(_instances_without_pairs(documents, rng, options, special))
      continue
    for document_index in range(len(documents)):
      instances.extend(_instances_from_document(documents, document_index, rng, options, special))
  rng.shuffle(instances)
  return instances


def _instance(tokens: list[int], types: list[int], label: int, rng, options, special) -> dict:
  raw = np.asarray(tokens, dtype=np.int64)
  input_ids = (raw & (CONTINUES_WORD - 1)).astype(np.int32)
  word_starts = special.is_word_start[input_ids] & ((raw & CONTINUES_WORD) == 0)
  instance = {"input_ids": input_ids, "token_type_ids": np.asarray(types, dtype=np.int32),
              "next_sentence_label": label, "word_starts": word_starts.astype(np.int32)}
  if options.masking == "static":
    instance.update(create_masked_lm_predictions(input_ids, word_starts, rng, options, special))
  return instance


def _pair(tokens_a, tokens_b, label, rng, options, special) -> dict:
  tokens = [special.cls_id, *tokens_a, special.sep_id, *tokens_b, special.sep_id]
  types = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
  return _instance(tokens, types, label, rng, options, special)


def _instances_from_document(all_documents, document_index, rng, options, special):
  """NSP (google-research/bert) or SOP (google-research/albert, random_next_sentence=False):
  the same draws, except that SOP swaps A and B where NSP takes B from another document."""
  document = all_documents[document_index]
  max_num_tokens = options.max_seq_length - 3  # [CLS], [SEP], [SEP]
  target_seq_length = max_num_tokens
  if rng.random() < options.short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)
  sop = options.objective == "sop"
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
        # ALBERT keeps BERT's random next for a chunk of one sentence (nothing to swap), so a
        # few SOP pairs labelled 1 are NSP's NotNext: its code, draw for draw.
        if len(current_chunk) == 1 or (not sop and rng.random() < 0.5):
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
        elif sop and rng.random() < 0.5:
          is_random_next = True  # label 1: swapped
          tokens_b = [t for sentence in current_chunk[a_end:] for t in sentence]
          tokens_a, tokens_b = tokens_b, tokens_a
        else:
          is_random_next = False
          tokens_b = [t for sentence in current_chunk[a_end:] for t in sentence]
        _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
        assert tokens_a and tokens_b
        instances.append(_pair(tokens_a, tokens_b, int(is_random_next), rng, options, special))
      current_chunk = []
      current_length = 0
    i += 1
  return instances


def _instances_without_pairs(documents, rng, options, special):
  """RoBERTa's inputs (Liu et al. 2019, section 4.2): [CLS] contiguous full sentences [SEP],
  filled up to max_seq_length. cross_documents (FULL-SENTENCES): a row continues into the next
  document after a [SEP]; else (DOC-SENTENCES) a document's last row ends with it. A sentence
  longer than a row is cut into row-sized pieces (nothing is dropped). No sentence label (0)."""
  max_tokens = options.max_seq_length - 2  # [CLS] ... [SEP]
  rows, current = [], []

  def emit():
    nonlocal current
    if current and current[-1] == special.sep_id:  # a document separator that ends a row
      current.pop()
    if current:
      rows.append(current)
    current = []

  for document in documents:
    if current:  # cross_documents only: the separator between documents
      if len(current) + 1 >= max_tokens:
        emit()
      else:
        current.append(special.sep_id)
    for sentence in document:
      if current and len(current) + len(sentence) > max_tokens:
        emit()
      for start in range(0, len(sentence), max_tokens):
        piece = sentence[start:start + max_tokens]
        current.extend(piece)
        if len(current) >= max_tokens:
          emit()
    if not options.cross_documents:
      emit()
  emit()
  return [_instance([special.cls_id, *row, special.sep_id], [0] * (len(row) + 2), 0, rng,
                    options, special) for row in rows]


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


# ----------------------------------------------------------------------------- masking


def _words(input_ids: np.ndarray, word_starts: np.ndarray, special: SpecialIds) -> list[list[int]]:
  """Candidate positions (not [CLS]/[SEP]) grouped into words: a continuation joins the previous
  candidate's word (also across [SEP], as the reference's whole-word masking does)."""
  candidates = np.flatnonzero((input_ids != special.cls_id) & (input_ids != special.sep_id))
  if not len(candidates):
    return []
  starts = np.asarray(word_starts, bool)[candidates]
  starts[0] = True
  bounds = [*np.flatnonzero(starts).tolist(), len(candidates)]
  cand = candidates.tolist()
  return [cand[bounds[k]:bounds[k + 1]] for k in range(len(bounds) - 1)]


def _replace(input_ids, index, rng, options, special) -> None:
  """BERT's per-token replacement: mask_token_prob [MASK], then the rest kept or random in the
  ratio of the remaining probabilities (with 80/10/10: the reference's two draws exactly)."""
  if rng.random() < options.mask_token_prob:
    input_ids[index] = special.mask_id
  elif rng.random() < _keep_share(options):
    pass
  else:
    input_ids[index] = rng.randint(0, special.vocab_size - 1)


def _keep_share(options) -> float:
  rest = 1.0 - options.mask_token_prob  # rounded: 80/10/10 gives exactly the reference's 0.5
  return round((rest - options.random_token_prob) / rest, 12) if rest > 0 else 1.0


def create_masked_lm_predictions(input_ids: np.ndarray, word_starts: np.ndarray,
                                 rng: random.Random, options: InstanceOptions,
                                 special: SpecialIds) -> dict:
  """Masks one sequence by options.masking_strategy (see InstanceOptions); static masking in
  prepare and the input pipeline's dynamic span/n-gram masking both run this.

  input_ids: int32 [n], replaced in place; word_starts: bool [n] (a token that begins a word).
  Returns masked_positions / masked_ids int32 [k], sorted, k <= max_predictions_per_seq.
  token / whole_word: the reference's draws exactly (cand_indexes shuffled, a word that does not
  fit skipped). span / ngram: see _span_sets / _ngram_sets.
  """
  strategy = options.masking_strategy
  words = _words(input_ids, word_starts, special)
  if strategy == "token":
    words = [[i] for word in words for i in word]
  budget = num_to_predict(len(input_ids), options.masked_lm_prob,
                          options.max_predictions_per_seq)
  original = input_ids.tolist()
  positions = []
  if strategy in ("token", "whole_word"):
    rng.shuffle(words)
    for index_set in words:
      if len(positions) >= budget:
        break
      if len(positions) + len(index_set) > budget:
        continue  # a whole word that does not fit is skipped
      for index in index_set:
        _replace(input_ids, index, rng, options, special)
        positions.append(index)
  elif strategy == "ngram":
    for index_set in _ngram_sets(words, budget, rng):
      for index in index_set:
        _replace(input_ids, index, rng, options, special)
        positions.append(index)
  elif strategy == "span":
    for index_set in _span_sets(words, budget, rng):
      u = rng.random()  # SpanBERT: one replacement decision per span
      for index in index_set:
        if u < options.mask_token_prob:
          input_ids[index] = special.mask_id
        elif u < 1.0 - options.random_token_prob:
          pass
        else:
          input_ids[index] = rng.randint(0, special.vocab_size - 1)
        positions.append(index)
  else:
    raise ValueError(f"unknown masking strategy {strategy!r}")
  positions.sort()
  return {"masked_positions": np.asarray(positions, dtype=np.int32),
          "masked_ids": np.asarray([original[p] for p in positions], dtype=np.int32)}


def _draw(rng: random.Random, cumulative: list[float]) -> int:
  """Index i with probability cumulative[i] - cumulative[i - 1] (one rng.random() draw)."""
  u = rng.random() * cumulative[-1]
  return min(bisect.bisect_right(cumulative, u), len(cumulative) - 1)


_SPAN_CDF = list(itertools.accumulate(SPAN_P * (1 - SPAN_P) ** k for k in range(SPAN_MAX_WORDS)))


def span_length(rng: random.Random) -> int:
  """A SpanBERT span length in words: Geometric(0.2) clipped (renormalised) to 1..10."""
  return 1 + _draw(rng, _SPAN_CDF)


def _span_sets(words: list[list[int]], budget: int, rng: random.Random) -> list[list[int]]:
  """SpanBERT's span masking, in whole words (facebookresearch/SpanBERT PairWithSpanMasking-
  Scheme.mask): until `budget` tokens are chosen, draw a length l, an anchor token uniformly (a
  chosen one is drawn again), and take l words from the anchor's word on. Departures, so that
  words stay whole and every rate is exact to BERT's count: a word that would exceed the budget
  ends the span instead of being cut, a span stops at an already chosen word and at a
  segment's end ([SEP]), and the search gives up after 10 * budget anchors."""
  if not words:
    return []
  word_of = {}
  for w, word in enumerate(words):
    for index in word:
      word_of[index] = w
  tokens = [index for word in words for index in word]
  chosen, count, spans = set(), 0, []
  for _ in range(10 * budget):
    if count >= budget:
      break
    length = span_length(rng)
    w = word_of[tokens[rng.randrange(len(tokens))]]
    if w in chosen:
      continue
    span = []
    for k in range(w, min(len(words), w + length)):
      if k in chosen or count + len(words[k]) > budget:
        break
      if k > w and words[k][0] != words[k - 1][-1] + 1:
        break  # [SEP] between the two words
      chosen.add(k)
      count += len(words[k])
      span.extend(words[k])
    if span:
      spans.append(span)
  return spans


_NGRAM_CDF = list(itertools.accumulate(1.0 / n for n in range(1, NGRAM_MAX + 1)))


def _ngram_sets(words: list[list[int]], budget: int, rng: random.Random) -> list[list[int]]:
  """ALBERT's n-gram masking (create_masked_lm_predictions with do_whole_word_mask, ngram=3,
  favor_shorter_ngram): every word starts a candidate; candidates are shuffled; each draws n
  with p(n) proportional to 1/n among the n-grams that fit in the sequence, falls back to
  shorter n-grams while it exceeds the budget, and is skipped if it still does, or if it
  overlaps one already chosen. ALBERT draws n from numpy's unseeded global generator; here
  the same rng draws it, so a seed reproduces the output."""
  starts = list(range(len(words)))
  rng.shuffle(starts)
  chosen, count, sets = set(), 0, []
  for w in starts:
    if count >= budget:
      break
    available = min(NGRAM_MAX, len(words) - w)
    n = 1 + _draw(rng, _NGRAM_CDF[:available])
    while n > 1 and count + sum(len(words[k]) for k in range(w, w + n)) > budget:
      n -= 1
    index_set = [i for k in range(w, w + n) for i in words[k]]
    if count + len(index_set) > budget or any(i in chosen for i in index_set):
      continue
    chosen.update(index_set)
    count += len(index_set)
    sets.append(index_set)
  return sets
