"""Fixtures of the data tests: the sample corpus's documents under the fixed sample vocabulary."""

import pytest

import helpers
from bert_jax.data import SAMPLE_CORPUS
from bert_jax.data import examples as pdata
from bert_jax.text.tokenization import Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
  return Tokenizer.from_file(helpers.sample_vocab())


@pytest.fixture(scope="module")
def documents(tokenizer):
  """The whole sample (one shard), tokenized: per document, per sentence, token ids."""
  (shard,) = pdata.plan_text_shards([SAMPLE_CORPUS])
  raw, invalid = pdata.read_text_documents(shard)
  assert invalid == 0 and len(raw) == 83
  return pdata.tokenize_documents(tokenizer, raw)
