"""The prepare pipeline: raw text (files or a TFDS text dataset) -> the `bert_pretraining` TFDS
dataset, locally over worker processes or as an Apache Beam pipeline.

`prepare(...)` is what `python -m bert_jax.prepare` calls; the example generation itself is
`bert_jax.data.examples` (create_pretraining_data.py's algorithm) and the dataset's format
`bert_jax.data.tfds_builder`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

from absl import logging
from etils import epath

from bert_jax import paths
from bert_jax.data import examples as pdata
from bert_jax.errors import DataError


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _check_text_has_pair(files: list[str], objective: str) -> None:
  """DataError unless some document has two consecutive non-empty lines (two sentences)."""
  for path in files:
    with epath.Path(path).open("rb") as f:
      previous = False
      for line in f:
        nonempty = bool(line.strip())
        if nonempty and previous:
          return
        previous = nonempty
  why = {"nsp": "", "sop": "--objective=sop swaps two segments of one document: "}[objective]
  raise DataError(f"--input {', '.join(files[:3])}: no document has two sentences; {why}write "
                  f"one sentence per line and a blank line between documents"
                  + ("" if objective == "sop" else " (or pass --objective=none)"))


def check_masking_rates(masked_lm_prob: float, max_predictions_per_seq: int,
                        max_seq_length: int, mask_token_prob: float = 0.8,
                        random_token_prob: float = 0.1, flag: str = "--") -> None:
  """DataError unless the masking rate is in (0, 1), fits max_predictions_per_seq at
  max_seq_length (BERT's own 76 predictions at 512 x 0.15 = 76.8 fit: the count is capped), and
  the [MASK]/random shares are probabilities that sum to at most 1. `flag`: how the caller's
  flags are spelled ("--" for prepare, "--config.data." for training)."""
  if not 0 < masked_lm_prob < 1:
    raise DataError(f"{flag}masked_lm_prob={masked_lm_prob}: must be in (0, 1) (0.15 as BERT, "
                    f"0.3 as MosaicBERT/ModernBERT)")
  if max_predictions_per_seq < 1:
    raise DataError(f"{flag}max_predictions_per_seq={max_predictions_per_seq}: must be >= 1")
  needed = int(max_seq_length * masked_lm_prob)
  if needed > max_predictions_per_seq:
    raise DataError(f"{flag}max_predictions_per_seq={max_predictions_per_seq} cannot hold "
                    f"{flag}masked_lm_prob={masked_lm_prob} of {max_seq_length} tokens ({needed}"
                    f" predictions); raise it to {needed} or lower the rate")
  if not (0 <= mask_token_prob <= 1 and 0 <= random_token_prob <= 1
          and mask_token_prob + random_token_prob <= 1 + 1e-9):
    raise DataError(f"{flag}mask_token_prob={mask_token_prob} and {flag}random_token_prob="
                    f"{random_token_prob}: must be probabilities summing to at most 1 (the rest "
                    f"keeps the token; BERT: 0.8 and 0.1)")


def version_dir(data_dir: str) -> str:
  from bert_jax.data.tfds_builder import NAME, VERSION
  return os.fspath(epath.Path(data_dir) / NAME / VERSION)


def prepare(*, vocab: str, data_dir: str, input: str | None = None,  # noqa: A002
            max_seq_length: int = 128, max_predictions_per_seq: int = 20,
            masked_lm_prob: float = 0.15, short_seq_prob: float = 0.1,
            masking: str = "dynamic", dupe_factor: int = 5, whole_word_masking: bool = False,
            objective: str = "nsp", cross_documents: bool = True,
            masking_strategy: str = "token", mask_token_prob: float = 0.8,
            random_token_prob: float = 0.1, segmenter: str = "none",
            validation_fraction: float = 0.05, seed: int = 12345, overwrite: bool = False,
            tfds_source: str | None = None, tfds_source_split: str = "train",
            tfds_source_data_dir: str | None = None, text_feature: str = "text",
            beam: bool = False, beam_options: str = "", num_workers: int | None = None,
            max_position_embeddings: int = 512, lower_case: bool | None = None,
            shard_size_mb: float = pdata.DEFAULT_SHARD_BYTES / 2**20) -> str:
  """Builds the dataset; returns its version directory. Raises DataError for bad input."""
  from bert_jax.text.tokenization import Tokenizer, VocabError

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
  if objective not in pdata.OBJECTIVES:
    raise DataError(f"--objective={objective}: must be one of {', '.join(pdata.OBJECTIVES)}")
  if whole_word_masking and masking_strategy not in ("token", "whole_word"):
    raise DataError(f"--whole_word_masking (an alias of --masking_strategy=whole_word) "
                    f"contradicts --masking_strategy={masking_strategy}; drop one")
  if whole_word_masking:
    masking_strategy = "whole_word"
  if masking_strategy not in pdata.MASKING_STRATEGIES:
    raise DataError(f"--masking_strategy={masking_strategy}: must be one of "
                    f"{', '.join(pdata.MASKING_STRATEGIES)}")
  check_masking_rates(masked_lm_prob, max_predictions_per_seq, max_seq_length,
                      mask_token_prob, random_token_prob)
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
  from bert_jax.text.segmentation import get_segmenter
  get_segmenter(segmenter)  # DataError now if it is unknown or not installed
  if input:
    files = paths.expand_inputs(input)
    if objective != "none":
      _check_text_has_pair(files, objective)
    shards = pdata.plan_text_shards(files, shard_bytes)
    inputs = [[f if paths.is_url(f) else os.path.abspath(f), paths.file_size(f)] for f in files]
  else:
    shards = _plan_tfds_shards(tfds_source, tfds_source_split, tfds_source_data_dir,
                               text_feature, shard_bytes)
    inputs = []

  from bert_jax.data import tfds_builder as pds
  settings = pds.Settings(
      vocab_file=os.path.basename(vocab), vocab_sha256=_sha256(tokenizer.path),
      vocab_size=tokenizer.vocab_size, tokenizer_kind=tokenizer.kind,
      lower_case=tokenizer.lower_case, special_ids=tokenizer.special_ids(),
      objective=objective, cross_documents=cross_documents if objective == "none" else False,
      max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq,
      masked_lm_prob=masked_lm_prob, masking_strategy=masking_strategy,
      mask_token_prob=mask_token_prob, random_token_prob=random_token_prob, segmenter=segmenter,
      short_seq_prob=short_seq_prob, masking=masking,
      dupe_factor=dupe_factor if masking == "static" else 1,
      whole_word_masking=masking_strategy == "whole_word",
      validation_fraction=validation_fraction, seed=seed,
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

  # --- build (TFDS writes into incomplete.XXXXXX_1.1.0 and renames it when done)
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
  from bert_jax.data.tfds_builder import TfdsShard
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
  per_piece = max(1, int(shard_bytes / average / pdata.PIECES_PER_SHARD))
  pieces = [(start, min(num_examples, start + per_piece))
            for start in range(0, num_examples, per_piece)]
  return [TfdsShard(k, tuple(pieces[p] for p in members)) for k, members in
          enumerate(pdata.deal(len(pieces), builder.info.dataset_size / shard_bytes))]
