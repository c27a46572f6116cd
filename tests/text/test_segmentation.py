"""Chinese whole-word masking's word starts (bert_jax.text.segmentation, jieba), vocabularies
trained on Chinese text, and the errors. Checked against a transcription, written here, of HF
transformers' examples/research_projects/mlm_wwm/run_chinese_ref.py (transformers 5 ships no
such function to import)."""

import os
import pickle
import subprocess
import sys

import pytest

from bert_jax.errors import DataError
from bert_jax.text import segmentation
from bert_jax.text.segmentation import SEGMENTERS, Segmenter, get_segmenter, word_start_flags
from bert_jax.text.tokenization import SPECIAL_TOKENS, Tokenizer, read_vocab
from bert_jax.text.vocab import train_vocab
from helpers import REPO

SLICE = REPO / "tests" / "fixtures" / "manpages-zh-slice.txt"
T, F = True, False


def _cjk(c):
  cp = ord(c)
  return any(lo <= cp <= hi for lo, hi in (
      (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
      (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def _all_cjk(s):
  return all(_cjk(c) for c in s)


class Words:
  """A stand-in segmenter that gives fixed words."""

  def __init__(self, *words):
    self._words = list(words)

  def words(self, text):
    return self._words


# ---------------------------------------------------------- HF run_chinese_ref.py, transcribed


def hf_word_starts(tokens, words):
  """HF's pipeline for one text: get_chinese_word on the segmenter's words, add_sub_symbol on
  the tokens, prepare_ref's positions (a "##"-marked one-CJK-character token), and then
  DataCollatorForWholeWordMask's grouping (a "##" token, original or marked, joins the word
  before it)."""
  chinese = {w for w in words if len(w) > 1 and _all_cjk(w)}
  marked = list(tokens)
  if chinese:
    longest = max(map(len, chinese))
    start = 0
    while start < len(marked):
      step = 1
      if _all_cjk(marked[start]):
        for i in range(min(len(marked) - start, longest), 1, -1):
          if "".join(marked[start:start + i]) in chinese:
            for j in range(start + 1, start + i):
              marked[j] = "##" + marked[j]
            step = i
            break
      start += step
  ref = {i for i, t in enumerate(marked)
         if t.startswith("##") and len(t) == 3 and _cjk(t[2])}
  return [not (t.startswith("##") or i in ref) for i, t in enumerate(tokens)]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def zh_vocab(tmp_path_factory):
  """An uncased WordPiece vocabulary trained on the Chinese slice."""
  return train_vocab(str(SLICE), str(tmp_path_factory.mktemp("zh") / "vocab"), vocab_size=2000,
                     kind="wordpiece", lower_case=True)


@pytest.fixture(scope="module")
def jieba_segmenter():
  pytest.importorskip("jieba")
  return get_segmenter("jieba")


def _sentences():
  return [line for line in SLICE.read_text(encoding="utf-8").split("\n") if line.strip()]


# --------------------------------------------------------------------------------- tests


def test_mixed_sentence(tmp_path, jieba_segmenter):
  text = "使用 Apache 服务器进行测试"
  # jieba's dictionary has 服务器进行 as one word: 使用 / Apache / 服务器进行 / 测试.
  words = jieba_segmenter.words(text)
  assert [w for w in words if w.strip()] == ["使用", "Apache", "服务器进行", "测试"]
  # An uncased tokenizer: Apache -> ap ##ache, each CJK character a token.
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join([*SPECIAL_TOKENS, "ap", "##ache", *"使用服务器进行测试"]) + "\n",
                   encoding="utf-8")
  tok = Tokenizer.from_file(str(vocab))
  tokens = tok.convert_ids_to_tokens(tok.encode(text))
  assert tokens == ["使", "用", "ap", "##ache", "服", "务", "器", "进", "行", "测", "试"]
  assert word_start_flags(tokens, text, jieba_segmenter) == [T, F, T, F, T, F, F, F, F, T, F]
  # Without a segmenter only WordPiece's ## grouping: every CJK character is a word.
  assert word_start_flags(tokens, text, None) == [T, T, T, F, T, T, T, T, T, T, T]
  assert word_start_flags(tokens, text, get_segmenter("none")) == word_start_flags(
      tokens, text, None)
  # The module docstring's example.
  assert word_start_flags(["使", "用", "apache", "服", "务", "器"], "使用 Apache 服务器",
                          jieba_segmenter) == [T, F, T, T, F, F]
  assert word_start_flags([], "", jieba_segmenter) == []


def test_greedy_longest_match_as_hf():
  # Longest word of the set first, then the scan resumes after it.
  tokens = list("北京大学生")
  seg = Words("北京", "北京大学", "大学生")
  assert word_start_flags(tokens, "", seg) == [T, F, F, F, T] == hf_word_starts(
      tokens, seg.words(""))
  # The set, not the positions: 别名 (a word elsewhere in the text) is matched before 名所.
  tokens = list("给定别名所对应")
  seg = Words("给定", "别", "名所", "对应", "别名")
  assert word_start_flags(tokens, "", seg) == [T, F, T, F, T, T, F]
  # Only multi-character all-CJK words count; [UNK] and non-CJK tokens break a word.
  tokens = ["a", "##1", "中", "[UNK]", "国", "x", "中", "国"]
  seg = Words("a1", "中", "中[UNK]国", "中国", "国x")
  assert word_start_flags(tokens, "", seg) == [T, F, T, T, T, T, T, F]
  assert word_start_flags(tokens, "", seg) == hf_word_starts(tokens, seg.words(""))
  # A CJK compatibility ideograph: an uncased tokenizer gives its NFD form (U+F900 -> U+8C48);
  # either form of the tokens matches the segmenter's word (HF's matches the raw form only).
  seg = Words("\uf900\u4e00")
  assert word_start_flags(["\uf900", "\u4e00"], "", seg) == [T, F]
  assert word_start_flags(["\u8c48", "\u4e00"], "", seg) == [T, F]
  assert hf_word_starts(["\u8c48", "\u4e00"], seg.words("")) == [T, T]


def test_vocab_on_chinese(zh_vocab):
  """BERT's normalizer splits every CJK character out: the WordPiece vocabulary holds single
  CJK characters (every one of the slice's; no multi-character or ## CJK pieces), and encoding
  gives one token per CJK character."""
  tokens = read_vocab(zh_vocab)
  cjk_tokens = [t for t in tokens if any(_cjk(c) for c in t)]
  text = SLICE.read_text(encoding="utf-8")
  chars = {c for c in text if _cjk(c)}
  assert len(chars) > 600
  assert set(cjk_tokens) == chars and all(len(t) == 1 for t in cjk_tokens)
  tok = Tokenizer.from_file(zh_vocab)
  assert tok.lower_case
  for sentence, ids in zip(_sentences(), tok.encode_batch(_sentences())):
    pieces = tok.convert_ids_to_tokens(ids)
    assert tok.unk_id not in ids, sentence
    assert [c for c in sentence if _cjk(c)] == [t for t in pieces if _all_cjk(t)], sentence
    assert all(len(t) == 1 for t in pieces if any(_cjk(c) for c in t)), sentence


def test_fixture_words(zh_vocab, jieba_segmenter):
  """Every multi-character Chinese word jieba finds is one unit: its first character starts a
  word, the rest continue it, except where HF's set-based greedy match has taken a word of the
  text that overlaps it; the flags equal HF's on every sentence."""
  tok = Tokenizer.from_file(zh_vocab)
  found, kept, tokens_seen, starts, starts_none = 0, 0, 0, 0, 0
  for sentence in _sentences():
    ids, offsets = tok.encode_with_offsets([sentence])[0]
    tokens = tok.convert_ids_to_tokens(ids)
    flags = word_start_flags(tokens, sentence, jieba_segmenter)
    words = jieba_segmenter.words(sentence)
    assert "".join(words) == sentence
    assert flags == hf_word_starts(tokens, words), sentence
    tokens_seen += len(tokens)
    starts += sum(flags)
    starts_none += sum(word_start_flags(tokens, sentence, None))
    chinese = {w for w in words if len(w) > 1 and _all_cjk(w)}
    token_at = {span: i for i, span in enumerate(offsets)}
    at = 0
    for w in words:
      begin, at = at, at + len(w)
      if w not in chinese:
        continue
      idx = [token_at.get((begin + k, begin + k + 1)) for k in range(len(w))]
      if None in idx or idx != list(range(idx[0], idx[0] + len(w))):
        continue  # not one token per character
      found += 1
      if [flags[i] for i in idx] == [T] + [F] * (len(w) - 1):
        kept += 1
        continue
      # Otherwise another word of the text, spelled by tokens overlapping this one, was matched.
      assert any("".join(tokens[s:s + len(v)]) == v
                 for v in chinese - {w}
                 for s in range(max(0, idx[0] - len(v) + 1), idx[-1] + 1)), (w, sentence)
  # Measured on the slice (jieba 0.42.1): 4,189 words found, 4,187 kept (名所 after 别名 and
  # 改为 after 更改 are the two taken); 11,017 word starts of 16,184 tokens (15,663 without).
  assert 3500 < found < 5000, found
  assert found - kept <= found // 200, (found, kept)
  assert 0.6 < starts / tokens_seen < 0.75 and starts_none > 0.95 * tokens_seen, (
      starts, starts_none, tokens_seen)


def test_segmenter_process_and_pickle(tmp_path, jieba_segmenter):
  """jieba is silent (its "Building prefix dict ..." lines are not on stderr), also when it
  builds its dictionary cache from scratch, and deterministic across processes; a Segmenter
  pickles (only its name)."""
  text = "使用 Apache 服务器进行测试。我们测试网站的性能"
  code = ("from bert_jax.text.segmentation import get_segmenter\n"
          f"print(get_segmenter('jieba').words({text!r}))\n")
  # A fresh temporary directory: no jieba.cache there, so jieba builds and writes one.
  env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                     timeout=120)
  assert r.returncode == 0, r.stderr
  assert (tmp_path / "jieba.cache").is_file()
  for line in ("Building prefix dict", "Loading model", "Dumping model", "Prefix dict"):
    assert line not in r.stderr, r.stderr
  assert r.stdout.strip() == repr(jieba_segmenter.words(text))
  copy = pickle.loads(pickle.dumps(jieba_segmenter))
  assert isinstance(copy, Segmenter) and copy.name == "jieba" and repr(copy) == "Segmenter('jieba')"
  assert copy.words(text) == jieba_segmenter.words(text)


def test_errors(monkeypatch):
  assert SEGMENTERS == ("none", "jieba") and get_segmenter("none") is None
  for name in ("ltp", "Jieba", ""):
    with pytest.raises(DataError) as e:
      get_segmenter(name)
    assert str(e.value) == f"--segmenter={name}: must be one of none, jieba"
  # jieba not installed: an import of it fails, and nothing is cached.
  monkeypatch.setitem(sys.modules, "jieba", None)
  monkeypatch.setattr(segmentation, "_jieba_tokenizer", None)
  message = ("--segmenter=jieba: the jieba package is not installed; pip install jieba "
             "(or pip install 'bert_jax[zh]')")
  with pytest.raises(DataError) as e:
    get_segmenter("jieba")
  assert str(e.value) == message
  with pytest.raises(DataError) as e:
    Segmenter("jieba").words("中文")
  assert str(e.value) == message
  # Without a segmenter nothing needs jieba.
  assert word_start_flags(["中", "文", "##s"], "中文s", None) == [T, T, F]
