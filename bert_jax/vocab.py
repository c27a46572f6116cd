"""Trains a WordPiece, byte-level BPE or SentencePiece vocabulary from text files.

  python -m bert_jax.vocab --input='corpus/*.txt' --output_dir=vocab --vocab_size=30522 \
      --kind=wordpiece --lower_case

The training itself: `bert_jax.text.vocab.train_vocab` (which see for the format of the files).
"""

from __future__ import annotations

from absl import flags

from bert_jax import cli
from bert_jax.errors import UserError
from bert_jax.text.vocab import KINDS, train_vocab

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("input", None, "Text file(s): a path or glob, comma-separated for several.")
  flags.DEFINE_string("output_dir", None, "Directory to write vocab.txt (wordpiece), "
                      "tokenizer.json + tokenizer_config.json (bpe) or spm.model into.")
  flags.DEFINE_integer("vocab_size", 30522, "Vocabulary size, special tokens included.")
  flags.DEFINE_enum("kind", "wordpiece", KINDS, "wordpiece (BERT's vocab.txt), bpe (a byte-level "
                    "BPE tokenizer.json as ModernBERT / RoBERTa) or sentencepiece (unigram).")
  flags.DEFINE_bool("lower_case", False, "Lower-case (and, for WordPiece, strip accents) first.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing vocabulary in --output_dir.")


def main(argv):
  del argv
  if not FLAGS.input or not FLAGS.output_dir:
    raise UserError("--input and --output_dir are required")
  print(train_vocab(FLAGS.input, FLAGS.output_dir, FLAGS.vocab_size, FLAGS.kind,
                    FLAGS.lower_case, FLAGS.overwrite))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
