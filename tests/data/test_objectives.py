"""Sentence objectives (SOP, none) and masking strategies (token, whole_word, span, ngram) of
data.examples on real text: the structure each source defines, and exact rates."""

import collections
import random

import numpy as np
import pytest

from bert_jax.data import SAMPLE_CORPUS
from bert_jax.data import examples as pdata


def _make(documents, tokenizer, seed=0, **kw):
  return pdata.create_instances([list(d) for d in documents], random.Random(seed),
                                pdata.InstanceOptions(**kw), pdata.SpecialIds.of(tokenizer))


def _text(ids):  # token ids as a string, so that sub-sequences can be found with str.find
  return "".join(chr(0x10000 + int(t)) for t in ids)


def test_sop_pairs_are_ordered_or_swapped_segments_of_one_document(documents, tokenizer):
  docs = [_text([t for s in d for t in s]) for d in documents]
  sentences = [_text(s) for d in documents for s in d]
  kinds = collections.Counter()
  for seed in range(12):
    for inst in _make(documents, tokenizer, seed, objective="sop"):
      ids = inst["input_ids"]
      sep = int(np.flatnonzero(ids == tokenizer.sep_id)[0])
      a, b = _text(ids[1:sep]), _text(ids[sep + 1:-1])
      where = [(k, doc.find(a)) for k, doc in enumerate(docs) if a in doc]
      assert where, "A is not a contiguous part of any document"
      in_order = any(docs[k].find(b, pa + len(a)) >= 0 for k, pa in where)
      swapped = any(0 <= docs[k].find(b) <= pa - len(b) for k, pa in where)
      if inst["next_sentence_label"] == 0:
        assert in_order
        kinds["in_order"] += 1
      elif swapped:
        kinds["swapped"] += 1
      else:
        # ALBERT's code keeps BERT's random next for a chunk of a single sentence: A is one
        # (truncated) sentence and B comes from another document.
        assert any(a in s for s in sentences)
        kinds["one_sentence_random_next"] += 1
  decided = kinds["in_order"] + kinds["swapped"]
  assert decided > 6000
  assert abs(kinds["swapped"] / decided - 0.5) < 0.02, kinds
  assert kinds["one_sentence_random_next"] < 0.25 * sum(kinds.values()), kinds


@pytest.mark.parametrize("cross_documents", [True, False])
def test_none_rows_are_full_sentences(documents, tokenizer, cross_documents):
  docs = [_text([t for s in d for t in s]) for d in documents]
  rows = _make(documents, tokenizer, objective="none", max_seq_length=512,
               cross_documents=cross_documents)
  lengths = np.array([len(r["input_ids"]) for r in rows])
  assert (lengths <= 512).all() and len(rows) > 100
  if cross_documents:
    assert lengths.mean() > 0.96 * 512, lengths.mean()
  parts_total = 0
  for r in rows:
    ids = r["input_ids"]
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
    assert not r["token_type_ids"].any() and r["next_sentence_label"] == 0
    inner = np.flatnonzero(ids[1:-1] == tokenizer.sep_id) + 1
    if not cross_documents:
      assert not len(inner)
    bounds = [0, *inner.tolist(), len(ids) - 1]
    parts = [_text(ids[s + 1:e]) for s, e in zip(bounds[:-1], bounds[1:])]
    parts_total += len(parts)
    for k, part in enumerate(parts):
      # Each part lies inside one document; one that is followed by a [SEP] ends its document
      # and one that follows a [SEP] starts its document: no row crosses a document silently.
      assert any(part in doc for doc in docs)
      if k < len(parts) - 1:
        assert any(doc.endswith(part) for doc in docs)
      if k > 0:
        assert any(doc.startswith(part) for doc in docs)
  if cross_documents:
    assert parts_total > len(rows)  # rows do cross documents


@pytest.mark.parametrize("strategy", pdata.MASKING_STRATEGIES)
@pytest.mark.parametrize("rate,max_predictions", [(0.15, 20), (0.3, 40)])
def test_mask_rates_are_exact(documents, tokenizer, strategy, rate, max_predictions):
  instances = _make(documents, tokenizer, masking="static", masking_strategy=strategy,
                    masked_lm_prob=rate, max_predictions_per_seq=max_predictions)
  masked = sum(len(i["masked_positions"]) for i in instances)
  tokens = sum(len(i["input_ids"]) for i in instances)
  assert abs(masked / tokens - rate) < 0.005, masked / tokens
  for i in instances:
    assert len(i["masked_positions"]) <= max_predictions
    assert len(set(i["masked_positions"].tolist())) == len(i["masked_positions"])


def _words_of(inst, tokenizer):
  words = pdata._words(inst["input_ids"], inst["word_starts"].astype(bool),
                       pdata.SpecialIds.of(tokenizer))
  return words, {index: w for w, word in enumerate(words) for index in word}


