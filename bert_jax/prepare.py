"""Raw text -> the `bert_pretraining` TFDS dataset (BERT's create_pretraining_data.py, faster).

  python -m bert_jax.prepare --input='corpus/*.txt' --vocab=vocab/vocab.txt --data_dir=data
  python -m bert_jax.prepare --tfds_source=wikipedia/20230601.en --text_feature=text \
      --tfds_source_data_dir=~/tensorflow_datasets --vocab=vocab.txt --data_dir=data --beam

writes DATA_DIR/bert_pretraining/1.0.0/ (train and validation splits, sharded TFRecords,
dataset_info.json, metadata.json, a copy of the vocab). See docs/data.md and
`bert_jax.pretraining_dataset` for the format. Any bad input stops with one line
`error: ...` naming the file or flag and the fix, and exit status 2, before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile

from absl import app, flags, logging
from etils import epath

from bert_jax import paths
from bert_jax import pretraining_data as pdata
from bert_jax.pretraining_data import DataError


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _check_text_has_pair(files: list[str]) -> None:
  """DataError unless some document has two consecutive non-empty lines (two sentences)."""
  for path in files:
    with epath.Path(path).open("rb") as f:
      previous = False
      for line in f:
        nonempty = bool(line.strip())
        if nonempty and previous:
          return
        previous = nonempty
  raise DataError(f"--input {', '.join(files[:3])}: no document has two sentences; write one "
                  f"sentence per line and a blank line between documents")


def version_dir(data_dir: str) -> str:
  from bert_jax.pretraining_dataset import NAME, VERSION
  return os.fspath(epath.Path(data_dir) / NAME / VERSION)


def prepare(*, vocab: str, data_dir: str, input: str | None = None,  # noqa: A002
            max_seq_length: int = 128, max_predictions_per_seq: int = 20,
            masked_lm_prob: float = 0.15, short_seq_prob: float = 0.1,
            masking: str = "dynamic", dupe_factor: int = 5, whole_word_masking: bool = False,
            validation_fraction: float = 0.05, seed: int = 12345, overwrite: bool = False,
            tfds_source: str | None = None, tfds_source_split: str = "train",
            tfds_source_data_dir: str | None = None, text_feature: str = "text",
            beam: bool = False, beam_options: str = "", num_workers: int | None = None,
            max_position_embeddings: int = 512, lower_case: bool | None = None,
            shard_size_mb: float = pdata.DEFAULT_SHARD_BYTES / 2**20) -> str:
  """Builds the dataset; returns its version directory. Raises DataError for bad input."""
  from bert_jax.tokenization import Tokenizer, VocabError

  # --- flags and inputs (nothing is written before all of these pass)
  if max_seq_length > max_position_embeddings:
    raise DataError(f"--max_seq_length={max_seq_length} is above --max_position_embeddings="
                    f"{max_position_embeddings}; lower it or raise max_position_embeddings")
  if max_seq_length < 5:
    raise DataError(f"--max_seq_length={max_seq_length}: must be at least 5")
  if masking not in pdata.MASKING_MODES:
    raise DataError(f"--masking={masking}: must be dynamic or static")
  if not 0 <= short_seq_prob <= 1:
    raise DataError(f"--short_seq_prob={short_seq_prob}: must be in [0, 1]")
  if not 0 <= validation_fraction < 1:
    raise DataError(f"--validation_fraction={validation_fraction}: must be in [0, 1)")
  if max_predictions_per_seq < 1 or not 0 < masked_lm_prob < 1:
    raise DataError("--max_predictions_per_seq must be >= 1 and --masked_lm_prob in (0, 1)")
  if dupe_factor < 1:
    raise DataError(f"--dupe_factor={dupe_factor}: must be >= 1")
  if shard_size_mb <= 0:
    raise DataError(f"--shard_size_mb={shard_size_mb}: must be > 0")
  if bool(input) == bool(tfds_source):
    raise DataError("pass exactly one of --input (text files) and --tfds_source (a TFDS dataset)")
  try:
    vocab = vocab if paths.is_url(vocab) else os.path.expanduser(vocab)
    tokenizer = Tokenizer.from_file(vocab, lower_case=lower_case)
  except VocabError as e:
    raise DataError(f"--vocab: {e}") from None
  shard_bytes = max(1, int(shard_size_mb * 2**20))
  if input:
    files = pdata.expand_inputs(input)
    _check_text_has_pair(files)
    shards = pdata.plan_text_shards(files, shard_bytes)
    inputs = [[f if paths.is_url(f) else os.path.abspath(f), pdata.file_size(f)] for f in files]
  else:
    shards = _plan_tfds_shards(tfds_source, tfds_source_split, tfds_source_data_dir,
                               text_feature, shard_bytes)
    inputs = []

  from bert_jax import pretraining_dataset as pds
  settings = pds.Settings(
      vocab_file=os.path.basename(vocab), vocab_sha256=_sha256(tokenizer.path),
      vocab_size=tokenizer.vocab_size, tokenizer_kind=tokenizer.kind,
      lower_case=tokenizer.lower_case, special_ids=tokenizer.special_ids(),
      max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq,
      masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob, masking=masking,
      dupe_factor=dupe_factor if masking == "static" else 1,
      whole_word_masking=whole_word_masking, validation_fraction=validation_fraction, seed=seed,
      shard_bytes=shard_bytes, inputs=inputs, tfds_source=tfds_source,
      tfds_source_split=tfds_source_split if tfds_source else None,
      text_feature=text_feature if tfds_source else None)
  out = version_dir(data_dir)
  existing = epath.Path(out) / "metadata.json"
  if (epath.Path(out) / "dataset_info.json").exists() and not overwrite:
    old = json.loads(existing.read_text())
    new = json.loads(json.dumps(settings.to_json()))
    differ = sorted(k for k in new if old.get(k) != new[k])
    if differ:
      raise DataError(f"--data_dir {data_dir}: an existing dataset built with different settings "
                      f"({', '.join(differ)}) is at {out}; pass --overwrite to replace it or "
                      f"choose another --data_dir")
    logging.info("%s already holds this dataset (same settings): nothing to do", out)
    return out

  # --- build (TFDS writes into incomplete.XXXXXX_1.0.0 and renames it when done)
  import tensorflow as tf
  import tensorflow_datasets as tfds
  tf.config.set_visible_devices([], "GPU")
  job = pds.Job(settings=settings, vocab_path=tokenizer.path, shards=tuple(shards),
                num_workers=num_workers or os.cpu_count() or 1,
                tfds_source_data_dir=tfds_source_data_dir, beam=beam)
  mode = tfds.download.GenerateMode
  config = tfds.download.DownloadConfig(
      download_mode=mode.FORCE_REDOWNLOAD if overwrite else mode.REUSE_DATASET_IF_EXISTS,
      try_download_gcs=False, beam_options=_beam_options(beam, beam_options, job.num_workers))
  logging.info("preparing %s from %d shard(s) on %d worker(s)%s", out, len(shards),
               job.num_workers, " with Apache Beam" if beam else "")
  # Nothing is downloaded; keep TFDS's download manager out of data_dir.
  download_dir = tempfile.mkdtemp(prefix="bert_jax_prepare_")
  try:
    with contextlib.nullcontext() if beam else pds.worker_pool(job) as pool:
      builder = pds.BertPretraining(data_dir=data_dir, job=job, pool=pool)
      builder.download_and_prepare(download_dir=download_dir, download_config=config)
  finally:
    shutil.rmtree(download_dir, ignore_errors=True)
  return out


def _beam_options(beam: bool, extra: str, num_workers: int):
  if not beam:
    return None
  from apache_beam.options.pipeline_options import PipelineOptions
  args = extra.split() if extra else []
  if not any(a.startswith("--runner") for a in args):
    args += ["--runner=DirectRunner", f"--direct_num_workers={num_workers}",
             "--direct_running_mode=multi_threading"]
  return PipelineOptions(args)


def _plan_tfds_shards(name, split, data_dir, text_feature, shard_bytes):
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from bert_jax.pretraining_dataset import TfdsShard
  tf.config.set_visible_devices([], "GPU")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    num_examples = builder.info.splits[split].num_examples
  except Exception as e:  # noqa: BLE001 - TFDS raises many types; report one line
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"--tfds_source={name} (split {split}, --tfds_source_data_dir={data_dir}): "
                    f"cannot open it ({first}); prepare it with TFDS first") from None
  if text_feature not in builder.info.features:
    raise DataError(f"--text_feature={text_feature}: {name} has no such feature (it has "
                    f"{', '.join(sorted(builder.info.features))})")
  if not num_examples:
    raise DataError(f"--tfds_source={name}: split {split} is empty")
  sample = builder.as_dataset(split=f"{split}[:{min(1000, num_examples)}]", shuffle_files=False)
  if not any(len(pdata.split_sentences(ex[text_feature].decode("utf-8", "replace"))) >= 2
             for ex in sample.as_numpy_iterator()):
    raise DataError(f"--tfds_source={name}: no document among the first 1000 has two sentences;"
                    f" pass the --text_feature that holds whole documents")
  average = max(1, builder.info.dataset_size / num_examples)
  per_shard = max(1, int(shard_bytes / average))
  return [TfdsShard(i, start, min(num_examples, start + per_shard))
          for i, start in enumerate(range(0, num_examples, per_shard))]


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("input", None, "Text file(s), path or glob (comma-separated for several): "
                      "one sentence per line, a blank line between documents.")
  flags.DEFINE_string("vocab", None, "WordPiece vocab.txt or SentencePiece *.model.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory to write bert_pretraining/ into.")
  flags.DEFINE_integer("max_seq_length", 128, "Tokens per example, [CLS]/[SEP] included.")
  flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked tokens per example at most.")
  flags.DEFINE_float("masked_lm_prob", 0.15, "Fraction of tokens masked.")
  flags.DEFINE_float("short_seq_prob", 0.1, "Probability of a shorter target length.")
  flags.DEFINE_enum("masking", "dynamic", pdata.MASKING_MODES,
                    "dynamic: masks drawn by the input pipeline every epoch; static: stored.")
  flags.DEFINE_integer("dupe_factor", 5, "Static masking: copies of the data, each masked anew.")
  flags.DEFINE_bool("whole_word_masking", False, "Mask whole words (all their pieces).")
  flags.DEFINE_float("validation_fraction", 0.05,
                     "Fraction of documents held out for validation (at least one per shard).")
  flags.DEFINE_integer("seed", 12345, "Random seed (the reference's default).")
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
                     "Text per shard, the unit of parallel work and of the random-next pool.")


def main(argv):
  del argv
  if not FLAGS.vocab or not FLAGS.data_dir:
    print("error: --vocab and --data_dir are required (and --input or --tfds_source)",
          file=sys.stderr)
    sys.exit(2)
  try:
    out = prepare(
        input=FLAGS.input, vocab=FLAGS.vocab, data_dir=FLAGS.data_dir,
        max_seq_length=FLAGS.max_seq_length, max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        masked_lm_prob=FLAGS.masked_lm_prob, short_seq_prob=FLAGS.short_seq_prob,
        masking=FLAGS.masking, dupe_factor=FLAGS.dupe_factor,
        whole_word_masking=FLAGS.whole_word_masking,
        validation_fraction=FLAGS.validation_fraction, seed=FLAGS.seed,
        overwrite=FLAGS.overwrite, tfds_source=FLAGS.tfds_source,
        tfds_source_split=FLAGS.tfds_source_split,
        tfds_source_data_dir=FLAGS.tfds_source_data_dir, text_feature=FLAGS.text_feature,
        beam=FLAGS.beam, beam_options=FLAGS.beam_options, num_workers=FLAGS.num_workers,
        max_position_embeddings=FLAGS.max_position_embeddings, lower_case=FLAGS.lower_case,
        shard_size_mb=FLAGS.shard_size_mb)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(out)


if __name__ == "__main__":
  define_flags()
  app.run(main)
