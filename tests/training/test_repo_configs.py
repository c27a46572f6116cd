"""Every pretraining config shipped in configs/ passes the start-up checks (a preset's keys,
its schedule, its batch-size warmup), so none fails only once a user launches it."""

import importlib
import pathlib

import pytest

from bert_jax.training import config as config_lib
from helpers import REPO

NAMES = sorted(p.stem for p in (pathlib.Path(REPO) / "configs").glob("*.py")
               if p.stem != "__init__")


@pytest.mark.parametrize("name", NAMES)
def test_config_validates(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  config_lib.validate_config(config)
