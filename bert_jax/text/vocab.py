"""Vocabulary training: WordPiece (HF `tokenizers`) or SentencePiece, BERT's special tokens first.

  python -m bert_jax.vocab --input='corpus/*.txt' --output_dir=vocab --vocab_size=30522 \
      --kind=wordpiece --lower_case

WordPiece: HF `tokenizers`' WordPiece trainer behind BERT's normalizer and pre-tokenizer (the
same pipeline `bert_jax.text.tokenization` encodes with), writing `vocab.txt`.
SentencePiece: `sentencepiece` (unigram), writing `spm.model`, `spm.vocab` and `vocab.txt` (the
pieces, one per line, for reading). Prepare with `--vocab=DIR/spm.model`.

A new vocabulary has BERT's special tokens first, at fixed ids:
  [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4
(google-research/bert's released vocabularies put [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102,
[MASK]=103 after 99 [unusedN] slots; nothing in bert_jax depends on the ids, only on the tokens.)

Reproducibility: HF `tokenizers`' WordPiece trainer (BPE underneath) breaks ties between equally
frequent merges by hash-map order, so two runs on the same text can give slightly different
vocabularies (huggingface/tokenizers issue #1794); SentencePiece samples its input with a random
seed. Build a vocabulary once and keep the file: the dataset records its sha256 and carries a
copy, and everything downstream of the file is deterministic.
"""

from __future__ import annotations

import os

from absl import logging

from bert_jax import paths
from bert_jax.errors import DataError
from bert_jax.text.tokenization import SPECIAL_TOKENS

KINDS = ("wordpiece", "sentencepiece")


def train_vocab(input_pattern: str, output_dir: str, vocab_size: int, kind: str = "wordpiece",
                lower_case: bool = False, overwrite: bool = False,
                limit_alphabet: int | None = None, min_frequency: int = 2) -> str:
  """Trains a vocabulary from the files matching `input_pattern`; returns the path to pass as
  prepare's --vocab (vocab.txt or spm.model). Raises DataError for bad input."""
  if kind not in KINDS:
    raise DataError(f"--kind={kind}: must be one of {', '.join(KINDS)}")
  if vocab_size < len(SPECIAL_TOKENS) + 1:
    raise DataError(f"--vocab_size={vocab_size}: must be larger than {len(SPECIAL_TOKENS)}")
  files = paths.expand_inputs(input_pattern)
  target = os.path.join(output_dir, "vocab.txt" if kind == "wordpiece" else "spm.model")
  if os.path.exists(target) and not overwrite:
    raise DataError(f"--output_dir {output_dir}: {os.path.basename(target)} already exists; "
                    f"pass --overwrite to replace it")
  os.makedirs(output_dir, exist_ok=True)
  if kind == "wordpiece":
    _train_wordpiece(files, target, vocab_size, lower_case, limit_alphabet, min_frequency)
  else:
    _train_sentencepiece(files, output_dir, vocab_size, lower_case)
  logging.info("wrote %s", target)
  return target


def _train_wordpiece(files, target, vocab_size, lower_case, limit_alphabet, min_frequency):
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

  tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tokenizer.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=lower_case, lowercase=lower_case)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  # No alphabet limit by default: a Chinese corpus has thousands of characters, each a token
  # (BERT splits CJK text into characters); the old 1000 made a third of them [UNK].
  limit = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
      continuing_subword_prefix="##", show_progress=False, **limit)
  tokenizer.train(files, trainer)
  vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
  tokens = [t for t, _ in vocab]
  assert tokens[:len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS), tokens[:len(SPECIAL_TOKENS)]
  paths.atomic_write(target, "".join(t + "\n" for t in tokens))


def _train_sentencepiece(files, output_dir, vocab_size, lower_case):
  import sentencepiece as spm

  prefix = os.path.join(output_dir, "spm")
  spm.SentencePieceTrainer.train(
      input=files, model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
      pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="[PAD]", unk_piece="[UNK]",
      user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
      normalization_rule_name="nmt_nfkc_cf" if lower_case else "nmt_nfkc",
      character_coverage=0.9995, hard_vocab_limit=False, input_sentence_size=10_000_000,
      shuffle_input_sentence=True, num_threads=os.cpu_count() or 1, minloglevel=2)
  sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
  with open(os.path.join(output_dir, "vocab.txt"), "w", encoding="utf-8") as f:
    f.writelines(sp.id_to_piece(i) + "\n" for i in range(sp.get_piece_size()))
