"""Fill-mask and sentence embeddings from a trained model: a run, an export or an HF directory.

    preds = bert_jax.fill_mask("export/base", ["Paris is the [MASK] of France."], top_k=5)
    preds[0][0]   # text 0, its first [MASK]: top_k dicts, best first, as
                  # [{"token": id, "token_str": "capital", "score": probability}, ...]
    vecs = bert_jax.encode("export/base", ["a sentence", "another one"], pooling="mean")
    vecs.shape    # (2, hidden_size), float32

    m = bert_jax.inference.load("runs/base")   # load once, then call many times
    bert_jax.fill_mask(m, texts); bert_jax.encode(m, texts)

`python -m bert_jax.fill_mask` is the command line over `fill_mask`.

Where the model comes from (`load`; also the `model` argument of `fill_mask` / `encode`):
- a `bert_jax.train` work directory (WORKDIR/config.json + WORKDIR/checkpoints/): the run's
  model at its newest (or `step`) checkpoint, read as `bert_jax.export` reads it
  (`training.export.pretrained_model`), with the vocabulary of the run's dataset;
- anything `bert_jax.load_pretrained` reads (`interop.detect_format`): a `bert_jax.export`
  output (hf, orbax or tf1) or an HF directory of either family, with the vocabulary file
  beside the weights (tokenizer.json first: it is transformers' own pipeline; then vocab.txt,
  spm.model);
- a loaded `nnx.Module` (its `vocab_files`, from `load_pretrained`) or a `Predictor`.
`vocab` (a file or the directory holding one) overrides the vocabulary. Computation is in
float32 whatever the checkpoint's compute dtype, so probabilities equal transformers' (tested).

How a text becomes input, as HF tokenizers' add_special_tokens for BERT and ModernBERT:
[CLS] + the text's ids + [SEP], token types 0; `batch_size` texts of similar length at a time,
padded to the batch's longest (rounded up to a multiple of 8) with an attention mask. The
tokenizer's mask token (`[MASK]`, or `<mask>` for a RoBERTa-style tokenizer.json) marks what to
predict: a tokenizer.json recognises it itself (with its lstrip / rstrip settings); for
vocab.txt / spm.model the text is split at it and the pieces are tokenized apart, as
transformers splits at special tokens.
fill_mask gives the softmax over the whole vocabulary at each mask, the top_k best; encode pools
the encoder's last hidden states (after ModernBERT's final norm, as HF's last_hidden_state):
"cls" the first token, "mean" the mean over the non-padding tokens ([CLS] and [SEP] included,
as sentence-transformers' mean pooling).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from bert_jax.errors import UserError
from bert_jax.interop import CheckpointError, detect_format, load_pretrained
from bert_jax.interop.pretrained import VOCAB_FILES
from bert_jax.models import families
from bert_jax.text import tokenization

POOLINGS = ("cls", "mean")
# The vocabulary file to use when a directory holds several: tokenizer.json is the exact
# pipeline transformers runs for the model, vocab.txt / spm.model the others.
_VOCAB_PREFERENCE = ("tokenizer.json", "vocab.txt", "spm.model")
_MLM_TASKS = ("pretraining", "masked_lm")
_LENGTH_MULTIPLE = 8  # batches are padded to a multiple of this many tokens
# Whatever a checkpoint's config says: float32 compute, no remat, the default attention kernel.
_INFERENCE_SETTINGS = {"dtype": "float32", "remat_policy": "none", "attention_impl": "auto"}
_MODEL_KINDS = ("a bert_jax.train run directory (config.json + checkpoints/), a bert_jax.export "
                "output or an HF model directory (config.json + model.safetensors)")


class InferenceError(UserError):
  """Bad input to fill_mask / encode (model directory, vocabulary, texts); one line."""


def _quoted(text: str, limit: int = 60) -> str:
  """`text` for a one-line message: double-quoted, newlines escaped, long ones cut."""
  return json.dumps(text if len(text) <= limit else text[:limit - 3] + "...", ensure_ascii=False)


# ---- loading ----------------------------------------------------------------------------------
def _is_run(p: epath.Path) -> bool:
  return p.is_dir() and (p / "config.json").exists() and (p / "checkpoints").is_dir()


def _vocab_file(vocab) -> str:
  """The vocabulary file named by `vocab` (a file, or a directory holding one)."""
  v = epath.Path(vocab)
  if v.is_dir():
    found = [v / f for f in _VOCAB_PREFERENCE if (v / f).exists()]
    if not found:
      raise InferenceError(f"--vocab={vocab}: no {', '.join(_VOCAB_PREFERENCE)} in that "
                           "directory; pass the vocabulary file the model was trained with")
    return str(found[0])
  if not v.exists():
    raise InferenceError(f"--vocab={vocab}: no such file; pass the model's vocab.txt, spm.model "
                         "or tokenizer.json")
  return str(v)


def _files_vocab(files) -> str | None:
  """The preferred vocabulary among a loaded model's `vocab_files`."""
  by_name = {os.path.basename(str(f)): str(f) for f in files}
  return next((by_name[n] for n in _VOCAB_PREFERENCE if n in by_name), None)


