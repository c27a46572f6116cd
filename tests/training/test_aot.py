"""Ahead-of-time compilation of the real train step for a TPU topology, on this CPU machine."""

import importlib.util

import pytest

from bert_jax.training import aot
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
  # 65,536 sequences per chip: the MLM logits alone (65,536 x 20 x 30,522 fp32) pass 95 GiB.
  too_big = run_cli([f"--config={REPO / 'configs' / 'tiny.py'}", "--compile_only",
                     "--topology=v5p:2x2x1", "--config.train.batch_size=262144"], timeout=900)
  assert too_big.returncode == 2, too_big.stderr[-2000:]
  last = too_big.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --topology=v5p:2x2x1: the train step does not fit in HBM (XLA: ")
  assert last.endswith("lower --config.train.batch_size (now 262144, 65536 per chip), set "
                       "--config.model.remat_policy=full or save_dots, or shard parameters with "
                       "--config.mesh.fsdp=N")


def test_compile_only_needs_a_topology():
  proc = run_cli([f"--config={REPO / 'configs' / 'tiny.py'}", "--compile_only"], timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: --compile_only needs --topology, e.g. --topology=v5p-8")


def test_does_not_fit_message_names_the_flags():
  import ml_collections
  config = ml_collections.ConfigDict({"train": {"batch_size": 3264}})
  xla = ("jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total "
         "memory required for HLO temporaries (33.21G) exceeds available HBM (30.75G).")
  e = aot.DoesNotFit(config, "v4-8", 4, "Traceback ...\n" + xla)
  assert (e.required_gib, e.available_gib) == (33.21, 30.75)
  assert str(e) == (
      "--topology=v4-8: the train step does not fit in HBM (XLA: Ran out of memory on HBM, the "
      "total memory required for HLO temporaries (33.21G) exceeds available HBM (30.75G).); "
      "lower --config.train.batch_size (now 3264, 816 per chip), set "
      "--config.model.remat_policy=full or save_dots, or shard parameters with "
      "--config.mesh.fsdp=N")


def test_both_spellings_of_the_tpu_out_of_hbm_error_are_refusals():
  import ml_collections
  config = ml_collections.ConfigDict({"train": {"batch_size": 17856}})
  # libtpu 0.0.42.1, BERT-Base with full remat at 4,464 sequences per v5p chip.
  xla = ("jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: XLA:TPU "
         "compile permanent error. Ran out of memory in memory space hbm. Used 95.75G of 95.74G "
         "hbm. Exceeded hbm capacity by 11.82M.\n\nTotal hbm usage >= 96.01G:")
  assert aot.is_hbm_refusal(xla)
  assert aot.is_hbm_refusal("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                            "required for HLO temporaries (33.21G) exceeds available HBM (30.75G).")
  assert not aot.is_hbm_refusal("RESOURCE_EXHAUSTED: Out of memory allocating host buffer")
  e = aot.DoesNotFit(config, "v5p-8", 4, xla)
  assert (e.required_gib, e.available_gib) == (95.75, 95.74)
  assert str(e).startswith("--topology=v5p-8: the train step does not fit in HBM (XLA: E1000: "
                           "CompileTimeHbmOom: XLA:TPU compile permanent error. Ran out of memory")
