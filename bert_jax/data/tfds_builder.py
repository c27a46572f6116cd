"""The `bert_pretraining` TFDS dataset: BERT sentence pairs in sharded TFRecord files.

Written by `python -m bert_jax.prepare` (see docs/data.md); read with
`tfds.builder_from_directory(DATA_DIR/bert_pretraining/1.1.0)` (no bert_jax code needed),
`tfds.load("bert_pretraining", data_dir=DATA_DIR)`, or `bert_jax.data.input_pipeline`.

Features (every example; variable-length int sequences, padded by the input pipeline):
  input_ids            int32 [n]   [CLS] A [SEP] B [SEP] (objective none: [CLS] sentences [SEP]),
                                   n <= max_seq_length (static masking: with the
                                   [MASK]/random/kept replacements applied)
  token_type_ids       int32 [n]   0 for [CLS] A [SEP], 1 for B [SEP] (none: all 0)
  next_sentence_label  int64 []    nsp: 0 = IsNext, 1 = NotNext; sop: 0 = in order, 1 = swapped;
                                   none: 0 (ClassLabel is_next / not_next)
  word_starts          int32 [n]   1 where a token begins a word (whole-word, span and n-gram
                                   masking; with --segmenter, the segmenter's words)
  masked_positions     int32 [k]   static masking: sorted positions; dynamic: empty
  masked_ids           int32 [k]   static masking: original ids there; dynamic: empty

Metadata (`builder.info.metadata`, metadata.json in the version directory): the settings
(vocab file name, sha256, vocab_size, lower_case, special ids, objective, cross_documents,
max_seq_length, max_predictions_per_seq, masked_lm_prob, masking_strategy, mask_token_prob,
random_token_prob, segmenter, short_seq_prob, masking, dupe_factor, whole_word_masking (the
strategy is whole_word), validation_fraction, seed, inputs) and per-split counts (documents, sentences, examples, bytes,
invalid UTF-8 bytes replaced). The vocab file is copied next to the data (`vocab_file`).

Generation runs in `_split_generators` / `_generate_examples` inside TFDS's temporary directory
(`incomplete.XXXXXX_1.1.0`), renamed into place only when everything is written: an interrupted
prepare leaves no dataset that loads.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging as std_logging
import multiprocessing
import os
import random
import signal
import threading
import time

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from bert_jax.data import examples as pdata

NAME = "bert_pretraining"
VERSION = "1.1.0"


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that determines the dataset's content (compared before overwriting)."""
  vocab_file: str  # base name of the vocab, as copied into the dataset
  vocab_sha256: str
  vocab_size: int
  tokenizer_kind: str
  lower_case: bool
  special_ids: dict
  objective: str  # nsp | sop | none
  cross_documents: bool  # objective none: FULL-SENTENCES (True) or DOC-SENTENCES
  max_seq_length: int
  max_predictions_per_seq: int
  masked_lm_prob: float
  masking_strategy: str  # token | whole_word | span | ngram
  mask_token_prob: float
  random_token_prob: float
  segmenter: str  # none | jieba
  short_seq_prob: float
  masking: str
  dupe_factor: int
  whole_word_masking: bool  # masking_strategy == "whole_word" (for readers of 1.0.0's key)
  validation_fraction: float
  seed: int
  shard_bytes: int
  inputs: list  # text files as [path, size], or [] for a TFDS source
  tfds_source: str | None
  tfds_source_split: str | None
  text_feature: str | None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  def instance_options(self, split: str) -> pdata.InstanceOptions:
    return pdata.InstanceOptions(
        max_seq_length=self.max_seq_length, short_seq_prob=self.short_seq_prob,
        masking=self.masking, dupe_factor=self.dupe_factor if split == "train" else 1,
        masked_lm_prob=self.masked_lm_prob, max_predictions_per_seq=self.max_predictions_per_seq,
        masking_strategy=self.masking_strategy, mask_token_prob=self.mask_token_prob,
        random_token_prob=self.random_token_prob, objective=self.objective,
        cross_documents=self.cross_documents)


@dataclasses.dataclass(frozen=True)
class Job:
  """How to run a build (not part of the dataset's identity)."""
  settings: Settings
  vocab_path: str  # the vocab file to read and copy
  shards: tuple  # pdata.TextShard or TfdsShard
  num_workers: int = 1
  tfds_source_data_dir: str | None = None
  beam: bool = False


@dataclasses.dataclass(frozen=True)
class TfdsShard:
  """Examples of a TFDS text dataset's split (one document each): ranges [start, end) dealt
  from across the split, as text shards' pieces are (examples.DEFAULT_SHARD_BYTES)."""
  index: int
  ranges: tuple  # ((start, end), ...)

  @property
  def num_examples(self) -> int:
    return sum(end - start for start, end in self.ranges)


