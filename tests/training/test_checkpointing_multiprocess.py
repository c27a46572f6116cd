"""Two real processes save checkpoints collectively while process 0 alone writes Orbax exports
in between (fine-tuning's best model): the processes keep numbering Orbax's operations alike,
so no save races Orbax's directory creation or waits for a signal that never comes."""

import os
import re

import pytest

import helpers


@pytest.mark.slow
def test_collective_saves_after_one_process_exports(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  outs = helpers.run_processes(["tests.training.checkpoint_worker", f"--workdir={tmp_path}",
                                "--rounds=4"], 2, tmp_path, env=env, timeout=180)
  ids = [re.search(r"orbax operation ids (\[.*\])", out).group(1) for out in outs]
  assert ids[0] == ids[1], ids  # before the fix: [3, 5, 7, 9] vs [2, 3, 4, 5]
  assert "saved steps [3, 4]" in outs[0]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "4"]
  assert sorted(os.listdir(tmp_path / "checkpoints" / "4")) == [
      "_CHECKPOINT_METADATA", "commit_success.txt", "data", "state"]
