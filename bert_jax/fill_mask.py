r"""Predict the masked tokens of texts with a trained model: the top-k tokens and probabilities.

  python -m bert_jax.fill_mask --model=DIR --text="Paris is the [MASK] of France." \
      [--text=...] [--top_k=5] [--json] [--vocab=PATH] [--step=N] [--batch_size=32]

DIR: a `bert_jax.train` work directory (its newest checkpoint, or --step), a
`python -m bert_jax.export` output (hf, orbax, tf1) or an HF model directory (BERT or
ModernBERT); the vocabulary is the one beside the weights or the run's dataset's (--vocab
overrides). Each --text needs the tokenizer's mask token ([MASK]) at least once.

Output: per text and mask, the top_k tokens and their softmax probabilities (the values of
transformers' pipeline("fill-mask")). With --json, one JSON object per line and prediction:
{"text_index", "mask_index", "position" (in the input ids, [CLS] = 0), "rank", "token" (id),
"token_str", "score"}. Errors (no mask token, too long a text, not a model directory) print one
line and exit 2. The same from Python: `bert_jax.fill_mask(...)` (bert_jax/inference.py), and
sentence embeddings with `bert_jax.encode(...)`.
"""

from __future__ import annotations

import json
import sys
import types

from absl import flags, logging

from bert_jax import cli, inference

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("model", None, "Run directory, export or HF model directory.")
  flags.DEFINE_multi_string("text", [], "A text with the mask token ([MASK]); repeat for more.")
  flags.DEFINE_integer("top_k", 5, "Predictions per mask.")
  flags.DEFINE_bool("json", False, "One JSON object per line and prediction.")
  flags.DEFINE_string("vocab", None, "Vocabulary file (default: the model's or the run's).")
  flags.DEFINE_integer("step", None, "A run directory's checkpoint step (default: the newest).")
  flags.DEFINE_integer("batch_size", 32, "Texts per forward pass.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it touches at INFO
  if not FLAGS.model:
    raise inference.InferenceError("--model is required: pass a run directory, an export or an "
                                   "HF model directory")
  if not FLAGS.text:
    raise inference.InferenceError('--text is required: pass --text="... [MASK] ..." (repeat it '
                                   "for several texts)")
  predictor = inference.load(FLAGS.model, vocab=FLAGS.vocab, step=FLAGS.step)
  results = predictor.predict_masks(FLAGS.text, FLAGS.top_k, FLAGS.batch_size)
  for i, (text, masks) in enumerate(zip(FLAGS.text, results)):
    if not FLAGS.json:
      print(f"text {i}: {text}")
    for j, (position, predictions) in enumerate(masks):
      if FLAGS.json:
        for rank, p in enumerate(predictions):
          print(json.dumps({"text_index": i, "mask_index": j, "position": position, "rank": rank,
                            **p}, ensure_ascii=False))
      else:
        best = "  ".join(f"{p['token_str']!r} {p['score']:.4f}" for p in predictions)
        print(f"  mask {j} (token {position}): {best}")


class _CallableModule(types.ModuleType):
  """`bert_jax.fill_mask` is the function (bert_jax/__init__.py), but importing this module
  rebinds the package attribute to the module; calling the module calls the function."""

  def __call__(self, *args, **kwargs):
    return inference.fill_mask(*args, **kwargs)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
else:
  sys.modules[__name__].__class__ = _CallableModule
