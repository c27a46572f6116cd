"""Raw text -> the `bert_pretraining` TFDS dataset (BERT's create_pretraining_data.py, faster).

  python -m bert_jax.prepare --input='corpus/*.txt' --vocab=vocab/vocab.txt --data_dir=data
  python -m bert_jax.prepare --tfds_source=wikipedia/20230601.en --text_feature=text \
      --tfds_source_data_dir=~/tensorflow_datasets --vocab=vocab.txt --data_dir=data --beam

writes DATA_DIR/bert_pretraining/1.1.0/ (train and validation splits, sharded TFRecords,
dataset_info.json, metadata.json, a copy of the vocab). See docs/data.md and
`bert_jax.data.tfds_builder` for the format. Any bad input stops with one line
`error: ...` naming the file or flag and the fix, and exit status 2, before anything is written.
"""

from __future__ import annotations

from absl import flags

from bert_jax import cli
from bert_jax.data import examples as pdata
from bert_jax.data.prepare import prepare
from bert_jax.errors import UserError

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("input", None, "Text file(s), path or glob (comma-separated for several): "
                      "one sentence per line, a blank line between documents.")
  flags.DEFINE_string("vocab", None, "WordPiece vocab.txt, SentencePiece *.model or a HF "
                      "tokenizer.json (e.g. ModernBERT's byte-level BPE).")
  flags.DEFINE_string("data_dir", None, "TFDS data directory to write bert_pretraining/ into.")
  flags.DEFINE_integer("max_seq_length", 128, "Tokens per example, [CLS]/[SEP] included.")
  flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked tokens per example at most.")
  flags.DEFINE_enum("objective", "nsp", pdata.OBJECTIVES,
                    "Sentence objective: nsp (BERT's next sentence), sop (ALBERT's sentence "
                    "order: A and B of one document, swapped half the time, label 1 = swapped), "
                    "none (RoBERTa: rows of full sentences, no sentence label).")
  flags.DEFINE_bool("cross_documents", True, "--objective=none: rows continue across documents "
                    "after a [SEP] (RoBERTa's FULL-SENTENCES); false: DOC-SENTENCES.")
  flags.DEFINE_float("masked_lm_prob", 0.15, "Fraction of tokens masked (0.3: MosaicBERT, "
                     "ModernBERT).")
  flags.DEFINE_enum("masking_strategy", "token", pdata.MASKING_STRATEGIES,
                    "What is masked together: token (BERT), whole_word (all pieces of a word), "
                    "span (SpanBERT: geometric spans of whole words, 80/10/10 per span), ngram "
                    "(ALBERT: 1-3 words, p(n) ~ 1/n). Stored; dynamic masking uses it too.")
  flags.DEFINE_float("mask_token_prob", 0.8, "Of the masked tokens, the share set to [MASK].")
  flags.DEFINE_float("random_token_prob", 0.1,
                     "Of the masked tokens, the share set to a random token (the rest is kept).")
  flags.DEFINE_enum("segmenter", "none", ("none", "jieba"),
                    "Word segmenter for whole-word/span/n-gram masking of Chinese (jieba: pip "
                    "install 'bert_jax[zh]'): a word's characters are masked together.")
  flags.DEFINE_float("short_seq_prob", 0.1, "Probability of a shorter target length.")
  flags.DEFINE_enum("masking", "dynamic", pdata.MASKING_MODES,
                    "dynamic: masks drawn by the input pipeline every epoch; static: stored.")
  flags.DEFINE_integer("dupe_factor", 5, "Static masking: copies of the data, each masked anew.")
  flags.DEFINE_bool("whole_word_masking", False, "Alias of --masking_strategy=whole_word.")
  flags.DEFINE_float("validation_fraction", 0.05,
                     "Fraction of the text held out for validation, in whole documents chosen "
                     "per shard to come closest to it by size.")
  flags.DEFINE_integer("seed", 12345, "Random seed (12345, the reference's default value): each "
                       "shard's random.Random is seeded from sha256(seed/shard/split), so the "
                       "draws are the reference's algorithm but not its random.Random(seed) "
                       "stream.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing dataset in --data_dir.")
  flags.DEFINE_string("tfds_source", None, "A TFDS text dataset, e.g. wikipedia/20230601.en.")
  flags.DEFINE_string("tfds_source_split", "train", "Split of --tfds_source to read.")
  flags.DEFINE_string("tfds_source_data_dir", None, "TFDS data dir holding --tfds_source.")
  flags.DEFINE_string("text_feature", "text", "Feature of --tfds_source holding a document.")
  flags.DEFINE_bool("beam", False, "Run as an Apache Beam pipeline (DirectRunner by default).")
  flags.DEFINE_string("beam_options", "", "Beam pipeline options, e.g. '--runner=DataflowRunner "
                      "--project=P --region=R --temp_location=gs://B/tmp'.")
  flags.DEFINE_integer("num_workers", 0, "Processes over input shards; 0 = all local cores.")
  flags.DEFINE_integer("max_position_embeddings", 512, "The model's; max_seq_length may not "
                       "exceed it.")
  flags.DEFINE_bool("lower_case", None, "Lower-case text; default: inferred from the vocab.")
  flags.DEFINE_float("shard_size_mb", pdata.DEFAULT_SHARD_BYTES / 2**20,
                     "Text per shard, the unit of parallel work and the random-next pool; a "
                     "shard is 32 pieces from across the corpus.")


def main(argv):
  del argv
  if not FLAGS.vocab or not FLAGS.data_dir:
    raise UserError("--vocab and --data_dir are required (and --input or --tfds_source)")
  print(prepare(
      input=FLAGS.input, vocab=FLAGS.vocab, data_dir=FLAGS.data_dir,
      max_seq_length=FLAGS.max_seq_length, max_predictions_per_seq=FLAGS.max_predictions_per_seq,
      masked_lm_prob=FLAGS.masked_lm_prob, short_seq_prob=FLAGS.short_seq_prob,
      masking=FLAGS.masking, dupe_factor=FLAGS.dupe_factor,
      whole_word_masking=FLAGS.whole_word_masking, objective=FLAGS.objective,
      cross_documents=FLAGS.cross_documents, masking_strategy=FLAGS.masking_strategy,
      mask_token_prob=FLAGS.mask_token_prob, random_token_prob=FLAGS.random_token_prob,
      segmenter=FLAGS.segmenter,
      validation_fraction=FLAGS.validation_fraction, seed=FLAGS.seed,
      overwrite=FLAGS.overwrite, tfds_source=FLAGS.tfds_source,
      tfds_source_split=FLAGS.tfds_source_split,
      tfds_source_data_dir=FLAGS.tfds_source_data_dir, text_feature=FLAGS.text_feature,
      beam=FLAGS.beam, beam_options=FLAGS.beam_options, num_workers=FLAGS.num_workers,
      max_position_embeddings=FLAGS.max_position_embeddings, lower_case=FLAGS.lower_case,
      shard_size_mb=FLAGS.shard_size_mb))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
