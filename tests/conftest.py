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
