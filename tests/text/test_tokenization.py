"""Tokenizer parity: bert_jax.text.tokenization vs HF BertTokenizerFast vs a pure-Python transcription
of google-research/bert's tokenization.py (written here, so the test is not tautological)."""

import unicodedata

import numpy as np
import pytest

from bert_jax.data import SAMPLE_CORPUS
from bert_jax.text.tokenization import Tokenizer, VocabError, infer_lower_case
from bert_jax.text.vocab import train_vocab

# ----------------------------------------------------------------- google-research/bert, by hand


def _is_whitespace(c):
  return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _is_control(c):
  if c in "\t\n\r":
    return False
  return unicodedata.category(c) in ("Cc", "Cf")


def _is_punctuation(c):
  cp = ord(c)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(c).startswith("P")


def _is_chinese_char(cp):
  return any(lo <= cp <= hi for lo, hi in (
      (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
      (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


class ReferenceTokenizer:
  """BasicTokenizer + WordpieceTokenizer of google-research/bert tokenization.py."""

  def __init__(self, vocab_file, do_lower_case, max_input_chars_per_word=200):
    self.vocab = {}
    with open(vocab_file, encoding="utf-8") as f:
      for i, line in enumerate(f):
        self.vocab[line.strip()] = i
    self.lower = do_lower_case
    self.max_chars = max_input_chars_per_word

  def _basic(self, text):
    out = []
    for c in text:
      cp = ord(c)
      if cp == 0 or cp == 0xFFFD or _is_control(c):
        continue
      out.append(" " if _is_whitespace(c) else c)
    text = "".join(out)
    text = "".join(f" {c} " if _is_chinese_char(ord(c)) else c for c in text)
    split_tokens = []
    for token in text.strip().split():
      if self.lower:
        token = token.lower()
        token = "".join(c for c in unicodedata.normalize("NFD", token)
                        if unicodedata.category(c) != "Mn")
      words, start_new = [], True
      for c in token:
        if _is_punctuation(c):
          words.append([c])
          start_new = True
        else:
          if start_new:
            words.append([])
          start_new = False
          words[-1].append(c)
      split_tokens.extend("".join(w) for w in words)
    return " ".join(split_tokens).strip().split()

  def _wordpiece(self, token):
    chars = list(token)
    if len(chars) > self.max_chars:
      return ["[UNK]"]
    pieces, start = [], 0
    while start < len(chars):
      end, cur = len(chars), None
      while start < end:
        sub = "".join(chars[start:end])
        if start > 0:
          sub = "##" + sub
        if sub in self.vocab:
          cur = sub
          break
        end -= 1
      if cur is None:
        return ["[UNK]"]
      pieces.append(cur)
      start = end
    return pieces

  def encode(self, text):
    return [self.vocab[p] for t in self._basic(text) for p in self._wordpiece(t)]


# ----------------------------------------------------------------- fixtures

EXTRA_TOKENS = ["中", "文", "字", "日", "本", "é", "##é", "café", "naïve", "ü", "##ü", "ß", "Σ",
                "σ", "ς", "ñ", "##ñ", "á", "İ", "i", "##̇", "ﬁ", "€", "¿", "«", "»", "—", "…"]


def _sample_lines(step=3):
  with open(SAMPLE_CORPUS, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f][::step]


HARD_CASES = [
    "", "   ", "\n", "Héllo Wörld, CAFÉ naïve résumé Ñandú", "中文字 日本語 and 中文",
    "control\x00chars\x07here\x1b[0m and\ufeffbom\u200bzero-width", "tabs\tand\r\nnewlines",
    "odd\u00a0spaces\u2003em\u3000ideographic\u2028line\u2029para\u0085nel\x0bvt\x0cff",
    "a" * 201, "supercalifragilistic" * 11, "x" * 99 + " short", "ﬁne «quotes» — dash… ¿qué?",
    "ΣΊΣΥΦΟΣ σίσυφος", "İstanbul straße", "emoji 😀 👍🏽 and math ∑∫√", "\ufffd replaced \ufffd",
    "don't stop-believing (really) [maybe] {ok}; #hash @at $100.00 50% a+b=c",
    "combining e\u0301 vs é", "MiXeD CaSe WoRdS", "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ",
]


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def vocab(request, tmp_path_factory):
  lower = request.param
  out = tmp_path_factory.mktemp("uncased" if lower else "cased")
  path = train_vocab(SAMPLE_CORPUS, str(out), vocab_size=3000, lower_case=lower)
  with open(path, encoding="utf-8") as f:
    present = set(f.read().split("\n"))
  with open(path, "a", encoding="utf-8") as f:
    f.writelines(t + "\n" for t in EXTRA_TOKENS
                 if t not in present and (not lower or t == t.lower()))
  return path, lower


# ----------------------------------------------------------------- tests


def test_parity_with_reference_and_hf(vocab):
  from transformers import BertTokenizerFast
  path, lower = vocab
  ours = Tokenizer.from_file(path)
  assert ours.lower_case == lower  # inferred from the vocab
  reference = ReferenceTokenizer(path, lower)
  hf = BertTokenizerFast(vocab=path, do_lower_case=lower, tokenize_chinese_chars=True)
  assert len(hf) == ours.vocab_size
  texts = _sample_lines() + HARD_CASES
  got = ours.encode_batch(texts)
  assert len(got) == len(texts)
  for text, ids in zip(texts, got):
    assert ids == reference.encode(text), text
    # HF's WordPiece gives [UNK] above 100 characters, BERT above 200: compare the rest.
    if not any(100 < len(w) <= 200 for w in text.split()):
      assert ids == hf.encode(text, add_special_tokens=False), text
  assert sum(len(ids) for ids in got) > 20_000


def test_ascii_fast_path_equals_the_reference(vocab):
  """ASCII text skips HF's BertNormalizer: every ASCII character, alone and in random strings
  (control characters, tabs, punctuation, upper case), still gives the reference's ids."""
  import random
  path, lower = vocab
  ours, reference = Tokenizer.from_file(path), ReferenceTokenizer(path, lower)
  every = "".join(map(chr, range(128)))
  rnd = random.Random(0)
  texts = [every, *every, *(
      "".join(rnd.choice(every) for _ in range(rnd.randint(1, 60))) for _ in range(500))]
  assert all(t.isascii() for t in texts)
  for text, ids in zip(texts, ours.encode_batch(texts)):
    assert ids == reference.encode(text), repr(text)


def test_over_long_words(vocab):
  path, lower = vocab
  ours = Tokenizer.from_file(path)
  reference = ReferenceTokenizer(path, lower)
  assert ours.encode("a" * 201) == [ours.unk_id]
  word = "parameter" * 16  # 144 characters: BERT segments it, HF BertTokenizerFast says [UNK]
  assert ours.encode(word) == reference.encode(word) != [ours.unk_id]
  assert ours.encode("") == [] and ours.encode_batch([]) == []


def test_special_ids_and_word_starts(vocab):
  path, _ = vocab
  tok = Tokenizer.from_file(path)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  tokens = tok.tokens
  assert tok.vocab_size == len(tokens) == len(tok.is_word_start)
  expected = np.array([not t.startswith("##") for t in tokens])
  np.testing.assert_array_equal(tok.is_word_start, expected)
  assert (~tok.is_word_start).sum() > 100


def test_lower_case_inference():
  assert infer_lower_case(["[PAD]", "[CLS]", "the", "##s"])
  assert not infer_lower_case(["[PAD]", "The", "##s"])


def test_vocab_errors(tmp_path):
  with pytest.raises(VocabError, match="does not exist"):
    Tokenizer.from_file(str(tmp_path / "missing.txt"))
  bad = tmp_path / "vocab.txt"
  bad.write_text("[PAD]\n[UNK]\n[CLS]\nthe\n", encoding="utf-8")
  with pytest.raises(VocabError) as e:
    Tokenizer.from_file(str(bad))
  assert str(e.value) == (f"vocab file {bad} lacks the special token(s) [SEP] [MASK]: add them "
                          f"(a new vocab from python -m bert_jax.vocab has them at ids 0-4)")


def test_sentencepiece(tmp_path):
  import sentencepiece as spm
  path = train_vocab(SAMPLE_CORPUS, str(tmp_path), vocab_size=800, kind="sentencepiece")
  tok = Tokenizer.from_file(path)
  assert tok.kind == "sentencepiece"
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  sp = spm.SentencePieceProcessor(model_file=path)
  texts = _sample_lines(step=50) + ["", "Unicode ünïcödé 中文"]
  assert tok.encode_batch(texts) == [sp.encode(t) for t in texts]
  starts = np.array([sp.id_to_piece(i).startswith("\u2581") for i in range(sp.get_piece_size())])
  starts[:5] = True
  np.testing.assert_array_equal(tok.is_word_start, starts)
  assert 0 < starts.sum() < len(starts)


def test_encode_with_offsets(vocab, tmp_path):
  """Same ids as encode_batch, and each id's characters in the ORIGINAL text (accents and case
  kept), for WordPiece and SentencePiece: what SQuAD answers map through."""
  path, lower = vocab
  tok = Tokenizer.from_file(path)
  texts = _sample_lines(step=200) + HARD_CASES[:6] + ["  Héllo,   World!  ", ""]
  out = tok.encode_with_offsets(texts)
  assert [ids for ids, _ in out] == tok.encode_batch(texts)
  (ids, spans), = tok.encode_with_offsets(["  Héllo,   World!  "])
  assert "".join("  Héllo,   World!  "[a:b] for a, b in spans) == "Héllo,World!"
  for text, (ids, spans) in zip(texts, out):
    assert all(0 <= a <= b <= len(text) for a, b in spans)
    assert [a for a, _ in spans] == sorted(a for a, _ in spans)
  sp = Tokenizer.from_file(train_vocab(SAMPLE_CORPUS, str(tmp_path), vocab_size=800,
                                       kind="sentencepiece"))
  out = sp.encode_with_offsets(texts)
  assert [ids for ids, _ in out] == sp.encode_batch(texts)
  (ids, spans), = sp.encode_with_offsets(["The function returns."])
  assert "".join("The function returns."[a:b] for a, b in spans) == "The function returns."
