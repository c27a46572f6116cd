"""python -m bert_jax.vocab: WordPiece and SentencePiece vocabularies, errors."""

import os
import subprocess
import sys

from bert_jax.data import SAMPLE_CORPUS
from bert_jax.text.tokenization import SPECIAL_TOKENS, Tokenizer, read_vocab
from bert_jax.text.vocab import train_vocab


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "bert_jax.vocab", *args], capture_output=True,
                        text=True, env=env, timeout=120)


def test_wordpiece_cli(tmp_path):
  r = _run(f"--input={SAMPLE_CORPUS}", f"--output_dir={tmp_path}", "--vocab_size=1500",
           "--lower_case")
  assert r.returncode == 0, r.stderr
  path = r.stdout.strip()
  assert path == str(tmp_path / "vocab.txt")
  tokens = read_vocab(path)
  assert tokens[:5] == list(SPECIAL_TOKENS) and 1000 < len(tokens) <= 1500
  assert any(t.startswith("##") for t in tokens) and all(t == t.lower() for t in tokens[5:])
  tok = Tokenizer.from_file(path)
  assert tok.lower_case and tok.encode("The module") == [tokens.index("the"),
                                                         tokens.index("module")]
  # An existing vocabulary is kept unless --overwrite.
  r = _run(f"--input={SAMPLE_CORPUS}", f"--output_dir={tmp_path}", "--vocab_size=1500")
  assert r.returncode == 2
  assert r.stderr.strip() == (f"error: --output_dir {tmp_path}: vocab.txt already exists; "
                              f"pass --overwrite to replace it")
  r = _run(f"--input={SAMPLE_CORPUS}", f"--output_dir={tmp_path}", "--vocab_size=1500",
           "--overwrite")
  assert r.returncode == 0, r.stderr
  assert not Tokenizer.from_file(path).lower_case  # cased this time


def test_sentencepiece_cli(tmp_path):
  r = _run(f"--input={SAMPLE_CORPUS}", f"--output_dir={tmp_path}", "--vocab_size=700",
           "--kind=sentencepiece")
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == str(tmp_path / "spm.model")
  tokens = read_vocab(str(tmp_path / "vocab.txt"))
  assert tokens[:5] == list(SPECIAL_TOKENS) and len(tokens) == 700
  tok = Tokenizer.from_file(str(tmp_path / "spm.model"))
  assert tok.vocab_size == 700 and tok.mask_id == 4


def test_missing_input(tmp_path):
  r = _run(f"--input={tmp_path}/nothing*.txt", f"--output_dir={tmp_path}/out")
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert r.stderr.strip() == (f"error: --input {tmp_path}/nothing*.txt: no such file; pass an "
                              f"existing text file or glob")
  assert not os.path.exists(tmp_path / "out")


def test_wordpiece_keeps_every_chinese_character(tmp_path):
  # 1,500 distinct CJK characters (more than tokenizers' old limit_alphabet=1000 let through,
  # which made a third of a real Chinese corpus's characters [UNK]).
  chars = [chr(0x4E00 + i) for i in range(1500)]
  lines = ["".join(chars[(i + k) % 1500] for k in range(20)) for i in range(0, 3000, 7)]
  corpus = tmp_path / "zh.txt"
  corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
  tok = Tokenizer.from_file(train_vocab(str(corpus), str(tmp_path / "v"), vocab_size=3000))
  assert set(chars) <= set(tok.tokens)
  ids = tok.encode("".join(chars[:50]))
  assert len(ids) == 50 and tok.unk_id not in ids  # one token per character
