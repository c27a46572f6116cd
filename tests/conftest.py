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
  import helpers
  from bert_jax.data import prepare
  from bert_jax.data import SAMPLE_CORPUS
  root = tmp_path_factory.mktemp("sample")
  vocab_path = helpers.sample_vocab()  # fixed: a vocab trained here differs between runs
  prepare.prepare(input=str(SAMPLE_CORPUS), vocab=vocab_path, data_dir=str(root / "data"),
                  max_seq_length=64, max_predictions_per_seq=10, validation_fraction=0.1)
  return vocab_path, str(root / "data")


@pytest.fixture(scope="session")
def pretrained_run(sample_data, tmp_path_factory):
  """BERT-tiny briefly pretrained on `sample_data` (the export and fine-tuning tests' start).

  40 steps at batch 16, written on a (data=4, fsdp=2) mesh of the 8 fake devices, checkpoints
  at steps 20 and 40. Returns {"workdir", "data_dir", "vocab"}.
  """
  from configs import tiny

  from bert_jax.training import trainer
  vocab, data_dir = sample_data
  config = tiny.get_config()
  config.data.data_dir = data_dir
  config.data.seq_len, config.data.max_predictions_per_seq = 64, 10
  config.data.shuffle_buffer = 256  # small: the iterator state is saved with each checkpoint
  config.train.batch_size, config.train.num_steps, config.train.log_every_steps = 16, 40, 20
  config.train.peak_tflops_per_device = 1.0  # skip the CPU matmul measurement
  # A modest peak rate: 40 steps at tiny's 1e-3 collapse every token onto one vector (cosine
  # similarity 1.0 between any two), which no fine-tuning undoes in a few dozen steps.
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 2e-4, 10
  config.checkpoint.every_steps = config.eval.every_steps = 20
  config.checkpoint.async_save = False
  config.eval.batch_size, config.eval.num_batches = 16, 2
  config.mesh.data, config.mesh.fsdp = 4, 2
  workdir = str(tmp_path_factory.mktemp("pretrained") / "run")
  trainer.train_and_evaluate(config, workdir)
  return {"workdir": workdir, "data_dir": data_dir, "vocab": vocab}
