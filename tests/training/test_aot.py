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


# ---- the splash kernels' cost, added to XLA's estimate (pure arithmetic, no compile) ---------
def test_splash_tiles_global_and_local():
  assert aot.splash_blocks(8192, 512, None) == 256  # (8192 / 512)^2
  # ±64 at 512-blocks: a query block meets its own and both neighbours (2 at the ends).
  assert aot.splash_blocks(8192, 512, 64) == 14 * 3 + 2 * 2
  assert aot.splash_blocks(1024, 512, 64) == 4
  assert aot.splash_blocks(1024, 128, 64) == 6 * 3 + 2 * 2
  assert aot.splash_blocks(1024, 512, 1024) == 4  # a window as long as L is global
  assert aot.splash_blocks(1536, 512, 0) == 3  # the diagonal only


def test_splash_pass_flops_and_bytes():
  layer = aot.SplashLayer(batch=2, heads=3, seq_len=1024, head_dim=64, window=None, block=512)
  fwd, fwd_bytes = aot.splash_pass_cost(layer, "fwd")
  assert fwd == 4 * 2 * 3 * 1024 * 1024 * 64  # 4·b·n·L·L·D: QK^T and PV
  dq, _ = aot.splash_pass_cost(layer, "dq")
  dkv, _ = aot.splash_pass_cost(layer, "dkv")
  assert (dq + dkv) / fwd == 3.5  # 7 matrix products to 2 (unfused backward)
  tensor = 2 * 3 * 1024 * 64 * 2  # one bf16 [b, n, L, D]
  # q and o once, k and v once per query block (2 of them), logsumexp [n, L, 128] f32.
  assert fwd_bytes == 2 * tensor + 2 * 2 * tensor + 2 * 3 * 1024 * 128 * 4
  local = aot.SplashLayer(2, 3, 1024, 64, window=64, block=128)
  assert aot.splash_pass_cost(local, "fwd")[0] == 4 * 2 * 3 * 64 * 22 * 128 * 128
  with pytest.raises(ValueError, match="not one of fwd, dq, dkv"):
    aot.splash_pass_cost(layer, "bwd")
  # The fused backward: one dkv pass of 5 products, which also writes a partial dQ per kv block.
  fused, fused_bytes = aot.splash_pass_cost(layer, "dkv", fused=True)
  assert fused / fwd == 2.5
  assert fused_bytes == aot.splash_pass_cost(layer, "dkv")[1] + (1024 // 512) * tensor
  with pytest.raises(ValueError, match="no separate dq pass"):
    aot.splash_pass_cost(layer, "dq", fused=True)


# A global and a local (±64) layer at 8,192 tokens, one sequence and 12 heads per device.
LAYERS_8K = [aot.SplashLayer(1, 12, 8192, 64, None, 512), aot.SplashLayer(1, 12, 8192, 64, 64, 512)]


def _seconds_at_half_of_v5p(passes) -> float:
  """Each layer's passes (phase, calls per layer, fused), each max(compute at 0.5 of the v5p
  peak, bandwidth)."""
  total = 0.0
  for layer in LAYERS_8K:
    for phase, times, fused in passes:
      f, b = aot.splash_pass_cost(layer, phase, fused=fused)
      total += times * max(f / (459e12 * 0.5), b / 2765e9)
  return total


def test_splash_cost_is_max_of_compute_and_bandwidth_per_call():
  chip = aot.CHIPS["v5p"]
  layers = LAYERS_8K
  # save_dots recomputes the forward in the backward pass: 2 fwd calls per layer.
  cost = aot.splash_cost(layers, {"fwd": 4, "dq": 2, "dkv": 2}, chip, efficiency=0.5)
  expected = _seconds_at_half_of_v5p([("fwd", 2, False), ("dq", 1, False), ("dkv", 1, False)])
  assert cost.seconds == pytest.approx(expected)
  assert cost.keys_per_query == {"global": 8192, "local ±64": 46 * 512 * 512 / 8192}
  slower = aot.splash_cost(layers, {"fwd": 4, "dq": 2, "dkv": 2}, chip, efficiency=0.25)
  assert slower.seconds == pytest.approx(2 * cost.seconds)  # compute-bound at these shapes
  assert aot.splash_cost(layers, {"fwd": 0, "dq": 0, "dkv": 0}, chip) is None
  with pytest.raises(ValueError, match="efficiency must be in"):
    aot.splash_cost(layers, {"fwd": 2, "dq": 2, "dkv": 2}, chip, efficiency=0)
  line = cost.line()
  assert "ADDED: 4 fwd, 2 dq, 2 dkv calls per device" in line
  assert "max(FLOPs / (0.5 x 459 TFLOP/s), bytes / 2765 GB/s)" in line
  assert "backward (dq + dkv) = 3.5x fwd" in line and "local ±64 1472" in line
  assert not cost.fused_backward


def test_splash_cost_of_the_fused_backward():
  """dkv calls and no dq call: the fused backward, costed as one 5-product dkv pass."""
  chip = aot.CHIPS["v5p"]
  layers = LAYERS_8K
  cost = aot.splash_cost(layers, {"fwd": 2, "dq": 0, "dkv": 2}, chip, efficiency=0.5)
  expected = _seconds_at_half_of_v5p([("fwd", 1, False), ("dkv", 1, True)])
  assert cost.fused_backward and cost.seconds == pytest.approx(expected)
  unfused = aot.splash_cost(layers, {"fwd": 2, "dq": 2, "dkv": 2}, chip, efficiency=0.5)
  assert cost.flops / unfused.flops == pytest.approx((2 + 5) / (2 + 3 + 4))
  line = cost.line()
  assert "ADDED: 2 fwd, 0 dq, 2 dkv calls per device" in line
  assert "backward (fused dkv) = 2.5x fwd" in line


def test_splash_calls_are_counted_from_the_compiled_hlo():
  hlo = "\n".join([
      '%a = bf16[8,12,1024,64]{3,2,1,0} custom-call(%q, %k), custom_call_target="tpu_custom_call"'
      ', metadata={op_name="jit(step)/splash_mha_fwd_segmented_residuals/pallas_call"}',
      '%b = bf16[8,12,1024,64]{3,2,1,0} custom-call(%q), custom_call_target="tpu_custom_call", '
      'metadata={op_name="jit(step)/transpose(jvp(splash_mha_dkv_segmented_no_residuals))"}',
      '%c = bf16[8,12,1024,64]{3,2,1,0} custom-call(%q), custom_call_target="tpu_custom_call", '
      'metadata={op_name="jit(step)/splash_mha_dq_segmented_no_residuals"}',
      '%d = f32[8] custom-call(%x), custom_call_target="Sharding", '
      'metadata={op_name="splash_mha_fwd_segmented_residuals/sharding"}',
      "%e = f32[8] add(%x, %y)"])
  assert aot.count_splash_calls(hlo) == {"fwd": 1, "dq": 1, "dkv": 1}


def test_report_prints_xla_alone_the_kernels_and_their_sum():
  chip = aot.CHIPS["v5p"]
  kernels = aot.splash_cost([aot.SplashLayer(4, 12, 1024, 64, None, 512)],
                            {"fwd": 1, "dq": 1, "dkv": 1}, chip)
  xla = 0.010
  report = aot.AotReport(
      topology="v5p-8", devices=4, mesh={"data": 4}, batch_size=16, seq_len=1024,
      per_device_bytes=GIB, hbm_bytes=chip.hbm_bytes, model_flops_per_step=1e13,
      compiler_flops_per_device=1e12, estimated_step_s=xla + kernels.seconds,
      estimated_mfu=1e13 / (xla + kernels.seconds) / (4 * 459e12),
      estimated_seq_per_s=16 / (xla + kernels.seconds), compile_s=1.0, scanned=False,
      xla_step_s=xla, splash=kernels)
  assert report.xla_mfu == pytest.approx(1e13 / xla / (4 * 459e12))
  lines = report.lines()
  assert lines[-3].startswith("compiler's ESTIMATED step time, XLA's cost model alone: 10.00 ms")
  assert lines[-2].startswith("splash attention (a Pallas kernel: XLA's cost model counts it as "
                              "~0) ADDED: 1 fwd, 1 dq, 1 dkv calls per device")
  assert lines[-1].startswith(
      f"ESTIMATED step time with splash: {(xla + kernels.seconds) * 1e3:.2f} ms -> estimated MFU")


GIB = 1024 ** 3


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install 'bert_jax[tpu]')")
def test_compile_only_adds_the_splash_kernels_cost():
  proc = run_cli([f"--config={REPO / 'configs' / 'modernbert_tiny.py'}", "--compile_only",
                  "--topology=v5p-8", "--config.model.dtype=bfloat16",
                  "--config.data.seq_len=1024", "--config.data.max_predictions_per_seq=308",
                  "--config.train.batch_size=16"], timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  # 4 layers (global, local, local, global), no remat: one fwd and one fused dkv per layer.
  assert "ADDED: 4 fwd, 0 dq, 4 dkv calls per device" in out, out
  assert "backward (fused dkv) = 2.5x fwd" in out
  assert "compiler's ESTIMATED step time, XLA's cost model alone:" in out
  assert "ESTIMATED step time with splash:" in out
