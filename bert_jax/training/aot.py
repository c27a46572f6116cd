"""Ahead-of-time compilation of the real train step for a TPU topology, from any machine.

  python -m bert_jax.train --config=configs/bert_large.py --compile_only --topology=v5p-128

Builds the (data, fsdp, tensor) mesh over the target's devices
(`jax.experimental.topologies.get_topology_desc`, needs libtpu: `pip install "bert_jax[tpu]"`),
lowers and compiles the same jitted train step `bert_jax.train` runs, with its shardings, and
reports per-device memory against the chip's HBM, model FLOPs, and the compiler's ESTIMATED step
time (XLA's cost model, not a measurement) with the implied MFU and sequences/s. The largest
per-chip batch that fits a chip, searched over such compiles: `bert_jax.training.aot_search`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
import numpy as np

from bert_jax.errors import UserError
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


CHIPS = {
    "v4": Chip("v4", 2, 32 * GiB, 275e12, "megacore", 3),
    "v5p": Chip("v5p", 2, 95 * GiB, 459e12, "megacore", 3),
    "v5e": Chip("v5e", 1, 16 * GiB, 197e12, "default", 2),
    "v6e": Chip("v6e", 1, 32 * GiB, 918e12, "default", 2),
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
  estimated_step_s: float
  estimated_mfu: float
  estimated_seq_per_s: float
  compile_s: float
  scanned: bool  # XLA's cost model counts a scanned (while-loop) layer body once

  @property
  def fits(self) -> bool:
    return self.per_device_bytes <= self.hbm_bytes

  def lines(self) -> list[str]:
    gib = lambda b: f"{b / GiB:.2f} GiB"
    margin = self.hbm_bytes - self.per_device_bytes
    return [
        f"topology {self.topology}: {self.devices} devices, mesh {self.mesh}, global batch "
        f"{self.batch_size} x {self.seq_len} (compiled in {self.compile_s:.1f}s)",
        f"memory per device: {gib(self.per_device_bytes)} of {gib(self.hbm_bytes)} HBM -> "
        + (f"fits ({gib(margin)} free)" if self.fits else f"DOES NOT FIT (over by {gib(-margin)})"),
        f"model FLOPs per step: {self.model_flops_per_step:.4g} (compiler counts "
        f"{self.compiler_flops_per_device:.4g} per device)",
        ("compiler's step-time estimate: not available for scanned layers (XLA's cost model "
         "counts a loop body once); add --config.model.scan_layers=false for it"
         if self.scanned else
         "compiler's step-time estimate: not available (XLA's cost model returned "
         f"{self.estimated_step_s!r} s for this chip)"
         if not self.estimated_step_s > 0 else
         f"compiler's ESTIMATED step time: {self.estimated_step_s * 1e3:.2f} ms -> estimated MFU "
         f"{100 * self.estimated_mfu:.1f}%, {self.estimated_seq_per_s:.0f} sequences/s "
         "(an estimate from XLA's cost model, not a measurement)"),
    ]


def compile_train_step(config, topology: str, num_slices: int = 1) -> AotReport:
  """Lowers and compiles config's train step for `topology`; nothing runs on a device."""
  import time
  chip, name, devices = topology_devices(topology, num_slices)
  mesh = sharding.create_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                              dcn_data=config.mesh.dcn_data, devices=devices)
  config_lib.validate_pretraining_batch(config, mesh, 1)
  vocab = config.model.vocab_size if config.model.vocab_size > 0 else 30522
  setup = pretraining.build(config, mesh, vocab)
  b, l, p = (config.train.batch_size, config.data.seq_len, config.data.max_predictions_per_seq)
  shapes = {k: v.shape for k, v in pretraining.synthetic_batch(1, l, p, vocab, 0).items()}
  batch = {k: jax.ShapeDtypeStruct((b,) + shapes[k][1:],
                                   np.float32 if k == "masked_weights" else np.int32,
                                   sharding=setup.batch_sharding) for k in BATCH_KEYS}
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
  est = float(cost.get("optimal_seconds", float("nan")))
  model_flops = setup.flops_per_token * b * l
  peak = chip.peak_flops * len(devices)
  return AotReport(
      topology=f"{topology} ({name}{f' x {num_slices} slices' if num_slices > 1 else ''})",
      devices=len(devices), mesh=dict(mesh.shape), batch_size=b, seq_len=l,
      per_device_bytes=int(per_device), hbm_bytes=chip.hbm_bytes,
      model_flops_per_step=model_flops, compiler_flops_per_device=float(cost.get("flops", 0)),
      estimated_step_s=est, estimated_mfu=model_flops / est / peak if est > 0 else float("nan"),
      estimated_seq_per_s=b / est if est > 0 else float("nan"), compile_s=compile_s,
      scanned=bool(config.model.scan_layers))


def compile_only(config, topology: str, num_slices: int = 1) -> AotReport:
  """The --compile_only entry point: compile, print the report, return it."""
  if not topology:
    raise ValueError("--compile_only needs --topology, e.g. --topology=v5p-8")
  report = compile_train_step(config, topology, num_slices)
  for line in report.lines():
    print(line)
  return report