def features() -> tfds.features.FeaturesDict:
  seq = lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32)  # noqa: E731
  return tfds.features.FeaturesDict({
      "input_ids": seq(),
      "token_type_ids": seq(),
      "next_sentence_label": tfds.features.ClassLabel(names=["is_next", "not_next"]),
      "masked_positions": seq(),
      "masked_ids": seq(),
      "word_starts": seq(),
  })


class BertPretraining(tfds.core.GeneratorBasedBuilder):
  """BERT pretraining sentence pairs (google-research/bert's create_pretraining_data.py)."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {"1.0.0": "First release: dynamic or static masking, train/validation.",
                   "1.1.0": "Objectives nsp/sop/none, masking strategies, word_starts."}
  # TFDS derives this from the package with `importlib_resources`, which is not installed here;
  # the file itself is the same answer (used only to look for a checksums file).
  code_path = epath.Path(__file__)

  def __init__(self, *, job: Job | None = None, pool=None, **kwargs):
    self._job = job
    self._pool = pool  # worker_pool(job), held by the caller across both splits; None: per split
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=features(),
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/google-research/bert",
        citation=_CITATION)

  def _split_generators(self, dl_manager):
    del dl_manager
    job = self._job
    if job is None:
      raise RuntimeError(f"{NAME} is built by `python -m bert_jax.prepare`, not by tfds.load")
    # self.data_dir is TFDS's temporary directory here: the copy is renamed with the data.
    epath.Path(job.vocab_path).copy(epath.Path(self.data_dir) / job.settings.vocab_file,
                                    overwrite=True)
    # A tokenizer.json's tokenizer_config.json (special-token roles for transformers'
    # AutoTokenizer) travels with it, so an export of a run on this dataset carries it too.
    companion = epath.Path(job.vocab_path).parent / "tokenizer_config.json"
    if job.vocab_path.endswith(".json") and companion.exists():
      companion.copy(epath.Path(self.data_dir) / companion.name, overwrite=True)
    metadata = self.info.metadata
    metadata.update(job.settings.to_json())
    metadata["counts"] = {}
    splits = {"train": self._generate_examples(split="train")}
    if job.settings.validation_fraction > 0:
      splits["validation"] = self._generate_examples(split="validation")
    return splits

  def _generate_examples(self, split: str):
    job = self._job
    if job.beam:
      return _beam_transform(job, split)
    return self._generate_locally(job, split)

  def _generate_locally(self, job: Job, split: str):
    counts = collections.Counter()
    total = _total_work(job)
    start = time.time()
    last_log = start
    for shard, instances, stats in _map_shards(job, split, self._pool):
      counts.update(stats)
      for i, instance in enumerate(instances):
        yield f"{shard.index:06d}_{i:07d}", _to_example(instance)
      now = time.time()
      if now - last_log > 10 or counts["shards"] == len(job.shards):
        last_log = now
        done = counts["bytes"] if job.settings.inputs else counts["source_documents"]
        rate = counts["documents"] / max(now - start, 1e-9)
        eta = (now - start) * (total - done) / max(done, 1)
        logging.info("%s: %d/%d shards, %d documents (%.0f documents/s), %d examples, ETA %.0f s",
                     split, counts["shards"], len(job.shards), counts["documents"], rate,
                     counts["examples"], eta)
    if counts["invalid_utf8_bytes"]:
      logging.warning("%s: replaced %d invalid UTF-8 bytes with U+FFFD (dropped by the "
                      "tokenizer's text cleanup)", split, counts["invalid_utf8_bytes"])
    counts.pop("source_documents", None)
    self.info.metadata["counts"][split] = dict(counts)


def _to_example(instance: dict) -> dict:
  empty = np.zeros((0,), np.int32)
  return {"input_ids": instance["input_ids"], "token_type_ids": instance["token_type_ids"],
          "next_sentence_label": instance["next_sentence_label"],
          "masked_positions": instance.get("masked_positions", empty),
          "masked_ids": instance.get("masked_ids", empty),
          "word_starts": instance["word_starts"]}


def _total_work(job: Job) -> int:
  if job.settings.inputs:
    return sum(size for _, size in job.settings.inputs)
  return sum(s.num_examples for s in job.shards)


# --------------------------------------------------------------------------- shard processing

_TOKENIZERS = {}


def _tokenizer(job: Job):
  from bert_jax.text.tokenization import Tokenizer
  key = (job.vocab_path, job.settings.lower_case)
  if key not in _TOKENIZERS:
    _TOKENIZERS[key] = Tokenizer.from_file(job.vocab_path, lower_case=job.settings.lower_case)
  return _TOKENIZERS[key]


def _segmenter(name: str):
  from bert_jax.text.segmentation import get_segmenter
  return get_segmenter(name)


def _read_raw_documents(job: Job, shard) -> tuple[list[list[str]], int, int]:
  """(documents as lists of sentences, invalid UTF-8 bytes, work units) of one shard."""
  if isinstance(shard, pdata.TextShard):
    documents, invalid = pdata.read_text_documents(shard)
    return documents, invalid, shard.num_bytes
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  s = job.settings
  builder = tfds.builder(s.tfds_source, data_dir=job.tfds_source_data_dir)
  split = "+".join(f"{s.tfds_source_split}[{a}:{b}]" for a, b in shard.ranges)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  documents = []
  for example in ds.as_numpy_iterator():
    text = example[s.text_feature]
    if isinstance(text, bytes):
      text = text.decode("utf-8", errors="replace")
    documents.append(pdata.split_sentences(text))
  return documents, 0, shard.num_examples


def process_shard(job: Job, shard, split: str):
  """One shard -> (shard, instances, stats) for `split` ("train" or "validation")."""
  s = job.settings
  raw, invalid, work = _read_raw_documents(job, shard)
  train_docs, validation_docs = pdata.split_documents(raw, s.validation_fraction, s.seed,
                                                      shard.index)
  raw = train_docs if split == "train" else validation_docs
  tokenizer = _tokenizer(job)
  documents = pdata.tokenize_documents(tokenizer, raw, _segmenter(s.segmenter))
  stats = {"shards": 1, "bytes": work if s.inputs else 0, "source_documents": work,
           "documents": len(documents), "sentences": sum(len(d) for d in documents),
           "tokens": sum(len(sentence) for d in documents for sentence in d),
           "invalid_utf8_bytes": invalid if split == "train" else 0}
  rng = random.Random(pdata.shard_seed(s.seed, shard.index, split))
  instances = pdata.create_instances(documents, rng, s.instance_options(split),
                                     pdata.SpecialIds.of(tokenizer))
  stats["examples"] = len(instances)
  return shard, instances, stats


def _worker_init():
  # A forked worker inherits the parent's Python signal handlers; Pool.terminate() stops idle
  # workers with SIGTERM, which a handler that only sets a flag (a trainer's) would swallow.
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  os.environ["TOKENIZERS_PARALLELISM"] = "false"
  std_logging.getLogger().setLevel(std_logging.WARNING)


def worker_pool(job: Job):
  """The worker processes for `job`'s shards (a context manager), or None for one worker.

  prepare() holds one across both splits (forking a process with TensorFlow loaded costs tens of
  milliseconds); without one, each split makes its own. Text shards: forked workers run only
  tokenizers + numpy + Python (never TF, which this process has loaded). A TFDS source is read
  with TF in the workers: spawn fresh processes.
  """
  if job.num_workers <= 1 or len(job.shards) <= 1:
    return contextlib.nullcontext(None)
  text = isinstance(job.shards[0], pdata.TextShard)
  ctx = multiprocessing.get_context("fork" if text else "spawn")
  # Fork with SIGTERM at its default action, so a worker is killable by Pool.terminate() even
  # before its initializer runs (or if it never gets there): with a Python handler inherited,
  # a worker stuck before _worker_init ignored terminate and the pool's exit hung.
  main = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, signal.SIG_DFL) if main else None
  try:
    return ctx.Pool(min(job.num_workers, len(job.shards)), initializer=_worker_init)
  finally:
    if main:
      signal.signal(signal.SIGTERM, previous)


def _map_shards(job: Job, split: str, pool=None):
  """process_shard over all shards, in order, on `pool` (or a pool of its own)."""
  if pool is None:
    with worker_pool(job) as own:
      if own is None:
        for shard in job.shards:
          yield process_shard(job, shard, split)
      else:
        yield from _map_shards(job, split, own)
    return
  pending = collections.deque()
  for shard in job.shards:
    pending.append(pool.apply_async(process_shard, (job, shard, split)))
    if len(pending) >= 2 * job.num_workers:
      yield pending.popleft().get()
  while pending:
    yield pending.popleft().get()


# --------------------------------------------------------------------------- Apache Beam


def _beam_transform(job: Job, split: str):
  """The same per-shard processing as a Beam PTransform: Create(shards) | FlatMap(process)."""
  beam = tfds.core.lazy_imports.apache_beam

  def examples(shard):
    _, instances, _ = process_shard(job, shard, split)
    for i, instance in enumerate(instances):
      yield f"{shard.index:06d}_{i:07d}", _to_example(instance)

  return (f"Create{split}" >> beam.Create(list(job.shards))
          | f"Process{split}" >> beam.Reshuffle()
          | f"Examples{split}" >> beam.FlatMap(examples))


_CITATION = """@inproceedings{devlin2019bert,
  title={{BERT}: Pre-training of Deep Bidirectional Transformers for Language Understanding},
  author={Devlin, Jacob and Chang, Ming-Wei and Lee, Kenton and Toutanova, Kristina},
  booktitle={NAACL-HLT}, year={2019}}"""
