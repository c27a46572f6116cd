"""Input pipeline: shapes, BERT masking statistics, determinism, exact resume, per-process split."""

import collections
import os
import subprocess
import sys

import numpy as np
import pytest

import helpers
from bert_jax.data import input_pipeline as ip
from bert_jax.data import SAMPLE_CORPUS
from bert_jax.data.prepare import prepare
from bert_jax.text.tokenization import Tokenizer
from bert_jax.text.vocab import train_vocab

L, P = 64, 10
CLS, SEP, MASK = 2, 3, 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  vocab = helpers.sample_vocab()
  out = str(tmp_path_factory.mktemp("data"))
  prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=out, max_seq_length=L,
          max_predictions_per_seq=P)
  return out


def _train(data_dir, **kw):
  args = dict(batch_size=8, seq_len=L, max_predictions_per_seq=P, seed=0)
  args.update(kw)
  return ip.train_iterator(data_dir, **args)


def _unmask(batch):
  """input_ids with the masked positions restored to their original ids."""
  ids = batch["input_ids"].copy()
  rows = np.arange(len(ids))[:, None]
  weights = batch["masked_weights"] > 0
  ids[np.broadcast_to(rows, weights.shape)[weights], batch["masked_positions"][weights]] = \
      batch["masked_ids"][weights]
  return ids


