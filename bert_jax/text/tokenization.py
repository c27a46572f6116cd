"""Tokenizers for BERT pretraining: WordPiece (`vocab.txt`), SentencePiece (`*.model`) and any
HF `tokenizer.json` (`*.json`: ModernBERT's / RoBERTa's byte-level BPE, a WordPiece, a Unigram).

All sit behind one small interface, `Tokenizer`, built with `Tokenizer.from_file(path)`:

  tok = Tokenizer.from_file("vocab.txt")        # WordPiece; spm.model, tokenizer.json: the others
  ids = tok.encode_batch(["Hello world.", ""])  # list[list[int]], no [CLS]/[SEP] added
  tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tok.unk_id, tok.vocab_size
  tok.is_word_start                              # bool [vocab_size], for whole-word masking
  ids, offsets = tok.encode_with_offsets(["Hello world."])[0]  # + (start, end) chars per id

WordPiece is google-research/bert's `FullTokenizer` (basic tokenizer: text cleanup, CJK
characters split out, punctuation split, lower-casing and accent stripping when uncased; then
greedy longest-match-first WordPiece with `##` continuations, `[UNK]` for a word with no
segmentation or longer than `max_input_chars_per_word`), run by HF `tokenizers` (Rust) with
`BertNormalizer` + `BertPreTokenizer` + `WordPiece`. BERT used max_input_chars_per_word = 200;
HF's `BertTokenizerFast` uses 100. We keep BERT's 200 (the two differ only on words of 101-200
characters).

SentencePiece: `sentencepiece.SentencePieceProcessor`; the special tokens are looked up by piece
(`[CLS]`, `[SEP]`, `[MASK]`, `[PAD]` or `<pad>`, `[UNK]` or the model's unk) and must exist.
A piece starts a word when it begins with "▁" (U+2581).

HF `tokenizer.json` (kind "hf"): the file's own pipeline (normalizer, pre-tokenizer, model), run
by `tokenizers`, the ids transformers' `PreTrainedTokenizerFast` gives with
add_special_tokens=False (a literal special token in the text, e.g. "[MASK]", stays that token,
as there); its padding and truncation settings are switched off. Special ids are looked up by
name, each role on its own: BERT/ModernBERT's `[CLS] [SEP] [MASK] [PAD] [UNK]` first, then
RoBERTa's `<s> </s> <mask> <pad> <unk>`; [UNK] falls back to the model's `unk_token`, then to
GPT-2's `<|endoftext|>` (a byte-level BPE never needs it). `vocab_size` is
`get_vocab_size(with_added_tokens=True)` (or the highest id + 1, if larger); an id the file does
not name has the token "". Word starts follow what the JSON declares: a WordPiece model, tokens
without its `continuing_subword_prefix` ("##"); a ByteLevel pre-tokenizer or decoder, tokens
beginning with "Ġ" (U+0120, a space byte) as fairseq's RoBERTa whole-word masking; Metaspace,
tokens beginning with its replacement ("▁"); otherwise a BPE/Unigram's continuing_subword_prefix,
else every token. With ByteLevel and Metaspace a token of punctuation only also starts a word, and
special tokens always do. With add_prefix_space=False (GPT-2, ModernBERT) a sentence's first word
has no "Ġ" and joins the previous word, as in fairseq. `lower_case` is what the normalizer does
(Lowercase, or BertNormalizer's lowercase); lower_case=True with a cased normalizer lower-cases the
text first, as for SentencePiece.
"""

from __future__ import annotations

import io
import json
import unicodedata

import numpy as np
from etils import epath

from bert_jax.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# BERT's value (google-research/bert tokenization.WordpieceTokenizer); HF uses 100.
MAX_INPUT_CHARS_PER_WORD = 200
_SP_WORD_START = "\u2581"
_BYTE_LEVEL_SPACE = "\u0120"  # "Ġ": byte-level BPE's (GPT-2 bytes_to_unicode) form of " "
# A HF tokenizer.json's special tokens, per role: BERT/ModernBERT's names, then RoBERTa's.
HF_SPECIAL_NAMES = {"[PAD]": ("[PAD]", "<pad>"), "[UNK]": ("[UNK]", "<unk>"),
                    "[CLS]": ("[CLS]", "<s>"), "[SEP]": ("[SEP]", "</s>"),
                    "[MASK]": ("[MASK]", "<mask>")}