def load(path, *, vocab=None, step: int | None = None) -> "Predictor":
  """A Predictor for a run directory, an export or an HF directory (see the module doc).

  step: a run's checkpoint step (default: the newest); only for a run directory.
  Raises InferenceError (a one-line UserError) for a directory that is none of those, or one
  without a vocabulary (pass `vocab`).
  """
  p = epath.Path(path)
  if not p.exists() and not epath.Path(f"{p}.index").exists():  # (a TF1 checkpoint prefix)
    raise InferenceError(f"--model={path}: no such directory; pass {_MODEL_KINDS}")
  if _is_run(p):
    from bert_jax.training import export  # the run reader; heavier than interop
    model, step = export.pretrained_model(str(path), step)
    vocab_path = (_vocab_file(vocab) if vocab is not None
                  else export.run_vocab(export.run_config(str(path))))
    if vocab_path is not None and not epath.Path(vocab_path).exists():
      raise InferenceError(f"--model={path}: the run's vocabulary {vocab_path} (its dataset's "
                           "copy) does not exist; pass --vocab=PATH")
    where = f"--model={path} (step {step})"
  else:
    if step is not None:
      raise InferenceError(f"--step={step} picks a checkpoint of a bert_jax.train run directory; "
                           f"--model={path} is not one: drop --step")
    try:
      detect_format(path)
    except CheckpointError:
      found = ", ".join(sorted(x.name for x in p.iterdir())[:8]) if p.is_dir() else "a file"
      raise InferenceError(f"--model={path} is not {_MODEL_KINDS} (found: {found or 'nothing'})"
                           "; pass one of those") from None
    model = load_pretrained(str(path), task=None, config_overrides=_INFERENCE_SETTINGS)
    vocab_path = (_vocab_file(vocab) if vocab is not None
                  else _files_vocab(getattr(model, "vocab_files", ())))
    where = f"--model={path}"
  if vocab_path is None:
    raise InferenceError(f"--model={path}: no vocabulary found (no {', '.join(VOCAB_FILES)} "
                         "beside the weights, or a run on synthetic data); pass --vocab=PATH")
  return Predictor(model, tokenization.Tokenizer.from_file(vocab_path), where=where)


