"""Vocabulary training: WordPiece, byte-level BPE (HF `tokenizers`) or SentencePiece, BERT's
special tokens first.

  python -m bert_jax.vocab --input='corpus/*.txt' --output_dir=vocab --vocab_size=30522 \
      --kind=wordpiece --lower_case

WordPiece: HF `tokenizers`' WordPiece trainer behind BERT's normalizer and pre-tokenizer (the
same pipeline `bert_jax.text.tokenization` encodes with), writing `vocab.txt`.
SentencePiece: `sentencepiece` (unigram), writing `spm.model`, `spm.vocab` and `vocab.txt` (the
pieces, one per line, for reading). Prepare with `--vocab=DIR/spm.model`.
BPE (`--kind=bpe`): a byte-level BPE as ModernBERT's / RoBERTa's (NFC normalizer, plus Lowercase
with --lower_case; ByteLevel pre-tokenizer with add_prefix_space=False as GPT-2 and ModernBERT;
ByteLevel decoder; [MASK] strips the space before it, as ModernBERT's), with a post-processor
"[CLS] $A [SEP]" / "[CLS] $A [SEP] $B:1 [SEP]:1", writing `tokenizer.json` and a
`tokenizer_config.json`, so `transformers.AutoTokenizer.from_pretrained(DIR)` (offline) gives the
ids our pipeline gives a sentence with [CLS]/[SEP]. No `vocab.txt` (it would read as a WordPiece
vocabulary). Prepare with `--vocab=DIR/tokenizer.json`.

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

import json
import os

from absl import logging

from bert_jax import paths
from bert_jax.errors import DataError
from bert_jax.text.tokenization import SPECIAL_TOKENS

KINDS = ("wordpiece", "sentencepiece", "bpe")
_TARGETS = {"wordpiece": "vocab.txt", "sentencepiece": "spm.model", "bpe": "tokenizer.json"}
_BYTES = 256  # a byte-level BPE's alphabet


def train_vocab(input_pattern: str, output_dir: str, vocab_size: int, kind: str = "wordpiece",
                lower_case: bool = False, overwrite: bool = False,
                limit_alphabet: int | None = None, min_frequency: int = 2) -> str:
  """Trains a vocabulary from the files matching `input_pattern`; returns the path to pass as
  prepare's --vocab (vocab.txt, spm.model or tokenizer.json). Raises DataError for bad input."""
  if kind not in KINDS:
    raise DataError(f"--kind={kind}: must be one of {', '.join(KINDS)}")
  if vocab_size < len(SPECIAL_TOKENS) + 1:
    raise DataError(f"--vocab_size={vocab_size}: must be larger than {len(SPECIAL_TOKENS)}")
  if kind == "bpe" and vocab_size <= len(SPECIAL_TOKENS) + _BYTES:
    raise DataError(f"--vocab_size={vocab_size}: a byte-level BPE needs more than "
                    f"{len(SPECIAL_TOKENS) + _BYTES} (the special tokens and 256 bytes)")
  files = paths.expand_inputs(input_pattern)
  target = os.path.join(output_dir, _TARGETS[kind])
  if os.path.exists(target) and not overwrite:
    raise DataError(f"--output_dir {output_dir}: {os.path.basename(target)} already exists; "
                    f"pass --overwrite to replace it")
  os.makedirs(output_dir, exist_ok=True)
  if kind == "wordpiece":
    _train_wordpiece(files, target, vocab_size, lower_case, limit_alphabet, min_frequency)
  elif kind == "bpe":
    _train_bpe(files, target, vocab_size, lower_case, min_frequency)
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


def _train_bpe(files, target, vocab_size, lower_case, min_frequency):
  from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
  from tokenizers import processors, trainers

  tokenizer = Tokenizer(models.BPE())  # no unk_token: every byte is in the vocabulary
  tokenizer.normalizer = (normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
                          if lower_case else normalizers.NFC())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                     use_regex=True)
  tokenizer.decoder = decoders.ByteLevel()
  pad, unk, cls, sep, mask = SPECIAL_TOKENS
  specials = [AddedToken(t, special=True, normalized=False) for t in (pad, unk, cls, sep)]
  specials.append(AddedToken(mask, special=True, normalized=False, lstrip=True))
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tokenizer.train(files, trainer)
  ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
  assert ids == list(range(len(SPECIAL_TOKENS))), ids
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
      special_tokens=[(cls, ids[2]), (sep, ids[3])])
  paths.atomic_write(target, tokenizer.to_str(pretty=True))
  # transformers.AutoTokenizer.from_pretrained(DIR): the class and the special tokens' roles;
  # token_type_ids too (BERT's segment embeddings), which PreTrainedTokenizerFast omits by default.
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "unk_token": unk,
            "cls_token": cls, "sep_token": sep, "mask_token": mask,
            "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
            "clean_up_tokenization_spaces": False}
  paths.atomic_write(os.path.join(os.path.dirname(target), "tokenizer_config.json"),
                     json.dumps(config, indent=2) + "\n")


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
