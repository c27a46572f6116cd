"""python -m bert_jax.prepare: a real TFDS dataset, reproducible, atomic; one-line errors."""

import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import helpers
from bert_jax.data import tfds_builder as pds
from bert_jax.data import SAMPLE_CORPUS
from bert_jax.data.input_pipeline import find_dataset
from bert_jax.data.prepare import prepare
from bert_jax.errors import DataError

SMALL = dict(max_seq_length=64, max_predictions_per_seq=10, num_workers=1)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  return helpers.sample_vocab()


@pytest.fixture(scope="module")
def built(vocab, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("data"))
  out = prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=data_dir, num_workers=2,
                shard_size_mb=0.1)
  return data_dir, out


def _records(path, split):
  import tensorflow as tf
  files = sorted(glob.glob(os.path.join(path, f"bert_pretraining-{split}.tfrecord-*")))
  return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def _files_written(data_dir):
  return [f for f in glob.glob(os.path.join(data_dir, "**"), recursive=True)
          if os.path.isfile(f)]


def test_dataset_loads_with_tfds(built, vocab):
  import tensorflow_datasets as tfds
  data_dir, out = built
  assert out == os.path.join(data_dir, "bert_pretraining", "1.1.0")
  assert find_dataset(data_dir) == out
  assert not glob.glob(os.path.join(data_dir, "bert_pretraining", "incomplete*"))
  # Without our code: the directory alone.
  builder = tfds.builder_from_directory(out)
  info = builder.info
  assert info.name == "bert_pretraining" and str(info.version) == "1.1.0"
  train, validation = info.splits["train"].num_examples, info.splits["validation"].num_examples
  assert train > 500 and 10 < validation < 0.15 * train
  meta = info.metadata
  assert meta["masking"] == "dynamic" and meta["max_seq_length"] == 128
  assert meta["vocab_file"] == "vocab.txt" and meta["vocab_size"] == 2000 and meta["lower_case"]
  assert meta["counts"]["train"]["examples"] == train
  assert meta["counts"]["train"]["documents"] + meta["counts"]["validation"]["documents"] == 83
  with open(os.path.join(out, "vocab.txt"), "rb") as a, open(vocab, "rb") as b:
    assert a.read() == b.read()
  # With tfds.load (our builder is registered by the import above).
  ds = tfds.load("bert_pretraining", data_dir=data_dir, split="validation")
  n = 0
  for ex in tfds.as_numpy(ds):
    ids = ex["input_ids"]
    assert ids.dtype == np.int32 and len(ids) <= 128 and ids[0] == 2 and ids[-1] == 3
    assert len(ex["token_type_ids"]) == len(ids) and len(ex["masked_positions"]) == 0
    assert ex["next_sentence_label"] in (0, 1)
    n += 1
  assert n == validation


def test_same_output_for_any_number_of_workers(built, vocab, tmp_path):
  data_dir, out = built
  other = prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=str(tmp_path), num_workers=1,
                  shard_size_mb=0.1)
  for split in ("train", "validation"):
    assert _records(out, split) == _records(other, split)


def _flag_only(signum, frame):  # what a trainer's preemption handler does: note it, go on
  del signum, frame


def test_workers_keep_the_default_sigterm_action():
  """Pool.terminate() (leaving `with worker_pool(...)`) stops idle workers with SIGTERM. Forked
  workers inherit the parent's handlers; with a trainer's flag-only one inherited, a worker
  blocked on the task queue ignored it and prepare's pool exit hung forever (seen in the tests:
  prepare after train_and_evaluate in one process)."""
  from bert_jax.data.examples import TextShard
  job = pds.Job(settings=None, vocab_path="", shards=(TextShard(0, ()), TextShard(1, ())),
                num_workers=2)
  previous = signal.signal(signal.SIGTERM, _flag_only)
  try:
    with pds.worker_pool(job) as pool:
      assert pool.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_existing_dataset(built, vocab):
  data_dir, out = built
  before = {f: os.path.getmtime(f) for f in _files_written(data_dir)}
  # Same settings: nothing to do.
  assert prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=data_dir, shard_size_mb=0.1) == out
  with pytest.raises(DataError) as e:
    prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=data_dir, shard_size_mb=0.1, seed=1,
            masking="static")
  assert str(e.value) == (f"--data_dir {data_dir}: an existing dataset built with different "
                          f"settings (dupe_factor, masking, seed) is at {out}; pass --overwrite "
                          f"to replace it or choose another --data_dir")
  assert {f: os.path.getmtime(f) for f in _files_written(data_dir)} == before