def test_span_lengths_follow_the_clipped_geometric(documents, tokenizer):
  rng = random.Random(0)
  drawn = collections.Counter(pdata.span_length(rng) for _ in range(200_000))
  pmf = np.array([0.2 * 0.8 ** k for k in range(10)])
  pmf /= pmf.sum()
  for length in range(1, 11):
    assert abs(drawn[length] / 200_000 - pmf[length - 1]) < 0.004
  assert set(drawn) == set(range(1, 11))
  mean = sum(k * v for k, v in drawn.items()) / 200_000
  assert abs(mean - 3.78) < 0.03, mean
  # Realised spans: whole, contiguous words of one segment, at most 10; shorter on average
  # than drawn (the budget and already chosen words end spans).
  realised = []
  for inst in _make(documents, tokenizer):
    words, word_of = _words_of(inst, tokenizer)
    for span in pdata._span_sets(words, 19, rng):
      covered = sorted({word_of[i] for i in span})
      assert span == [i for w in covered for i in words[w]]
      assert covered == list(range(covered[0], covered[-1] + 1)) and len(covered) <= 10
      # no [SEP] between two of its words (a word itself may straddle one: a B that starts
      # with a ## piece continues A's last word, as whole-word masking's reference has it)
      assert all(words[w][0] == words[w - 1][-1] + 1 for w in covered[1:])
      realised.append(len(covered))
  assert len(realised) > 2000 and 2.5 < np.mean(realised) < 3.78


def test_span_replacement_is_decided_per_span(documents, tokenizer):
  special = pdata.SpecialIds.of(tokenizer)
  options = pdata.InstanceOptions(masking="static", masking_strategy="span")
  mixed = whole = 0
  for inst in _make(documents, tokenizer):
    words, _ = _words_of(inst, tokenizer)
    ids = inst["input_ids"].copy()
    seed = int(inst["input_ids"].sum())
    out = pdata.create_masked_lm_predictions(ids, inst["word_starts"].astype(bool),
                                             random.Random(seed), options, special)
    # The spans are drawn first, so the same seed gives them again.
    budget = pdata.num_to_predict(len(ids), 0.15, 20)
    for span in pdata._span_sets(words, budget, random.Random(seed)):
      kinds = {"mask" if ids[i] == special.mask_id else
               "kept" if ids[i] == inst["input_ids"][i] else "random" for i in span}
      whole += len(span) > 1
      # (a random id can equal the original: "kept" next to "random" is allowed)
      mixed += "mask" in kinds and len(kinds) > 1
    assert sorted(out["masked_positions"].tolist()) == out["masked_positions"].tolist()
  assert whole > 500 and mixed <= 2, mixed  # random ids that hit [MASK]


def test_ngram_lengths_follow_one_over_n(documents, tokenizer):
  rng = random.Random(0)
  drawn = collections.Counter(1 + pdata._draw(rng, pdata._NGRAM_CDF) for _ in range(200_000))
  for n, p in zip((1, 2, 3), (6 / 11, 3 / 11, 2 / 11)):
    assert abs(drawn[n] / 200_000 - p) < 0.004
  realised = collections.Counter()
  for inst in _make(documents, tokenizer):
    words, word_of = _words_of(inst, tokenizer)
    for index_set in pdata._ngram_sets(words, 19, rng):
      covered = sorted({word_of[i] for i in index_set})
      assert index_set == [i for w in covered for i in words[w]]
      assert covered == list(range(covered[0], covered[-1] + 1))
      realised[len(covered)] += 1
  total = sum(realised.values())
  share = [realised[n] / total for n in (1, 2, 3)]
  # Near the budget ALBERT falls back to shorter n-grams, and overlapping ones are skipped:
  # a little more weight on n = 1 than 1/n.
  assert share[0] > share[1] > share[2] > 0.1 and abs(share[0] - 6 / 11) < 0.08, share


def test_replacement_shares_are_configurable(documents, tokenizer):
  kinds = collections.Counter()
  for inst in _make(documents, tokenizer, masking="static", mask_token_prob=0.5,
                    random_token_prob=0.3, dupe_factor=3):
    ids, pos, orig = inst["input_ids"], inst["masked_positions"], inst["masked_ids"]
    kinds["mask"] += int((ids[pos] == tokenizer.mask_id).sum())
    kinds["kept"] += int((ids[pos] == orig).sum())
    kinds["random"] += int(((ids[pos] != orig) & (ids[pos] != tokenizer.mask_id)).sum())
  total = sum(kinds.values())
  assert total > 20_000
  assert abs(kinds["mask"] / total - 0.5) < 0.015 and abs(kinds["kept"] / total - 0.2) < 0.015


def test_shards_draw_documents_from_across_the_corpus(tmp_path):
  # 40 documents in order; with 4 shards, each shard's documents span the whole corpus.
  path = tmp_path / "c.txt"
  path.write_text("".join(f"doc {d} sentence one.\ndoc {d} sentence two.\n\n" for d in range(400)))
  shards = pdata.plan_text_shards([str(path)], shard_bytes=path.stat().st_size // 4)
  assert len(shards) == 4
  seen = []
  for shard in shards:
    docs, _ = pdata.read_text_documents(shard)
    numbers = [int(d[0].split()[1]) for d in docs]
    assert min(numbers) < 40 and max(numbers) >= 360  # from the start to the end
    seen += numbers
  assert sorted(seen) == list(range(400))


def test_validation_holds_out_the_fraction_of_text(documents):
  # The sample has a few large documents: by count 5% of documents was far from 5% of text.
  raw, _ = pdata.read_text_documents(pdata.plan_text_shards([SAMPLE_CORPUS])[0])
  size = lambda docs: sum(len(line) for d in docs for line in d)  # noqa: E731
  for seed in range(5):
    train, validation = pdata.split_documents(raw, 0.05, seed, 0)
    assert sorted(map(tuple, train + validation)) == sorted(map(tuple, raw))
    assert abs(size(validation) / size(raw) - 0.05) < 0.01
