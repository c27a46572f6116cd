"""Test set-up: 8 fake CPU devices, CPU-only JAX, quiet TF. Must run before jax is imported."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: takes more than ~20 s (still run by tests/run.sh)")


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
  return REPO


import sys  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))  # `import helpers`


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
  """(vocab.txt, data_dir): a seq-64 dataset from the bundled sample corpus, built once."""
  from bert_jax import prepare, vocab
  from bert_jax.data import SAMPLE_CORPUS
  root = tmp_path_factory.mktemp("sample")
  vocab_path = vocab.train_vocab(str(SAMPLE_CORPUS), str(root / "vocab"), vocab_size=2000,
                                 kind="wordpiece", lower_case=True)
  prepare.prepare(input=str(SAMPLE_CORPUS), vocab=vocab_path, data_dir=str(root / "data"),
                  max_seq_length=64, max_predictions_per_seq=10, validation_fraction=0.1)
  return vocab_path, str(root / "data")
