"""Ahead-of-time compilation of the real train step for a TPU topology, from any machine.

  python -m bert_jax.train --config=configs/bert_large.py --compile_only --topology=v5p-128

Builds the (data, fsdp, tensor) mesh over the target's devices
(`jax.experimental.topologies.get_topology_desc`, needs libtpu: `pip install "bert_jax[tpu]"`),
lowers and compiles the same jitted train step `bert_jax.train` runs, with its shardings, and
reports per-device memory against the chip's HBM, model FLOPs, and the compiler's ESTIMATED step
time (XLA's cost model, not a measurement) with the implied MFU and sequences/s. The largest
per-chip batch that fits a chip, searched over such compiles: `bert_jax.training.aot_search`.

XLA's cost model does not see inside a Pallas kernel: the splash attention calls of a compiled
step (`bert_jax/models/splash.py`) cost it nothing. Where the compiled program has them, the
estimate is XLA's plus their own cost, `splash_cost` (counted from the kernels' blocks, at a
stated fraction `kernel_efficiency` of the chip's peak FLOP/s, or its HBM bandwidth where that
is slower); the report prints both, and MFU and sequences/s use the sum. Memory is exact either
way (the compile's memory analysis includes the kernels' buffers).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
import numpy as np

from bert_jax.errors import UserError
from bert_jax.models import families
from bert_jax.parallel import sharding
from bert_jax.training import config as config_lib
from bert_jax.training import pretraining
from bert_jax.training.pretraining import BATCH_KEYS

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str  # topology prefix understood by libtpu
  cores_per_chip: int  # TensorCores per chip in the accelerator-type count (v5p-8: 4 chips)
  hbm_bytes: int
  peak_flops: float  # dense bf16 per chip
  chip_config: str  # "megacore": one JAX device per chip
  dims: int  # torus dimensions
  hbm_bytes_per_s: float  # HBM bandwidth per chip (datasheet)


CHIPS = {
    "v4": Chip("v4", 2, 32 * GiB, 275e12, "megacore", 3, 1228e9),
    "v5p": Chip("v5p", 2, 95 * GiB, 459e12, "megacore", 3, 2765e9),
    "v5e": Chip("v5e", 1, 16 * GiB, 197e12, "default", 2, 819e9),
    "v6e": Chip("v6e", 1, 32 * GiB, 918e12, "default", 2, 1640e9),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6litepod": "v6e"}


def _shape(chips: int, dims: int) -> tuple[int, ...]:
  """Torus shape for a chip count: 3D for v4/v5p (2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ...),
  2D for v5e/v6e (2x2, 2x4, 4x4, 4x8, ...)."""
  if chips < 1 or chips & (chips - 1):
    raise ValueError(f"{chips} chips: a TPU slice has a power-of-two chip count")
  shape = [1] * dims
  i = 0
  while math.prod(shape) < chips:
    shape[i % dims] *= 2
    i += 1
  if dims == 3 and chips >= 4:  # TPU 3D slices grow from 2x2x1
    shape = sorted(shape)
    shape = [shape[1], shape[2], shape[0]] if chips == 4 else shape
  return tuple(sorted(shape)) if dims == 2 else tuple(shape)


def parse_topology(topology: str) -> tuple[Chip, str, int]:
  """'v5p-128' | 'v4-32' | 'v5e-8' | 'v5litepod-16' | 'v6e-16' | 'v5p:2x2x1' ->
  (chip, libtpu topology name, number of chips)."""
  m = re.fullmatch(r"(v\d+[a-z]*)[-:](.+)", topology.strip().lower())
  if not m:
    raise ValueError(f"--topology={topology!r}: expected e.g. v5p-128, v4-32, v5e-8, v6e-16 or "
                     "v5p:2x2x1")
  kind = _ALIASES.get(m.group(1), m.group(1))
  if kind not in CHIPS:
    raise ValueError(f"--topology={topology!r}: unknown TPU {m.group(1)!r}; known: "
                     f"{', '.join(CHIPS)}")
  chip = CHIPS[kind]
  if "x" in m.group(2):
    shape = tuple(int(x) for x in m.group(2).split("x"))
  else:
    cores = int(m.group(2))
    if cores % chip.cores_per_chip:
      raise ValueError(f"--topology={topology!r}: {kind} counts {chip.cores_per_chip} cores "
                       "per chip")
    shape = _shape(cores // chip.cores_per_chip, chip.dims)
  return chip, f"{kind}:{'x'.join(map(str, shape))}", math.prod(shape)


def topology_devices(topology: str, num_slices: int = 1):
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # AOT only reads libtpu
  from jax.experimental import topologies
  chip, name, chips = parse_topology(topology)
  bounds = (2, 4, 1) if chip.dims == 2 and chips == 8 else (2, 2, 1) if chips >= 4 else (
      1, 1, 1)
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=name,
                                        chip_config_name=chip.chip_config,
                                        chips_per_host_bounds=bounds, num_slices=num_slices)
  except Exception as e:  # noqa: BLE001 - libtpu missing or topology refused
    raise RuntimeError(f"--topology={topology}: cannot describe {name} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]}); install libtpu with "
                       "`pip install 'bert_jax[tpu]'`") from None
  return chip, name, list(desc.devices)


# ---- splash attention's own cost (XLA's cost model does not see inside a Pallas kernel) -------
# Matrix products per computed (q block, kv block) tile of each splash pass
# (jax.experimental.pallas.ops.tpu.splash_attention): fwd S = QK^T, O += PV; the unfused
# backward's dq recomputes S, dP = dO V^T, dQ += dS K and its dkv recomputes S, dV += P^T dO,
# dP = dO V^T, dK += dS^T Q: 3 + 4 = 7 products = 3.5x forward. The fused backward (what
# models/splash.py builds) is one dkv kernel doing S, dV, dP, dK and a partial dQ per kv block:
# 5 products = 2.5x. A compiled program with dkv calls and no dq call runs the fused one.
SPLASH_MATMULS = {"fwd": 2, "dq": 3, "dkv": 4}
FUSED_DKV_MATMULS = 5
DEFAULT_KERNEL_EFFICIENCY = 0.5
_SPLASH_CALL = re.compile(r"splash_m[hq]a_(fwd|dq|dkv)")


def splash_blocks(seq_len: int, block: int, window: int | None) -> int:
  """(q block, kv block) tiles splash computes for one head: all (L/block)^2 for a global
  layer; for a window w, those holding some pair |q - k| <= w (the kernel skips empty tiles and
  computes a partly masked tile in full)."""
  n = seq_len // block
  if window is None:
    return n * n
  return sum(1 for i in range(n) for j in range(n)
             if max(0, (abs(i - j) - 1) * block + 1) <= window)


@dataclasses.dataclass(frozen=True)
class SplashLayer:
  """One attention layer's splash calls on one device: b local batch, n local heads."""
  batch: int
  heads: int
  seq_len: int
  head_dim: int
  window: int | None  # None: global
  block: int
  dtype_bytes: int = 2  # bf16 q, k, v, o and gradients