def _same(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_dataset_info(data_dir):
  info = ip.dataset_info(data_dir)
  assert info["max_seq_length"] == L and info["max_predictions_per_seq"] == P
  assert info["masking"] == "dynamic" and info["whole_word_masking"] is False
  assert info["vocab_size"] == 2000 and info["vocab_path"].endswith("1.1.0/vocab.txt")
  assert info["num_train_examples"] > 1000 and info["num_validation_examples"] > 20
  assert info["name"] == "bert_pretraining" and info["version"] == "1.1.0"
  assert ip.dataset_info(data_dir, "bert_pretraining:1.1.0") == info
  with pytest.raises(FileNotFoundError):
    ip.dataset_info(data_dir, "bert_pretraining/other")


def test_shapes_dtypes_and_masking(data_dir):
  it = _train(data_dir, batch_size=64)
  counts = collections.Counter()
  for _ in range(10):
    b = next(it)
    assert {k: (v.dtype.name, v.shape) for k, v in b.items()} == {
        "input_ids": ("int32", (64, L)), "token_type_ids": ("int32", (64, L)),
        "attention_mask": ("int32", (64, L)), "masked_positions": ("int32", (64, P)),
        "masked_ids": ("int32", (64, P)), "masked_weights": ("float32", (64, P)),
        "next_sentence_label": ("int32", (64,))}
    lengths = b["attention_mask"].sum(1)
    original = _unmask(b)
    assert (original[:, 0] == CLS).all()
    assert (original[np.arange(64), lengths - 1] == SEP).all()
    assert (b["input_ids"] * (1 - b["attention_mask"]) == 0).all()  # [PAD] = 0 after the end
    w = b["masked_weights"] > 0
    # Exactly the reference's count, sorted positions, never [CLS]/[SEP]/padding.
    np.testing.assert_array_equal(w.sum(1), np.minimum(P, np.maximum(1, np.round(lengths * .15))))
    assert (np.diff(np.where(w, b["masked_positions"], L + np.arange(P)), axis=1) > 0).all()
    assert not np.isin(b["masked_ids"][w], [0, CLS, SEP]).any()
    assert (b["masked_positions"][w] < lengths[:, None].repeat(P, 1)[w]).all()
    assert (b["masked_positions"][~w] == 0).all() and (b["masked_ids"][~w] == 0).all()
    now = np.take_along_axis(b["input_ids"], b["masked_positions"], 1)[w]
    counts["mask"] += (now == MASK).sum()
    counts["same"] += (now == b["masked_ids"][w]).sum()
    counts["random"] += ((now != MASK) & (now != b["masked_ids"][w])).sum()
    # Outside the masked positions nothing changed.
    assert ((b["input_ids"] == original) | (np.isin(np.arange(L)[None], b["masked_positions"]))).all()
    counts["not_next"] += b["next_sentence_label"].sum()
  total = counts["mask"] + counts["same"] + counts["random"]
  assert total > 5000
  assert abs(counts["mask"] / total - 0.8) < 0.025
  assert abs(counts["same"] / total - 0.1) < 0.02 and abs(counts["random"] / total - 0.1) < 0.02
  # NotNext: 0.5 plus the chunks with one segment (always NotNext), which depends on the trained
  # vocabulary: 0.54-0.655 over 17 vocabularies of this sample (one at 0.655 failed a CI run
  # under the old 0.65 bound); the generator's draws are checked in tests/data/test_examples.py.
  assert 0.4 < counts["not_next"] / 640 < 0.7


def test_whole_word_masking(data_dir):
  starts = Tokenizer.from_file(ip.dataset_info(data_dir)["vocab_path"]).is_word_start
  it = _train(data_dir, batch_size=64, whole_word_masking=True)
  multi = 0
  for _ in range(5):
    b = next(it)
    original = _unmask(b)
    lengths = b["attention_mask"].sum(1)
    for row in range(64):
      ids = original[row, :lengths[row]]
      masked = np.zeros(len(ids), bool)
      w = b["masked_weights"][row] > 0
      masked[b["masked_positions"][row][w]] = True
      assert 1 <= w.sum() <= min(P, max(1, round(len(ids) * 0.15)))
      cand = ~np.isin(ids, [CLS, SEP])
      word = np.full(len(ids), -1)
      word[cand] = np.cumsum(starts[ids[cand]] | (np.cumsum(cand)[cand] == 1))
      for w_id in np.unique(word[masked]):
        assert masked[word == w_id].all()
        multi += (word == w_id).sum() > 1
  assert multi > 50


def test_deterministic_and_seeded(data_dir):
  a, b, c = _train(data_dir), _train(data_dir), _train(data_dir, seed=1)
  for _ in range(3):
    x, y, z = next(a), next(b), next(c)
    assert _same(x, y) and not _same(x, z)


def test_resume_exactly(data_dir, tmp_path):
  # Past one epoch of this small dataset (about 1,200 examples / 64) and the shuffle buffer.
  it = _train(data_dir, batch_size=64, shuffle_buffer=500)
  for _ in range(25):
    next(it)
  it.save(str(tmp_path / "ckpt"))
  expected = [next(it) for _ in range(4)]
  fresh = _train(data_dir, batch_size=64, shuffle_buffer=500)
  fresh.restore(str(tmp_path / "ckpt"))
  for want in expected:
    assert _same(next(fresh), want)
  # And in a new process.
  script = (
      "import sys, numpy as np\n"
      "from bert_jax.data import input_pipeline as ip\n"
      f"it = ip.train_iterator({data_dir!r}, batch_size=64, seq_len={L}, "
      f"max_predictions_per_seq={P}, seed=0, shuffle_buffer=500)\n"
      f"it.restore({str(tmp_path / 'ckpt')!r})\n"
      "b = next(it)\n"
      f"np.savez({str(tmp_path / 'next.npz')!r}, **b)\n")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                     timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  assert _same(dict(np.load(tmp_path / "next.npz")), expected[0])
  wrong = _train(data_dir, batch_size=32, shuffle_buffer=500)
  with pytest.raises(ValueError, match="batch_size"):
    wrong.restore(str(tmp_path / "ckpt"))


def test_processes_read_disjoint_data_covering_everything(data_dir):
  import tensorflow_datasets as tfds
  path = ip.dataset_info(data_dir)["path"]
  everything = {tuple(ex["input_ids"]) for ex in tfds.as_numpy(
      tfds.builder_from_directory(path).as_dataset(split="train"))}
  seen = []
  for index in range(2):
    n = sum(ip._file_instructions(path, "train", index, 2)[2])
    it = _train(data_dir, batch_size=1, process_index=index, process_count=2, shuffle_buffer=64)
    # The shuffle buffer spans epochs, so an example late in the first epoch can come out well
    # into the second (a read of n + 200 missed one in a CI run): read two epochs and a bit.
    rows = [_unmask(next(it))[0] for _ in range(2 * n + 200)]
    seen.append({tuple(r[r > 0]) for r in rows})
    assert abs(n - len(everything) / 2) <= 1
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == everything


def test_static_dataset(tmp_path):
  vocab = train_vocab(SAMPLE_CORPUS, str(tmp_path / "v"), vocab_size=1500)
  prepare(input=SAMPLE_CORPUS, vocab=vocab, data_dir=str(tmp_path / "d"), max_seq_length=L,
          max_predictions_per_seq=P, masking="static", dupe_factor=1, num_workers=1)
  b = next(ip.train_iterator(str(tmp_path / "d"), batch_size=16, seq_len=L,
                             max_predictions_per_seq=P + 2, seed=0))
  w = b["masked_weights"] > 0
  assert b["masked_positions"].shape == (16, P + 2) and (w.sum(1) >= 1).all() and not w[:, P:].any()
  assert (np.take_along_axis(b["input_ids"], b["masked_positions"], 1)[w] == MASK).mean() > 0.6
  with pytest.raises(ValueError, match="below the static dataset's"):
    ip.train_iterator(str(tmp_path / "d"), batch_size=16, seq_len=L, max_predictions_per_seq=5,
                      seed=0)


def test_eval_batches(data_dir):
  n = ip.dataset_info(data_dir)["num_validation_examples"]
  first = list(ip.eval_batches(data_dir, batch_size=16, seq_len=L, max_predictions_per_seq=P))
  again = list(ip.eval_batches(data_dir, batch_size=16, seq_len=L, max_predictions_per_seq=P))
  assert len(first) == len(again) == -(-n // 16)
  assert all(_same(a, b) for a, b in zip(first, again))  # fixed masks
  weights = np.concatenate([b["example_weight"] for b in first])
  assert weights.dtype == np.float32 and weights.sum() == n and set(weights) == {0.0, 1.0}
  pad_rows = np.concatenate([b["masked_weights"] for b in first])[weights == 0]
  assert (pad_rows == 0).all()
  per_process = [ip.eval_batches(data_dir, batch_size=16, seq_len=L, max_predictions_per_seq=P,
                                 process_index=i, process_count=3) for i in range(3)]
  assert len({len(list(p)) for p in per_process}) == 1  # same number of batches everywhere
  assert sum(b["example_weight"].sum() for p in per_process for b in p) == n
  assert len(list(ip.eval_batches(data_dir, batch_size=4, seq_len=L, max_predictions_per_seq=P,
                                  max_batches=2))) == 2


def test_seq_len_must_match(data_dir):
  with pytest.raises(ValueError, match="differs from the dataset's max_seq_length 64"):
    _train(data_dir, seq_len=128)


def _sequences(batch):
  """Each sequence of a batch as a comparable tuple (tokens, types, masked (pos, id, w), label),
  reading packed rows segment by segment."""
  out = []
  packed = "segment_ids" in batch
  for r in range(len(batch["input_ids"])):
    segments = (range(1, batch["segment_ids"][r].max() + 1) if packed else [None])
    for k in segments:
      where = (np.nonzero(batch["segment_ids"][r] == k)[0] if packed
               else np.nonzero(batch["attention_mask"][r])[0])
      if not len(where):
        continue
      start, end = where[0], where[-1] + 1
      assert np.all(batch["attention_mask"][r, start:end] == 1)
      if packed:
        assert np.array_equal(batch["position_ids"][r, start:end], np.arange(end - start))
        assert batch["cls_positions"][r, k - 1] == start and batch["nsp_weights"][r, k - 1] == 1
      w = batch["masked_weights"][r]
      p = batch["masked_positions"][r]
      sel = (w > 0) & (p >= start) & (p < end)
      label = batch["next_sentence_label"][r, k - 1] if packed else batch["next_sentence_label"][r]
      out.append((tuple(batch["input_ids"][r, start:end]), tuple(batch["token_type_ids"][r, start:end]),
                  tuple(zip(p[sel] - start, batch["masked_ids"][r][sel], w[sel])), int(label)))
  return sorted(out)


def test_packing_keeps_every_sequence_whole_within_the_budgets(data_dir):
  # 512 sequences hold dozens of at most L/2 tokens whatever vocabulary the (not bit-for-bit
  # reproducible) WordPiece trainer produced, so some rows must take several sequences.
  group = next(_train(data_dir, batch_size=512))
  rows = ip.pack_examples(group, max_sequences_per_row=3, pad_id=0)
  used = rows.pop("row_used")
  assert used.sum() < 512  # short sequences were packed together
  assert not used[used.sum():].any()  # used rows first
  rows = {k: v[used] for k, v in rows.items()}
  assert _sequences(rows) == _sequences(group)  # nothing dropped, cut or changed
  assert rows["segment_ids"].max() <= 3 and rows["nsp_weights"].sum() == 512
  assert (rows["masked_weights"] > 0).sum() == (group["masked_weights"] > 0).sum()


def test_packed_pipeline_is_the_packed_groups_and_resumes_exactly(data_dir, tmp_path):
  kw = dict(batch_size=16, pack=True, max_sequences_per_row=3, pack_group=64,
            shuffle_buffer=500)
  it = _train(data_dir, **kw)
  first = next(it)
  assert first["next_sentence_label"].shape == (16, 3) and first["segment_ids"].shape == (16, L)
  group = next(_train(data_dir, batch_size=64, shuffle_buffer=500))  # the same first group
  rows = ip.pack_examples(group, max_sequences_per_row=3, pad_id=0)
  assert _same({k: v[:16] for k, v in rows.items() if k != "row_used"}, first)
  for _ in range(30):  # past several groups
    next(it)
  it.save(str(tmp_path / "ckpt"))
  expected = [next(it) for _ in range(3)]
  fresh = _train(data_dir, **kw)
  fresh.restore(str(tmp_path / "ckpt"))
  for want in expected:
    assert _same(next(fresh), want)
  unpacked = _train(data_dir, batch_size=16, shuffle_buffer=500)
  with pytest.raises(ValueError, match="pack"):
    unpacked.restore(str(tmp_path / "ckpt"))