_HF_UNK_LAST_RESORT = "<|endoftext|>"  # GPT-2's unk (HF GPT2Tokenizer), after the model's own
# BertNormalizer's clean_text on ASCII: control characters (all of 0x00-0x1F and 0x7F but tab,
# newline and carriage return) removed, those three turned into spaces.
_ASCII_CLEANUP = {c: None for c in (*range(0x20), 0x7F) if chr(c) not in "\t\n\r"}
_ASCII_CLEANUP.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})



class VocabError(UserError):
  """A vocabulary file that cannot be used (missing, or lacking a special token)."""


def read_vocab(path: str) -> list[str]:
  """Tokens of a BERT `vocab.txt` (one per line; line number = id), as google-research/bert reads it."""
  data = epath.Path(path).read_bytes()  # local or gs:// (epath); text mode as open() reads it
  return [line.rstrip("\n").strip() for line in io.TextIOWrapper(io.BytesIO(data), "utf-8")]


def infer_lower_case(tokens: list[str]) -> bool:
  """True for an uncased vocabulary: no token other than `[...]` specials has an upper-case letter."""
  for token in tokens:
    if token.startswith("[") and token.endswith("]"):
      continue
    if token != token.lower():
      return False
  return True


class Tokenizer:
  """A WordPiece, SentencePiece or HF tokenizer.json tokenizer with BERT's special-token ids.

  Attributes:
    kind: "wordpiece", "sentencepiece" or "hf".
    path: the vocabulary file (vocab.txt, *.model or tokenizer.json).
    lower_case: whether text is lower-cased (and, for WordPiece, accent-stripped) first.
    vocab_size: number of ids.
    pad_id, unk_id, cls_id, sep_id, mask_id: ids of the special tokens.
    is_word_start: bool [vocab_size]; False for a piece that continues the previous word
      (WordPiece `##x`; SentencePiece pieces without a leading "▁"; hf: see the module doc).
  """

  def __init__(self, kind: str, path: str, tokens: list[str], special_ids: dict[str, int],
               lower_case: bool, encode_fn, offsets_fn=None, is_word_start=None):
    self.kind = kind
    self.path = path
    self.lower_case = lower_case
    self._tokens = tokens
    self._encode_fn = encode_fn
    self._offsets_fn = offsets_fn
    self.vocab_size = len(tokens)
    self.pad_id = special_ids["[PAD]"]
    self.unk_id = special_ids["[UNK]"]
    self.cls_id = special_ids["[CLS]"]
    self.sep_id = special_ids["[SEP]"]
    self.mask_id = special_ids["[MASK]"]
    if is_word_start is not None:
      starts = is_word_start
    elif kind == "wordpiece":
      starts = [not t.startswith("##") for t in tokens]
    else:
      starts = [t.startswith(_SP_WORD_START) for t in tokens]
    self.is_word_start = np.array(starts, dtype=bool)
    # Special tokens always stand alone.
    self.is_word_start[[self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id]] = True

  @classmethod
  def from_file(cls, path: str, lower_case: bool | None = None) -> "Tokenizer":
    """Loads `path`: `*.model` is SentencePiece, `*.json` a HF `tokenizer.json`, anything else a
    WordPiece `vocab.txt`.

    lower_case: None infers it (WordPiece: uncased iff no token has upper-case letters;
      SentencePiece: False; hf: whether the tokenizer's normalizer lower-cases).
    Raises VocabError for a missing file or a vocabulary without BERT's special tokens.
    """
    if not epath.Path(path).is_file():
      raise VocabError(f"vocab file {path} does not exist: pass a vocab.txt, a SentencePiece "
                       f".model or a tokenizer.json (build one with python -m bert_jax.vocab)")
    if path.endswith(".model"):
      return _sentencepiece(path, lower_case)
    if path.endswith(".json"):
      return _hf(path, lower_case)
    return _wordpiece(path, lower_case)

  @property
  def tokens(self) -> list[str]:
    """The vocabulary: tokens[i] is the piece of id i."""
    return list(self._tokens)

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without [CLS]/[SEP]; an empty text gives [] (an all-whitespace
    one too, but for hf, whose pre-tokenizer may keep spaces: ByteLevel gives "Ġ" tokens)."""
    if not texts:
      return []
    return self._encode_fn(list(texts))

  def encode(self, text: str) -> list[int]:
    return self.encode_batch([text])[0]

  def encode_with_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple]]]:
    """(ids, offsets) per text: the same ids as encode_batch, and for each id the [start, end)
    character span of the original text it came from (fine-tuning maps answers/words with it)."""
    if not texts:
      return []
    return self._offsets_fn(list(texts))

  def convert_ids_to_tokens(self, ids) -> list[str]:
    return [self._tokens[i] for i in ids]

  def special_ids(self) -> dict[str, int]:
    return {"[PAD]": self.pad_id, "[UNK]": self.unk_id, "[CLS]": self.cls_id,
            "[SEP]": self.sep_id, "[MASK]": self.mask_id}


def _missing_specials(path: str, missing: list[str]) -> VocabError:
  return VocabError(f"vocab file {path} lacks the special token(s) {' '.join(missing)}: add them "
                    f"(a new vocab from python -m bert_jax.vocab has them at ids 0-4)")


def _wordpiece(path: str, lower_case: bool | None) -> Tokenizer:
  from tokenizers import Tokenizer as HFTokenizer
  from tokenizers import models, normalizers, pre_tokenizers

  tokens = read_vocab(path)
  vocab = {}
  for i, token in enumerate(tokens):
    vocab[token] = i  # a duplicate keeps its last id, as google-research/bert load_vocab
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise _missing_specials(path, missing)
  if lower_case is None:
    lower_case = infer_lower_case(tokens)
  def wordpiece(normalizer):
    hf = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                      max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    hf.normalizer = normalizer
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return hf

  hf = wordpiece(normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                            strip_accents=lower_case, lowercase=lower_case))
  # ASCII text skips BertNormalizer (about half of the encoding time, spent on per-character
  # alignment bookkeeping): on ASCII its whole effect is _ASCII_CLEANUP and lower-casing, done
  # here by str.translate / str.lower (C speed). Same ids (tests: every ASCII character, the
  # corpus, HF BertTokenizerFast parity).
  hf_ascii = wordpiece(None)

  def encode(texts):  # _fast: the same ids without computing offsets (~20% less time)
    is_ascii = [t.isascii() for t in texts]
    clean = [t.translate(_ASCII_CLEANUP) for t, a in zip(texts, is_ascii) if a]
    clean = [t.lower() for t in clean] if lower_case else clean
    other = [t for t, a in zip(texts, is_ascii) if not a]
    fast = iter(hf_ascii.encode_batch_fast(clean, add_special_tokens=False) if clean else ())
    slow = iter(hf.encode_batch_fast(other, add_special_tokens=False) if other else ())
    return [next(fast if a else slow).ids for a in is_ascii]

  def encode_with_offsets(texts):  # HF offsets are already in the original text's characters
    return [(e.ids, [tuple(o) for o in e.offsets])
            for e in hf.encode_batch(texts, add_special_tokens=False)]

  return Tokenizer("wordpiece", path, tokens, {t: vocab[t] for t in SPECIAL_TOKENS},
                   lower_case, encode, encode_with_offsets)


def _sentencepiece(path: str, lower_case: bool | None) -> Tokenizer:
  import sentencepiece as spm

  try:
    sp = spm.SentencePieceProcessor(model_proto=epath.Path(path).read_bytes())
  except (RuntimeError, OSError) as e:
    raise VocabError(f"vocab file {path} is not a SentencePiece model ({e}): pass a model written "
                     f"by python -m bert_jax.vocab --kind=sentencepiece") from None
  tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
  ids = {t: i for i, t in enumerate(tokens)}
  special = {}
  for name, alternatives in (("[PAD]", ("[PAD]", "<pad>")), ("[UNK]", ("[UNK]", "<unk>")),
                             ("[CLS]", ("[CLS]",)), ("[SEP]", ("[SEP]",)),
                             ("[MASK]", ("[MASK]",))):
    found = [ids[a] for a in alternatives if a in ids]
    if found:
      special[name] = found[0]
  if "[UNK]" not in special and sp.unk_id() >= 0:
    special["[UNK]"] = sp.unk_id()
  missing = [t for t in SPECIAL_TOKENS if t not in special]
  if missing:
    raise _missing_specials(path, missing)
  lower = bool(lower_case)

  def encode(texts):
    if lower:
      texts = [t.lower() for t in texts]
    return sp.encode(texts, out_type=int)

  def encode_with_offsets(texts):
    # Character offsets into the (lower-cased) input; lower-casing keeps the length for all but
    # a few characters (e.g. "İ"), where the spans are clipped to the original text.
    encoded = sp.encode([t.lower() for t in texts] if lower else texts,
                        out_type="offset_mapping")
    return [(e["ids"], [(min(a, len(t)), min(b, len(t))) for a, b in e["offsets"]])
            for e, t in zip(encoded, texts)]

  return Tokenizer("sentencepiece", path, tokens, special, lower, encode, encode_with_offsets)


# --------------------------------------------------------------------------- HF tokenizer.json


def _hf(path: str, lower_case: bool | None) -> Tokenizer:
  from tokenizers import Tokenizer as HFTokenizer

  try:
    text = epath.Path(path).read_text(encoding="utf-8")  # local or gs:// (epath)
    spec = json.loads(text)
    hf = HFTokenizer.from_str(text)  # tokenizers.Tokenizer.from_file, through epath
  except Exception as e:  # UnicodeDecodeError, JSONDecodeError, tokenizers' plain Exception
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise VocabError(f"vocab file {path} is not a HF tokenizer.json ({reason}): pass one saved by "
                     f"tokenizers / transformers, or write one with python -m bert_jax.vocab "
                     f"--kind=bpe") from None
  hf.no_truncation()
  hf.no_padding()
  special = {}
  for role, names in HF_SPECIAL_NAMES.items():
    found = [hf.token_to_id(n) for n in names if hf.token_to_id(n) is not None]
    if found:
      special[role] = found[0]
  model = spec.get("model") or {}
  model_unk = model.get("unk_token")
  if model_unk is None and isinstance(model.get("unk_id"), int):  # Unigram
    model_unk = hf.id_to_token(model["unk_id"])
  for name in (model_unk, _HF_UNK_LAST_RESORT):
    if "[UNK]" not in special and name and hf.token_to_id(name) is not None:
      special["[UNK]"] = hf.token_to_id(name)
  missing = [t for t in SPECIAL_TOKENS if t not in special]
  if missing:
    names = ", ".join(f"{r} (or {' or '.join(HF_SPECIAL_NAMES[r][1:])})" for r in missing)
    raise VocabError(f"vocab file {path} lacks the special token(s) {names}: add them "
                     f"(tokenizers' add_special_tokens, then save) or train a tokenizer that has "
                     f"them with python -m bert_jax.vocab --kind=bpe")
  vocab = hf.get_vocab(with_added_tokens=True)
  size = max(hf.get_vocab_size(with_added_tokens=True), max(vocab.values(), default=-1) + 1)
  tokens = [""] * size
  for token, i in vocab.items():
    tokens[i] = token
  normalizer_lowers = _lowercases(spec.get("normalizer"))
  if lower_case is False and normalizer_lowers:
    raise VocabError(f"vocab file {path}: its normalizer lower-cases text, so lower_case=False "
                     f"cannot be honoured; leave lower_case unset")
  lower_first = bool(lower_case) and not normalizer_lowers  # we lower-case, as for SentencePiece
  starts = _hf_word_starts(spec, tokens)
  for t in spec.get("added_tokens") or ():
    if t.get("special") and hf.token_to_id(t.get("content", "")) is not None:
      starts[hf.token_to_id(t["content"])] = True

  def encode(texts):
    texts = [t.lower() for t in texts] if lower_first else texts
    return [e.ids for e in hf.encode_batch_fast(texts, add_special_tokens=False)]

  def encode_with_offsets(texts):  # character offsets (tokenizers' Python default)
    encoded = hf.encode_batch([t.lower() for t in texts] if lower_first else texts,
                              add_special_tokens=False)
    return [(e.ids, [(min(a, len(t)), min(b, len(t))) for a, b in e.offsets])
            for e, t in zip(encoded, texts)]

  return Tokenizer("hf", path, tokens, special, normalizer_lowers or lower_first, encode,
                   encode_with_offsets, is_word_start=starts)


def _lowercases(normalizer) -> bool:
  """Whether a tokenizer.json normalizer (a dict or None) lower-cases."""
  if not isinstance(normalizer, dict):
    return False
  kind = normalizer.get("type")
  if kind == "Lowercase":
    return True
  if kind == "BertNormalizer":
    return bool(normalizer.get("lowercase"))
  if kind == "Sequence":
    return any(_lowercases(n) for n in normalizer.get("normalizers") or ())
  return False


def _components(node, kind: str) -> list[dict]:
  """The pre-tokenizers or decoders (dicts with "type" == kind) in `node`, Sequences opened."""
  if not isinstance(node, dict):
    return []
  if node.get("type") == "Sequence":
    return [c for child in node.get("pretokenizers") or node.get("decoders") or ()
            for c in _components(child, kind)]
  return [node] if node.get("type") == kind else []


def _hf_word_starts(spec: dict, tokens: list[str]) -> list[bool]:
  """bool per id, from the model type and the pre-tokenizer / decoder the JSON declares."""
  model = spec.get("model") or {}
  pre, dec = spec.get("pre_tokenizer"), spec.get("decoder")
  if model.get("type") == "WordPiece":
    prefix = model.get("continuing_subword_prefix") or "##"
    return [not t.startswith(prefix) for t in tokens]
  if _components(pre, "ByteLevel") or _components(dec, "ByteLevel"):
    decode = _byte_level_text
    return [t.startswith(_BYTE_LEVEL_SPACE) or _is_punctuation_only(decode(t)) for t in tokens]
  metaspace = _components(pre, "Metaspace") or _components(dec, "Metaspace")
  if metaspace:
    mark = metaspace[0].get("replacement") or _SP_WORD_START
    return [t.startswith(mark) or _is_punctuation_only(t) for t in tokens]
  prefix = model.get("continuing_subword_prefix")
  if prefix:
    return [not t.startswith(prefix) for t in tokens]
  return [True] * len(tokens)  # nothing marks a continuation: each token is a word


def _byte_to_unicode() -> dict[str, int]:
  """GPT-2's bytes_to_unicode, inverted: the character byte-level BPE writes for each byte."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


_BYTE_OF_CHAR = _byte_to_unicode()


def _byte_level_text(token: str) -> str | None:
  """The text of a byte-level token; None for a partial UTF-8 sequence (or not byte-level)."""
  try:
    return bytes(_BYTE_OF_CHAR[c] for c in token).decode("utf-8")
  except (KeyError, UnicodeDecodeError):
    return None


def _is_punctuation_only(text: str | None) -> bool:
  """Every character punctuation, as BERT's _is_punctuation (ASCII symbols count too)."""
  def punct(c):
    cp = ord(c)
    return (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
            or unicodedata.category(c).startswith("P"))
  return bool(text) and all(punct(c) for c in text)
