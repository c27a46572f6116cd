"""Ahead-of-time compilation of the real train step for a TPU topology, on this CPU machine."""

import importlib.util

import pytest

from bert_jax import aot
from helpers import REPO, run_cli


@pytest.mark.parametrize("name,expected", [
    ("v4-8", ("v4:2x2x1", 4)), ("v4-32", ("v4:2x2x4", 16)), ("v5p-8", ("v5p:2x2x1", 4)),
    ("v5p-128", ("v5p:4x4x4", 64)), ("v5e-8", ("v5e:2x4", 8)), ("v5litepod-16", ("v5e:4x4", 16)),
    ("v6e-16", ("v6e:4x4", 16)), ("v5p:2x2x1", ("v5p:2x2x1", 4))])
def test_accelerator_types_map_to_topologies(name, expected):
  assert aot.parse_topology(name)[1:] == expected


def test_bad_topology_names():
  with pytest.raises(ValueError, match="unknown TPU 'v9'"):
    aot.parse_topology("v9-8")
  with pytest.raises(ValueError, match="v5p counts 2 cores per chip"):
    aot.parse_topology("v5p-7")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install 'bert_jax[tpu]')")
def test_compile_only_for_a_v5p_2x2x1(tmp_path):
  proc = run_cli([f"--config={REPO / 'configs' / 'tiny.py'}", "--compile_only",
                  "--topology=v5p:2x2x1", "--config.train.batch_size=16"], timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert ("topology v5p:2x2x1 (v5p:2x2x1): 4 devices, mesh {'data': 4, 'fsdp': 1, 'tensor': 1}, "
          "global batch 16 x 128") in out
  assert "of 95.00 GiB HBM -> fits" in out
  assert "compiler's ESTIMATED step time:" in out and "estimated MFU" in out
  scanned = run_cli([f"--config={REPO / 'configs' / 'tiny.py'}", "--compile_only",
                     "--topology=v5p:2x2x1", "--config.model.scan_layers=true"], timeout=900)
  assert "not available for scanned layers" in scanned.stdout, scanned.stderr[-2000:]