def splash_pass_cost(layer: SplashLayer, phase: str,
                     fused: bool = False) -> tuple[float, float]:
  """(FLOPs, HBM bytes) of one splash pass (fwd | dq | dkv) of `layer` on one device; `fused`:
  the dkv pass of the fused backward (it also computes dQ, and there is no dq pass).

  FLOPs: 2·D per (q, k) pair per matrix product (SPLASH_MATMULS[phase]) over the computed tiles,
  i.e. fwd = 4·b·n·L·L_k·D with L_k = tiles·block / (L / block) keys per query (L for a global
  layer). Bytes, as the kernel streams them: a [b, n, L, D] tensor (T) is read or written once
  where it stays in VMEM across the inner loop and once per computed tile where it streams
  (S = T·tiles·block/L). fwd: q, o once, k, v streamed, logsumexp written as [n, L, 128] f32;
  dq: q, dO, dQ once, k, v streamed, logsumexp and di [n, 1, L] f32 read once; dkv: k, v, dK, dV
  once, q, dO streamed, logsumexp and di [n, 8, L] f32 read per tile; fused dkv adds its partial
  dQ output, [L / block, b, n, L, D] written whole (zeros where a tile is skipped; XLA's sum of
  it is in XLA's estimate). Exponentials and masking (VPU/EUP work) are not counted apart: they
  are in the efficiency."""
  if phase not in SPLASH_MATMULS:
    raise ValueError(f"splash phase {phase!r} is not one of {', '.join(SPLASH_MATMULS)}")
  b, n, length, d, blk = layer.batch, layer.heads, layer.seq_len, layer.head_dim, layer.block
  tiles = splash_blocks(length, blk, layer.window)
  if fused and phase != "dkv":
    raise ValueError(f"the fused backward has no separate {phase} pass to fuse")
  products = FUSED_DKV_MATMULS if fused else SPLASH_MATMULS[phase]
  flops = 2.0 * products * b * n * tiles * blk * blk * d
  once = b * n * length * d * layer.dtype_bytes
  streamed = b * n * tiles * blk * d * layer.dtype_bytes
  if phase == "fwd":
    nbytes = 2 * once + 2 * streamed + b * n * length * 128 * 4
  elif phase == "dq":
    nbytes = 3 * once + 2 * streamed + 2 * b * n * length * 4
  else:  # dkv
    nbytes = 4 * once + 2 * streamed + 2 * b * n * tiles * blk * 8 * 4
    if fused:
      nbytes += (length // blk) * once
  return flops, float(nbytes)


@dataclasses.dataclass(frozen=True)
class SplashCost:
  """The splash kernels of one compiled train step on one device, costed."""
  calls: dict  # phase -> calls in the compiled program (fwd counts remat's recompute)
  flops: float  # per device
  bytes: float  # per device
  seconds: float
  efficiency: float
  peak_flops: float  # per chip
  hbm_bytes_per_s: float
  keys_per_query: dict  # "global" / "local" -> L_k effective (keys per query the kernel computes)
  fused_backward: bool  # one dkv kernel computes dQ too (no dq calls)

  block: int  # the kernel's tile (block_q = block_kv)

  def line(self) -> str:
    calls = ", ".join(f"{self.calls[p]} {p}" for p in SPLASH_MATMULS)
    keys = ", ".join(f"{k} {v:g}" for k, v in self.keys_per_query.items())
    return (f"splash attention (a Pallas kernel: XLA's cost model counts it as ~0) ADDED: "
            f"{calls} calls per device, {self.flops:.4g} FLOPs, {self.bytes / GiB:.2f} GiB HBM "
            f"traffic -> {self.seconds * 1e3:.2f} ms, each call max(FLOPs / ({self.efficiency:g} "
            f"x {self.peak_flops / 1e12:g} TFLOP/s), bytes / {self.hbm_bytes_per_s / 1e9:g} "
            f"GB/s); fwd = 4·b·n·L·L_k·D, backward "
            f"{'(fused dkv) = 2.5x' if self.fused_backward else '(dq + dkv) = 3.5x'} fwd; "
            f"keys per query "
            f"computed L_k: {keys} (whole {self.block}-blocks)")


def splash_cost(layers: list[SplashLayer], calls: dict, chip: Chip,
                efficiency: float = DEFAULT_KERNEL_EFFICIENCY) -> SplashCost | None:
  """The cost of the splash calls `calls` ({fwd, dq, dkv} -> count in the compiled program)
  for a model whose attention layers are `layers` (one per layer, on one device). dq and dkv run
  once per layer; fwd once, or twice where remat recomputes it in the backward pass (counted from
  the program: fwd / layers per layer). None when the program has no splash call."""
  if not any(calls.get(p, 0) for p in SPLASH_MATMULS):
    return None
  if not 0 < efficiency <= 1:
    raise ValueError(f"kernel efficiency must be in (0, 1], got {efficiency}")
  if not layers:
    raise ValueError("the compiled step calls splash but no attention layer takes it")
  per_layer = {p: calls.get(p, 0) / len(layers) for p in SPLASH_MATMULS}
  fused = calls.get("dkv", 0) > 0 and calls.get("dq", 0) == 0
  flops = nbytes = seconds = 0.0
  for layer in layers:
    for phase, times in per_layer.items():
      if not times:
        continue
      f, by = splash_pass_cost(layer, phase, fused=fused and phase == "dkv")
      flops, nbytes = flops + times * f, nbytes + times * by
      seconds += times * max(f / (chip.peak_flops * efficiency), by / chip.hbm_bytes_per_s)
  keys = {}
  for layer in layers:
    kind = "global" if layer.window is None else f"local ±{layer.window}"
    keys[kind] = splash_blocks(layer.seq_len, layer.block, layer.window) * layer.block ** 2 / (
        layer.seq_len)
  return SplashCost(calls={p: int(calls.get(p, 0)) for p in SPLASH_MATMULS}, flops=flops,
                    bytes=nbytes, seconds=seconds, efficiency=efficiency,
                    peak_flops=chip.peak_flops, hbm_bytes_per_s=chip.hbm_bytes_per_s,
                    keys_per_query=keys, block=layers[0].block, fused_backward=fused)


def count_splash_calls(hlo_text: str) -> dict:
  """{fwd, dq, dkv} -> splash custom calls in a compiled program's HLO text (each Pallas call is
  a `tpu_custom_call` named after its kernel, e.g. splash_mha_fwd_segmented_residuals)."""
  calls = dict.fromkeys(SPLASH_MATMULS, 0)
  for line in hlo_text.splitlines():
    if "custom-call(" in line and "tpu_custom_call" in line:
      m = _SPLASH_CALL.search(line)
      if m:
        calls[m.group(1)] += 1
  return calls


def splash_layers(model_config, batch_per_device: int, heads_per_device: int,
                  seq_len: int) -> list[SplashLayer]:
  """The attention layers of a model config as splash runs them on one device: every layer for
  BERT (global), ModernBERT's global and local (sliding-window) layers."""
  from bert_jax.models import splash as splash_lib
  block = splash_lib.block_size(seq_len)
  if block is None:
    return []
  layers = []
  for i in range(model_config.num_hidden_layers):
    window = (None if not hasattr(model_config, "sliding_window") or model_config.is_global(i)
              else model_config.sliding_window)
    layers.append(SplashLayer(batch_per_device, heads_per_device, seq_len,
                              model_config.head_dim, window, block,
                              2 if model_config.dtype == "bfloat16" else 4))
  return layers


class DoesNotFit(UserError):
  """The TPU compiler refused the train step: it needs more HBM than the chip has."""

  def __init__(self, config, topology: str, devices: int, xla_message: str):
    line = next((ln for ln in xla_message.splitlines() if "RESOURCE_EXHAUSTED" in ln),
                xla_message.strip().splitlines()[0])
    detail = line.split("RESOURCE_EXHAUSTED:", 1)[-1].strip()[:300]
    # "...required for HLO temporaries (33.21G) exceeds available HBM (30.75G)" or
    # "Ran out of memory in memory space hbm. Used 40.5G of 15.75G hbm."
    m = (re.search(r"\(([0-9.]+)G\) exceeds available HBM \(([0-9.]+)G\)", detail)
         or re.search(r"Used ([0-9.]+)G of ([0-9.]+)G hbm", detail))
    self.required_gib, self.available_gib = ((float(m.group(1)), float(m.group(2))) if m
                                             else (float("nan"), float("nan")))
    b = config.train.batch_size
    super().__init__(
        f"--topology={topology}: the train step does not fit in HBM (XLA: {detail}); lower "
        f"--config.train.batch_size (now {b}, {b // max(devices, 1)} per chip), set "
        "--config.model.remat_policy=full or save_dots, or shard parameters with "
        "--config.mesh.fsdp=N")


def is_hbm_refusal(xla_message: str) -> bool:
  """XLA:TPU's compile-time out-of-HBM error, in either of its spellings ("... exceeds available
  HBM (30.75G)" and "E1000: CompileTimeHbmOom: ... Used 95.75G of 95.74G hbm.")."""
  return "RESOURCE_EXHAUSTED" in xla_message and "hbm" in xla_message.lower()


@dataclasses.dataclass
class AotReport:
  topology: str
  devices: int
  mesh: dict
  batch_size: int
  seq_len: int
  per_device_bytes: int
  hbm_bytes: int
  model_flops_per_step: float
  compiler_flops_per_device: float
  estimated_step_s: float  # XLA's estimate plus the splash kernels' own cost (`splash`)
  estimated_mfu: float
  estimated_seq_per_s: float
  compile_s: float
  scanned: bool  # XLA's cost model counts a scanned (while-loop) layer body once
  xla_step_s: float = float("nan")  # XLA's cost model alone (what it says, kernels at ~0)
  splash: SplashCost | None = None  # the splash calls' cost, None when the step has none

  @property
  def fits(self) -> bool:
    return self.per_device_bytes <= self.hbm_bytes

  @property
  def xla_mfu(self) -> float:
    """MFU implied by XLA's estimate alone (an over-estimate where splash runs)."""
    return (self.estimated_mfu * self.estimated_step_s / self.xla_step_s
            if self.xla_step_s > 0 else float("nan"))

  def lines(self) -> list[str]:
    gib = lambda b: f"{b / GiB:.2f} GiB"
    margin = self.hbm_bytes - self.per_device_bytes
    out = [
        f"topology {self.topology}: {self.devices} devices, mesh {self.mesh}, global batch "
        f"{self.batch_size} x {self.seq_len} (compiled in {self.compile_s:.1f}s)",
        f"memory per device: {gib(self.per_device_bytes)} of {gib(self.hbm_bytes)} HBM -> "
        + (f"fits ({gib(margin)} free)" if self.fits else f"DOES NOT FIT (over by {gib(-margin)})"),
        f"model FLOPs per step: {self.model_flops_per_step:.4g} (compiler counts "
        f"{self.compiler_flops_per_device:.4g} per device"
        + (", without the splash kernels)" if self.splash else ")"),
    ]
    if self.scanned:
      return out + ["compiler's step-time estimate: not available for scanned layers (XLA's cost "
                    "model counts a loop body once); add --config.model.scan_layers=false for it"]
    if not self.estimated_step_s > 0:
      return out + ["compiler's step-time estimate: not available (XLA's cost model returned "
                    f"{self.xla_step_s!r} s for this chip)"]
    estimate = (f"{self.estimated_step_s * 1e3:.2f} ms -> estimated MFU "
                f"{100 * self.estimated_mfu:.1f}%, {self.estimated_seq_per_s:.0f} sequences/s")
    if self.splash is None:
      return out + [f"compiler's ESTIMATED step time: {estimate} (an estimate from XLA's cost "
                    "model, not a measurement)"]
    return out + [
        f"compiler's ESTIMATED step time, XLA's cost model alone: {self.xla_step_s * 1e3:.2f} ms "
        f"(MFU {100 * self.xla_mfu:.1f}% if the splash kernels were free: they are not)",
        self.splash.line(),
        f"ESTIMATED step time with splash: {estimate} (XLA's cost model plus the kernels' "
        "estimated cost; an estimate, not a measurement)"]


def compile_train_step(config, topology: str, num_slices: int = 1,
                       kernel_efficiency: float = DEFAULT_KERNEL_EFFICIENCY) -> AotReport:
  """Lowers and compiles config's train step for `topology`; nothing runs on a device.
  kernel_efficiency: the fraction of the chip's peak FLOP/s the splash kernels are assumed to
  reach (their cost is added to XLA's estimate, which does not see them: `splash_cost`)."""
  import time
  chip, name, devices = topology_devices(topology, num_slices)
  mesh = sharding.create_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                              dcn_data=config.mesh.dcn_data, devices=devices)
  config_lib.validate_pretraining_batch(config, mesh, 1)
  # The preset's vocabulary where the config leaves it to the data (ModernBERT: 50,368).
  vocab = (config.model.vocab_size if config.model.vocab_size > 0
           else config_lib.model_config(config.model).vocab_size)
  # The data's objective where the config names it, else NSP for a family with that head and
  # masked-LM alone for one without (ModernBERT).
  objective = config.data.get("objective", "") or (
      "nsp" if "pretraining" in families.tasks(config_lib.model_config(config.model)) else "none")
  setup = pretraining.build(config, mesh, vocab, objective)
  b, l, p = (config.train.batch_size, config.data.seq_len, config.data.max_predictions_per_seq)
  example = pretraining.synthetic_batch(1, l, p, vocab, 0)
  keys = BATCH_KEYS if objective != "none" else pretraining.batch_keys(example, objective)
  batch = {k: jax.ShapeDtypeStruct((b,) + example[k].shape[1:],
                                   np.float32 if k == "masked_weights" else np.int32,
                                   sharding=setup.batch_sharding) for k in keys}
  t = time.perf_counter()
  lowered = setup.train_step.lower(setup.abstract_state, batch)
  try:
    compiled = lowered.compile()
  except Exception as e:  # XLA:TPU refuses to compile a program larger than the chip's HBM
    if not is_hbm_refusal(str(e)):
      raise
    raise DoesNotFit(config, topology, len(devices), str(e)) from None
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  per_device = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_est = float(cost.get("optimal_seconds", float("nan")))
  # Per device: the batch over (data, fsdp) and DCN data, heads over tensor (attention.py).
  shape = dict(mesh.shape)
  batch_shards = len(devices) // shape.get("tensor", 1)
  # With gradient accumulation a micro-batch's calls sit in a loop body, counted once in the HLO
  # (like XLA's cost model, which counts a loop body once): the added cost is one micro-batch's.
  grad_accum = max(1, config.train.get("grad_accum_steps", 1))
  layers = splash_layers(setup.bert_config, b // grad_accum // batch_shards,
                         setup.bert_config.num_attention_heads // shape.get("tensor", 1), l)
  kernels = splash_cost(layers, count_splash_calls(compiled.as_text()), chip,
                        kernel_efficiency)
  est = xla_est + (kernels.seconds if kernels and xla_est > 0 else 0.0)
  model_flops = setup.flops_per_token * b * l
  peak = chip.peak_flops * len(devices)
  return AotReport(
      topology=f"{topology} ({name}{f' x {num_slices} slices' if num_slices > 1 else ''})",
      devices=len(devices), mesh=shape, batch_size=b, seq_len=l,
      per_device_bytes=int(per_device), hbm_bytes=chip.hbm_bytes,
      model_flops_per_step=model_flops, compiler_flops_per_device=float(cost.get("flops", 0)),
      estimated_step_s=est, estimated_mfu=model_flops / est / peak if est > 0 else float("nan"),
      estimated_seq_per_s=b / est if est > 0 else float("nan"), compile_s=compile_s,
      scanned=bool(config.model.scan_layers), xla_step_s=xla_est, splash=kernels)


def compile_only(config, topology: str, num_slices: int = 1,
                 kernel_efficiency: float = DEFAULT_KERNEL_EFFICIENCY) -> AotReport:
  """The --compile_only entry point: compile, print the report, return it."""
  if not topology:
    raise ValueError("--compile_only needs --topology, e.g. --topology=v5p-8")
  report = compile_train_step(config, topology, num_slices, kernel_efficiency)
  for line in report.lines():
    print(line)
  return report