# ---- the predictor ----------------------------------------------------------------------------
class Predictor:
  """A model and its tokenizer, with jitted fill-mask and encoder functions.

  model: any bert_jax model of either family (its encoder serves `encode`; fill_mask needs a
  masked-LM head: a pretraining or masked_lm model). tokenizer: a text.tokenization.Tokenizer
  whose ids the model was trained on.
  """

  def __init__(self, model: nnx.Module, tokenizer: tokenization.Tokenizer, *,
               where: str = "this model"):
    config = model.config
    if tokenizer.vocab_size > config.vocab_size:
      raise InferenceError(f"--vocab={tokenizer.path} has {tokenizer.vocab_size} tokens but the "
                           f"model's vocab_size is {config.vocab_size}; pass the model's own "
                           "vocabulary")
    self.model, self.tokenizer, self.where = model, tokenizer, where
    self.task = families.task_of(model)
    self.max_length = config.max_position_embeddings
    self.mask_token = tokenizer.tokens[tokenizer.mask_id]
    self._strings: dict[int, str] = {}
    self._decoder = None
    graphdef, state = nnx.split(model)
    encoder_key = families.ENCODER_KEY[config.model_type]

    def top_k(state, ids, types, mask, positions, *, k):
      out = nnx.merge(graphdef, state)(ids, types, mask, positions, deterministic=True)
      return jax.lax.top_k(jax.nn.softmax(out.mlm_logits.astype(jnp.float32), axis=-1), k)

    def pooled(state, ids, types, mask, *, pooling):
      encoder = getattr(nnx.merge(graphdef, state), encoder_key)
      seq = encoder(ids, types, mask, deterministic=True).sequence_output.astype(jnp.float32)
      if pooling == "cls":
        return seq[:, 0]
      m = mask.astype(jnp.float32)[..., None]
      return jnp.sum(seq * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)

    self._state = state
    self._top_k = jax.jit(top_k, static_argnames="k")
    self._pooled = jax.jit(pooled, static_argnames="pooling")

  # ---- tokens ---------------------------------------------------------------------------------
  def token_ids(self, texts: list[str]) -> list[list[int]]:
    """[CLS] + ids + [SEP] per text, the mask token as mask_id (see the module doc)."""
    tok = self.tokenizer
    if tok.kind == "hf":  # tokenizer.json knows its specials (and their lstrip / rstrip)
      body = tok.encode_batch(texts)
    else:
      body = []
      for text in texts:
        pieces = text.split(self.mask_token)
        ids = tok.encode_batch([p.strip() for p in pieces])
        row = list(ids[0])
        for piece in ids[1:]:
          row += [tok.mask_id, *piece]
        body.append(row)
    rows = [[tok.cls_id, *ids, tok.sep_id] for ids in body]
    for text, row in zip(texts, rows):
      if len(row) > self.max_length:
        raise InferenceError(
            f"--text={_quoted(text)} is {len(row)} tokens with {tok.tokens[tok.cls_id]} and "
            f"{tok.tokens[tok.sep_id]}, more than the model's max_position_embeddings="
            f"{self.max_length}; shorten it")
    return rows

  def token_str(self, token_id: int) -> str:
    """The text of one id, as transformers' tokenizer.decode([id]) gives it."""
    if token_id not in self._strings:
      tok = self.tokenizer
      piece = tok.tokens[token_id] if token_id < tok.vocab_size else ""
      if tok.kind == "hf":
        if self._decoder is None:
          from tokenizers import Tokenizer as HFTokenizer
          self._decoder = HFTokenizer.from_str(epath.Path(tok.path).read_text(encoding="utf-8"))
        piece = (self._decoder.decode([token_id], skip_special_tokens=False)
                 if token_id < tok.vocab_size else "")
      elif tok.kind == "sentencepiece":
        piece = piece.replace("\u2581", " ").strip()
      self._strings[token_id] = piece
    return self._strings[token_id]

  def _batches(self, rows: list[list[int]], batch_size: int):
    """(indices into rows, ids, token types, attention mask) per batch of `batch_size` rows.
    Rows go by length (less padding) and each batch is padded to its longest row rounded up
    to a multiple of 8 (fewer shapes to compile over many batches); padding is masked, so
    neither changes a result."""
    if batch_size < 1:
      raise InferenceError(f"--batch_size={batch_size}: must be at least 1")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
      chunk = order[start:start + batch_size]
      longest = max(len(rows[i]) for i in chunk)
      length = min(-(-longest // _LENGTH_MULTIPLE) * _LENGTH_MULTIPLE, self.max_length)
      ids = np.full((len(chunk), length), self.tokenizer.pad_id, np.int32)
      mask = np.zeros((len(chunk), length), np.int32)
      for i, r in enumerate(rows[j] for j in chunk):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
      yield chunk, ids, np.zeros_like(ids), mask

  # ---- the two tasks --------------------------------------------------------------------------
  def predict_masks(self, texts, top_k: int = 5, batch_size: int = 32):
    """Per text, per mask: (position in the input ids, [CLS] = 0; top_k predictions)."""
    texts = _as_list(texts)
    if self.task not in _MLM_TASKS:
      raise InferenceError(f"{self.where}: a {self.task} model, without a "
                           "masked-LM head; fill-mask needs a pretraining or masked-LM "
                           "checkpoint (encode works with any)")
    if top_k < 1:
      raise InferenceError(f"--top_k={top_k}: must be at least 1")
    k = min(top_k, self.model.config.vocab_size)
    rows = self.token_ids(texts)
    for text, row in zip(texts, rows):
      if self.tokenizer.mask_id not in row:
        raise InferenceError(
            f"--text={_quoted(text)} has no {self.mask_token}: put the tokenizer's mask token "
            f"{self.mask_token} where a token should be predicted, e.g. --text=\"The capital of "
            f"France is {self.mask_token}.\"")
    out: list = [None] * len(rows)
    for chunk, ids, types, mask in self._batches(rows, batch_size):
      masked = [np.flatnonzero(r == self.tokenizer.mask_id) for r in ids]
      positions = np.zeros((len(ids), max(len(w) for w in masked)), np.int32)
      for i, w in enumerate(masked):
        positions[i, :len(w)] = w
      scores, tokens = jax.device_get(self._top_k(self._state, ids, types, mask, positions, k=k))
      for i, w in enumerate(masked):
        out[chunk[i]] = [(int(p), [{"token": int(t), "token_str": self.token_str(int(t)),
                                    "score": float(s)}
                                   for t, s in zip(tokens[i, j], scores[i, j])])
                         for j, p in enumerate(w)]
    return out

  def fill_mask(self, texts, top_k: int = 5, batch_size: int = 32) -> list[list[list[dict]]]:
    """See `fill_mask`."""
    return [[preds for _, preds in masks]
            for masks in self.predict_masks(texts, top_k, batch_size)]

  def encode(self, texts, pooling: str = "cls", batch_size: int = 32) -> np.ndarray:
    """See `encode`."""
    if pooling not in POOLINGS:
      raise InferenceError(f"pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
    texts = _as_list(texts)
    rows = self.token_ids(texts)
    out = np.zeros((len(rows), self.model.config.hidden_size), np.float32)
    for chunk, ids, types, mask in self._batches(rows, batch_size):
      out[chunk] = np.asarray(self._pooled(self._state, ids, types, mask, pooling=pooling))
    return out


def _as_list(texts) -> list[str]:
  if isinstance(texts, str):
    return [texts]
  texts = list(texts)
  bad = [t for t in texts if not isinstance(t, str)]
  if bad:
    raise TypeError(f"texts must be strings, got {type(bad[0]).__name__}")
  return texts


def _predictor(model, vocab, step) -> Predictor:
  if isinstance(model, Predictor):
    if vocab is not None or step is not None:
      raise ValueError("vocab and step apply when loading; this Predictor is loaded already")
    return model
  if isinstance(model, nnx.Module):
    if step is not None:
      raise ValueError("step picks a run's checkpoint; pass the run directory instead of a model")
    vocab_path = (_vocab_file(vocab) if vocab is not None
                  else _files_vocab(getattr(model, "vocab_files", ())))
    if vocab_path is None:
      raise InferenceError("this model carries no vocabulary (it was not loaded from a directory "
                           "with one); pass vocab=PATH")
    return Predictor(model, tokenization.Tokenizer.from_file(vocab_path))
  return load(model, vocab=vocab, step=step)


# ---- public API -------------------------------------------------------------------------------
def fill_mask(model, texts, *, top_k: int = 5, vocab=None, step: int | None = None,
              batch_size: int = 32) -> list[list[list[dict]]]:
  """The top_k tokens for each mask token of each text, with their probabilities.

  model: a run directory, an export, an HF directory, a loaded model or a `Predictor` (module
    doc). texts: a string or a list of them, each with at least one mask token ([MASK]).
  Returns, per text, per mask (in text order), top_k dicts best first: {"token": id,
  "token_str": its text (as transformers' decode), "score": softmax probability}, the same
  values as transformers' pipeline("fill-mask").
  Raises InferenceError for a text without the mask token or longer than the model's
  max_position_embeddings, and for a model without a masked-LM head.
  """
  return _predictor(model, vocab, step).fill_mask(texts, top_k, batch_size)


def encode(model, texts, *, pooling: str = "cls", vocab=None, step: int | None = None,
           batch_size: int = 32) -> np.ndarray:
  """Sentence embeddings [len(texts), hidden_size] float32: the encoder's last hidden states
  pooled, "cls" (the [CLS] vector) or "mean" (over the non-padding tokens, as
  sentence-transformers). `model` as in fill_mask; any task's checkpoint works."""
  return _predictor(model, vocab, step).encode(texts, pooling, batch_size)