def test_overwrite_static_whole_word(vocab, tmp_path):
  data_dir = str(tmp_path)
  prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=data_dir, **SMALL)
  out = prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=data_dir, masking="static",
                dupe_factor=2, whole_word_masking=True, overwrite=True, **SMALL)
  with open(os.path.join(out, "metadata.json")) as f:
    meta = json.load(f)
  assert meta["masking"] == "static" and meta["whole_word_masking"] and meta["dupe_factor"] == 2
  import tensorflow_datasets as tfds
  ds = tfds.builder_from_directory(out).as_dataset(split="train")
  for ex in tfds.as_numpy(ds.take(200)):
    pos = ex["masked_positions"]
    assert 1 <= len(pos) == len(ex["masked_ids"]) <= 10 and (np.diff(pos) > 0).all()
    assert (ex["input_ids"][pos] == 4).mean() > 0  # some [MASK]
  assert len(os.listdir(os.path.join(data_dir, "bert_pretraining"))) == 1


def _error(tmp_path, **kw):
  data_dir = str(tmp_path / "data")
  with pytest.raises(DataError) as e:
    prepare(data_dir=data_dir, **kw)
  assert "\n" not in str(e.value)
  assert not _files_written(data_dir)
  return str(e.value)


def test_bad_inputs(vocab, tmp_path):
  missing = str(tmp_path / "missing.txt")
  assert _error(tmp_path, input=missing, vocab=vocab) == (
      f"--input {missing}: no such file; pass an existing text file or glob")
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  assert _error(tmp_path, input=str(empty), vocab=vocab) == (
      f"--input {empty}: the input is empty; pass text files with one sentence per line and a "
      f"blank line between documents")
  singles = tmp_path / "singles.txt"
  singles.write_text("One sentence.\n\nAnother document.\n\n\nA third.\n")
  assert _error(tmp_path, input=str(singles), vocab=vocab) == (
      f"--input {singles}: no document has two sentences; write one sentence per line and a "
      f"blank line between documents (or pass --objective=none)")
  assert _error(tmp_path, input=str(singles), vocab=vocab, objective="sop") == (
      f"--input {singles}: no document has two sentences; --objective=sop swaps two segments of "
      f"one document: write one sentence per line and a blank line between documents")
  bad_vocab = tmp_path / "vocab.txt"
  bad_vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
  assert _error(tmp_path, input=SAMPLE_CORPUS, vocab=str(bad_vocab)) == (
      f"--vocab: vocab file {bad_vocab} lacks the special token(s) [MASK]: add them (a new vocab "
      f"from python -m bert_jax.vocab has them at ids 0-4)")
  assert _error(tmp_path, input=SAMPLE_CORPUS, vocab=vocab, max_seq_length=1024) == (
      "--max_seq_length=1024 is above --max_position_embeddings=512; lower it or raise "
      "max_position_embeddings")


def test_bad_objective_and_masking_flags(vocab, tmp_path, monkeypatch):
  kw = dict(input=SAMPLE_CORPUS, vocab=vocab)
  assert _error(tmp_path, objective="nsp2", **kw) == (
      "--objective=nsp2: must be one of nsp, sop, none")
  assert _error(tmp_path, masking_strategy="spans", **kw) == (
      "--masking_strategy=spans: must be one of token, whole_word, span, ngram")
  assert _error(tmp_path, masking_strategy="span", whole_word_masking=True, **kw) == (
      "--whole_word_masking (an alias of --masking_strategy=whole_word) contradicts "
      "--masking_strategy=span; drop one")
  for rate in (0.0, 1.0, 1.5):
    assert _error(tmp_path, masked_lm_prob=rate, **kw) == (
        f"--masked_lm_prob={rate}: must be in (0, 1) (0.15 as BERT, 0.3 as MosaicBERT/ModernBERT)")
  assert _error(tmp_path, masked_lm_prob=0.3, **kw) == (
      "--max_predictions_per_seq=20 cannot hold --masked_lm_prob=0.3 of 128 tokens (38 "
      "predictions); raise it to 38 or lower the rate")
  assert _error(tmp_path, mask_token_prob=0.8, random_token_prob=0.3, **kw) == (
      "--mask_token_prob=0.8 and --random_token_prob=0.3: must be probabilities summing to at "
      "most 1 (the rest keeps the token; BERT: 0.8 and 0.1)")
  monkeypatch.setitem(sys.modules, "jieba", None)  # not installed
  from bert_jax.text import segmentation
  monkeypatch.setattr(segmentation, "_jieba_tokenizer", None)
  assert _error(tmp_path, segmenter="jieba", **kw) == (
      "--segmenter=jieba: the jieba package is not installed; pip install jieba (or pip install "
      "'bert_jax[zh]')")
  # BERT's own phase-2 setting fits: 76 predictions at 512 x 0.15 = 76.8 (the count is capped).
  from bert_jax.data.prepare import check_masking_rates
  check_masking_rates(0.15, 76, 512)


