"""Chinese word segmentation for whole-word masking (Chinese BERT-wwm, Cui et al. 2019).

BERT's tokenizer makes every CJK character its own token, so WordPiece's `##` grouping never
joins Chinese characters into words and whole-word masking would mask single characters.
Chinese BERT-wwm segments the text with a word segmenter and masks all characters of a word
together. This module gives, per token, whether it begins a word:

  word_start_flags(["使", "用", "apache", "服", "务", "器"], "使用 Apache 服务器",
                   get_segmenter("jieba"))   # -> [True, False, True, True, False, False]

It follows HF transformers' `examples/research_projects/mlm_wwm/run_chinese_ref.py` (the
reference-file step of Chinese whole-word masking), with `jieba` (`jieba.lcut`, HMM on, its
default dictionary) in place of LTP as the segmenter:
  * `get_chinese_word`: the word set is the segmenter's words of the text that are longer than
    one character and consist only of CJK characters (`_is_chinese_char`: the code-point ranges
    of BERT's tokenizer);
  * `add_sub_symbol`: greedy longest match over the token list: at each CJK token, try the
    concatenation of the next i tokens, i from min(tokens left, longest word) down to 2; on the
    first that is in the set, tokens 2..i of it are continuations, and the scan resumes after
    it; otherwise move on one token;
  * `prepare_ref` keeps a continuation only where the token is one CJK character, and HF's
    `DataCollatorForWholeWordMask` then groups those together with the `##` pieces.
So a token begins a word unless it is a `##` piece or such a continuation; with no segmenter,
only the `##` rule applies (English whole-word masking as before). Mixed Chinese/English text
works: non-CJK tokens never start or join a Chinese match and keep their `##` grouping.

Like HF, the match is on the set of the text's words, not on their positions: a word of the set
is matched wherever its characters occur, even where the segmenter split them differently.
One departure: the set also holds each word's NFD form, because an uncased (accent-stripping)
tokenizer NFD-normalises CJK compatibility ideographs (U+F900-FAFF, U+2F800-2FA1F) to other
code points, which HF's comparison of raw words with normalised tokens would miss. For all other
characters NFD is the identity, so the result equals HF's.

jieba is optional (`pip install jieba`, or the `zh` extra); it is imported by
`get_segmenter("jieba")` and its dictionary loaded on first use, once per process (about 1 s),
with its log messages silenced. Segmentation is deterministic given jieba's default dictionary;
a private `jieba.Tokenizer` is used, so words added to jieba's global dictionary elsewhere do
not change it.
"""

from __future__ import annotations

import logging
import threading
import unicodedata

from bert_jax.errors import DataError

SEGMENTERS = ("none", "jieba")

_JIEBA_MISSING = ("--segmenter=jieba: the jieba package is not installed; pip install jieba "
                  "(or pip install 'bert_jax[zh]')")
_jieba_tokenizer = None  # the process's jieba.Tokenizer, made on first use
_jieba_lock = threading.Lock()


def _is_chinese_char(cp: int) -> bool:
  """A CJK ideograph, by the code-point ranges of BERT's tokenizer (and HF run_chinese_ref)."""
  return ((0x4E00 <= cp <= 0x9FFF) or (0x3400 <= cp <= 0x4DBF) or (0x20000 <= cp <= 0x2A6DF)
          or (0x2A700 <= cp <= 0x2B73F) or (0x2B740 <= cp <= 0x2B81F)
          or (0x2B820 <= cp <= 0x2CEAF) or (0xF900 <= cp <= 0xFAFF)
          or (0x2F800 <= cp <= 0x2FA1F))


def _is_chinese(word: str) -> bool:
  return all(_is_chinese_char(ord(c)) for c in word)


def _import_jieba():
  try:
    import jieba
  except ImportError:
    raise DataError(_JIEBA_MISSING) from None
  return jieba


def _jieba():
  """The process's jieba tokenizer, dictionary loaded (once), log messages silenced."""
  global _jieba_tokenizer
  if _jieba_tokenizer is None:
    with _jieba_lock:
      if _jieba_tokenizer is None:
        jieba = _import_jieba()
        jieba.setLogLevel(logging.WARNING)  # "Building prefix dict ..." goes to stderr at DEBUG
        tokenizer = jieba.Tokenizer()  # default dictionary; private, so jieba.add_word elsewhere
        tokenizer.initialize()         # does not change our segmentation
        _jieba_tokenizer = tokenizer
  return _jieba_tokenizer


class Segmenter:
  """A word segmenter: `words(text)` -> the text cut into words (all characters kept, in order).

  Holds no state but its name (the jieba tokenizer is per process), so it pickles cheaply.
  """

  def __init__(self, name: str):
    if name != "jieba":
      raise DataError(f"--segmenter={name}: must be one of {', '.join(SEGMENTERS)}")
    self.name = name

  def words(self, text: str) -> list[str]:
    return _jieba().lcut(text)  # HMM=True (jieba's default): new words found too

  def __repr__(self):
    return f"Segmenter({self.name!r})"


def get_segmenter(name: str):
  """None for "none"; a `Segmenter` for "jieba" (DataError if jieba is not installed).

  Raises DataError for any other name.
  """
  if name == "none":
    return None
  if name == "jieba":
    _import_jieba()  # fail here, at start-up, not on the first sentence
    return Segmenter(name)
  raise DataError(f"--segmenter={name}: must be one of {', '.join(SEGMENTERS)}")


def _chinese_words(words) -> set[str]:
  """HF get_chinese_word (multi-character, all-CJK words), plus each one's NFD form."""
  chinese = {w for w in words if len(w) > 1 and _is_chinese(w)}
  return chinese | {unicodedata.normalize("NFD", w) for w in chinese}


def _continuations(tokens: list[str], chinese_words: set[str]) -> list[bool]:
  """HF add_sub_symbol + prepare_ref: True where a token continues a segmented Chinese word."""
  cont = [False] * len(tokens)
  if not chinese_words:
    return cont
  max_word_len = max(len(w) for w in chinese_words)
  start, end = 0, len(tokens)
  while start < end:
    matched = 0
    if _is_chinese(tokens[start]):
      for i in range(min(end - start, max_word_len), 1, -1):
        if "".join(tokens[start:start + i]) in chinese_words:
          matched = i
          break
    if matched:
      for j in range(start + 1, start + matched):
        # prepare_ref records a continuation only for a one-CJK-character token (all of them,
        # with BERT's tokenizer, which splits every CJK character out).
        cont[j] = len(tokens[j]) == 1 and _is_chinese_char(ord(tokens[j]))
      start += matched
    else:
      start += 1
  return cont


def word_start_flags(tokens: list[str], text: str, segmenter) -> list[bool]:
  """One bool per token: True where the token begins a word (whole-word masking's unit).

  tokens: the WordPiece token strings of `text`, from the whole text, as BERT's tokenizer gives
    them (possibly lower-cased and accent-stripped; every CJK character its own token).
  segmenter: None (a token begins a word unless it is a `##` piece), or a `Segmenter` (also,
    unless it continues a multi-character Chinese word of the text, as HF run_chinese_ref).
  """
  flags = [not t.startswith("##") for t in tokens]
  if segmenter is None:
    return flags
  cont = _continuations(tokens, _chinese_words(segmenter.words(text)))
  return [f and not c for f, c in zip(flags, cont)]