def test_invalid_utf8_is_replaced_and_counted(vocab, tmp_path):
  with open(SAMPLE_CORPUS, "rb") as f:
    text = f.read()
  corpus = tmp_path / "corpus.txt"
  corpus.write_bytes(text[:40_000].replace(b"The ", b"The \xff\xfe", 7))
  out = prepare(input=str(corpus), vocab=vocab, data_dir=str(tmp_path / "d"), **SMALL)
  with open(os.path.join(out, "metadata.json")) as f:
    assert json.load(f)["counts"]["train"]["invalid_utf8_bytes"] == 14


def test_cli_error_is_one_line(vocab, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  r = subprocess.run([sys.executable, "-m", "bert_jax.prepare", f"--input={SAMPLE_CORPUS}",
                      f"--vocab={vocab}", f"--data_dir={tmp_path}", "--max_seq_length=600"],
                     capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 2
  assert r.stderr.strip() == ("error: --max_seq_length=600 is above --max_position_embeddings="
                              "512; lower it or raise max_position_embeddings")
  assert not os.listdir(tmp_path)


def test_interrupted_prepare_leaves_nothing_loadable(vocab, tmp_path, monkeypatch):
  import tensorflow_datasets as tfds
  calls = []
  original = pds.process_shard

  def failing(job, shard, split):
    calls.append(shard.index)
    if len(calls) == 3:
      raise KeyboardInterrupt("simulated interruption")
    return original(job, shard, split)

  monkeypatch.setattr(pds, "process_shard", failing)
  with pytest.raises(KeyboardInterrupt):
    prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=str(tmp_path), shard_size_mb=0.05,
            **SMALL)
  assert len(calls) == 3
  assert not glob.glob(str(tmp_path / "**" / "dataset_info.json"), recursive=True)
  assert not glob.glob(str(tmp_path / "**" / "vocab.txt"), recursive=True)
  with pytest.raises(FileNotFoundError):
    find_dataset(str(tmp_path))
  with pytest.raises(Exception):  # noqa: B017 - whatever TFDS raises, it must not load
    tfds.builder_from_directory(str(tmp_path / "bert_pretraining" / "1.1.0"))


class TinyDocs(pds.tfds.core.GeneratorBasedBuilder):
  """A small TFDS text dataset: one document (several paragraphs) per example."""
  VERSION = pds.tfds.core.Version("1.0.0")
  code_path = pds.epath.Path(__file__)

  def _info(self):
    tfds = pds.tfds
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"title": tfds.features.Text(), "text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    with open(SAMPLE_CORPUS, encoding="utf-8") as f:
      docs = f.read().split("\n\n")
    for i, doc in enumerate(docs[:40]):
      yield i, {"title": f"doc {i}", "text": " ".join(doc.split("\n"))}


def test_tfds_source(vocab, tmp_path):
  source_dir = str(tmp_path / "source")
  TinyDocs(data_dir=source_dir).download_and_prepare()
  out = prepare(tfds_source="tiny_docs", tfds_source_data_dir=source_dir, text_feature="text",
                vocab=vocab, data_dir=str(tmp_path / "d"), **SMALL)
  with open(os.path.join(out, "metadata.json")) as f:
    meta = json.load(f)
  counts = meta["counts"]
  assert counts["train"]["documents"] + counts["validation"]["documents"] == 40
  assert counts["train"]["sentences"] > 300  # split into sentences again
  assert meta["tfds_source"] == "tiny_docs" and counts["train"]["examples"] > 100
  assert _error(tmp_path, tfds_source="tiny_docs", tfds_source_data_dir=source_dir,
                text_feature="body", vocab=vocab) == (
      "--text_feature=body: tiny_docs has no such feature (it has text, title)")


def test_beam_direct_runner_matches_local_build(built, vocab, tmp_path):
  data_dir, out = built
  beam_out = prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=str(tmp_path), beam=True,
                     num_workers=2, shard_size_mb=0.1)
  for split in ("train", "validation"):
    assert sorted(_records(beam_out, split)) == sorted(_records(out, split))
