r"""The largest per-chip batch that fits, and the compiler's estimated throughput, per TPU chip.

  python benchmarks/aot_table.py [--cells=large-128-none-v5p-8,...] [--out=aot_table.jsonl]

For each cell (model, seq len, remat policy, topology) this AOT-compiles the real train step
(`bert_jax.aot.compile_train_step`, the code behind `bert_jax.train --compile_only`) with the
config preset's optimizer and a data-parallel mesh over the topology. Per-device memory is
linear in the per-chip batch b (state + gradients fixed, activations proportional to b), so two
compiles (b0, 2*b0) give the line, the line gives the largest multiple of 8 under the chip's
HBM, and a third compile at that batch checks it (stepping down until it fits, and up while
the chip's own memory per sequence leaves room for 8 more) and gives XLA's ESTIMATED step time
-- an estimate from the cost model, not a measurement; libtpu's cost model gives one for v5p
only (a negative time for v4, v5e and v6e, shown as n/a). Cells of the same (model, seq, remat)
on other chips reuse the line and compile once or twice.

Each result is appended to --out as one JSON line as soon as it is known, so a long run can be
read while it goes. TPU compiles are slow on a CPU (BERT-Base 12 layers ~4 min on one core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _max_predictions(seq: int) -> int:
  return 20 if seq <= 128 else 80  # BERT's masked positions per sequence at 128 and 512


# The grid in docs/benchmarks.md: BERT-Base and BERT-Large, phase 1 (128) and phase 2 (512),
# without remat and with `save_dots` (the phase-2 presets' policy), on five topologies; BERT-Base
# first (a BERT-Base compile takes minutes on one of this machine's cores, BERT-Large up to a
# quarter of an hour). Each (model, seq, remat) starts on v5p-8, whose two compiles give the line.
TOPOLOGIES = ("v5p-8", "v5e-8", "v4-8", "v4-32", "v5p-128")
DEFAULT_CELLS = [(preset, seq, _max_predictions(seq), remat, topology)
                 for preset in ("bert_base", "bert_large") for seq in (128, 512)
                 for remat in ("none", "save_dots") for topology in TOPOLOGIES]


def _config(preset: str, seq: int, preds: int, remat: str, per_chip: int, chips: int):
  import importlib
  config = importlib.import_module(f"configs.{preset}").get_config()
  config.data.seq_len, config.data.max_predictions_per_seq = seq, preds
  config.model.remat_policy = remat
  config.model.scan_layers = False
  config.train.batch_size = per_chip * chips
  config.train.grad_accum_steps = 1
  return config


def _compile(preset, seq, preds, remat, topology, per_chip):
  import gc

  import jax

  from bert_jax import aot
  _, _, chips = aot.parse_topology(topology)
  try:
    report = aot.compile_train_step(_config(preset, seq, preds, remat, per_chip, chips),
                                    topology)
  finally:
    # A search runs many compiles in one process: drop what jit cached for the last one.
    jax.clear_caches()
    gc.collect()
  print(f"  {preset} seq {seq} remat {remat} {topology} per-chip batch {per_chip}: "
        f"{report.per_device_bytes / aot.GiB:.2f} GiB of {report.hbm_bytes / aot.GiB:.0f} "
        f"({report.compile_s:.0f}s compile)", flush=True)
  return report


NAMES = {"bert_base": "BERT-Base", "bert_large": "BERT-Large"}


def markdown(path: str) -> str:
  """The rows of `path` as a markdown table (what docs/benchmarks.md shows)."""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  order = {"bert_base": 0, "bert_large": 1}
  rows.sort(key=lambda r: (order.get(r["preset"], 2), r["seq_len"], r["remat"],
                           r["topology"].split("-")[0], r["chips"]))
  out = ["| model | seq | remat | topology (chips) | largest per-chip batch | memory per chip "
         "| estimated step | estimated MFU | estimated seq/s per chip |",
         "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    est = r["estimated_step_ms"] is not None
    out.append(
        f"| {NAMES.get(r['preset'], r['preset'])} "
        f"| {r['seq_len']} | {r['remat']} | {r['topology']} ({r['chips']}) "
        f"| {r['per_chip_batch']} | {r['per_device_gib']:.1f} of {r['hbm_gib']:.0f} GiB "
        + (f"| {r['estimated_step_ms']:.0f} ms | {100 * r['estimated_mfu']:.1f}% "
           f"| {r['estimated_seq_per_s_per_chip']:,.0f} |" if est else "| n/a | n/a | n/a |"))
  return "\n".join(out)


def main():
  from bert_jax import aot
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--cells", default="", help="comma list of preset-seq-remat-topology "
                 "(e.g. bert_large-128-none-v5p-8); default: the table in docs/benchmarks.md")
  p.add_argument("--out", default="aot_table.jsonl")
  p.add_argument("--markdown", action="store_true",
                 help="print --out's rows as the markdown table in docs/benchmarks.md; compile nothing")
  args = p.parse_args()
  if args.markdown:
    print(markdown(args.out))
    return
  cells = DEFAULT_CELLS
  if args.cells:
    cells = []
    for c in args.cells.split(","):
      preset, seq, remat, topo = c.split("-", 3)
      preset = preset if preset.startswith("bert_") else f"bert_{preset}"  # large == bert_large
      cells.append((preset, int(seq), _max_predictions(int(seq)), remat, topo))
  lines = {}  # (preset, seq, remat) -> (fixed bytes, bytes per sequence per chip)
  usable_hbm = {}  # chip -> the HBM XLA lets a program use, learned from a refusal
  done = set()
  if os.path.exists(args.out):  # resume: reuse the memory lines and skip finished cells
    with open(args.out) as f:
      for row in map(json.loads, filter(str.strip, f)):
        key = (row["preset"], row["seq_len"], row["remat"])
        lines[key] = (row["fixed_gib"] * aot.GiB, row["gib_per_sequence"] * aot.GiB)
        done.add(key + (row["topology"].split()[0],))
  for preset, seq, preds, remat, topology in cells:
    key = (preset, seq, remat)
    if key + (topology,) in done:
      print(f"  {preset} seq {seq} remat {remat} {topology}: in {args.out} already", flush=True)
      continue
    b0 = 32 if seq <= 128 else 8
    t0 = time.time()
    compiles = 0
    if key not in lines:
      r0 = _compile(preset, seq, preds, remat, topology, b0)
      r1 = _compile(preset, seq, preds, remat, topology, 2 * b0)
      compiles += 2
      slope = (r1.per_device_bytes - r0.per_device_bytes) / b0
      lines[key] = (r0.per_device_bytes - b0 * slope, slope)
    fixed, slope = lines[key]
    hbm = aot.parse_topology(topology)[0].hbm_bytes
    usable = usable_hbm.get(topology.split("-")[0], hbm)
    best, b, tried = None, max(8, int((usable - fixed) // slope) // 8 * 8), set()
    while b >= 8 and b not in tried:
      tried.add(b)
      compiles += 1
      try:
        report = _compile(preset, seq, preds, remat, topology, b)
      except aot.DoesNotFit as e:  # the TPU compiler refuses past its usable HBM
        print(f"  per-chip batch {b}: does not fit ({e.required_gib}G of "
              f"{e.available_gib}G for temporaries)", flush=True)
        if e.available_gib == e.available_gib:  # learn the usable HBM (v4: 30.75 of 32 GiB)
          usable = min(usable, e.available_gib * aot.GiB)
          usable_hbm[topology.split("-")[0]] = usable
        # Temporaries grow about in proportion to the batch (the v5p line under-counts v4's).
        scale = e.available_gib / e.required_gib if e.required_gib > 0 else 0.9
        b = min(b - 8, int((usable - fixed) // slope) // 8 * 8, int(b * scale) // 8 * 8)
        if best is not None:  # between the largest that fit and this refusal: try the gap
          b = max(b, best.batch_size // best.devices + 8)
        report = None
      if report is not None and not report.fits:
        b -= max(8, -int(-(report.per_device_bytes - hbm) // slope) // 8 * 8)
      elif report is not None:
        best = report
        # Step up while this chip's own bytes per sequence say 8 more fit: the line comes from
        # the first chip's compiles and over-counts some chips (v5e lays out temporaries
        # differently), and after a refusal `usable` is the HBM XLA actually lets us use.
        own = max(0.5 * slope, (report.per_device_bytes - fixed) / b)
        b = b + int((usable - report.per_device_bytes) // own) // 8 * 8
      if best is not None and b <= best.batch_size // best.devices:
        break
    if best is None:
      print(f"  {preset} seq {seq} remat {remat} {topology}: nothing fits", flush=True)
      continue
    report, b = best, best.batch_size // best.devices
    est_ok = report.estimated_step_s > 0
    row = {"preset": preset, "seq_len": seq, "remat": remat, "topology": topology,
           "chips": report.devices, "per_chip_batch": b if report.fits else 0,
           "fits": report.fits, "per_device_gib": report.per_device_bytes / aot.GiB,
           "hbm_gib": report.hbm_bytes / aot.GiB, "fixed_gib": fixed / aot.GiB,
           "gib_per_sequence": slope / aot.GiB,
           # None where XLA's cost model gave no valid estimate (it returns a negative time
           # for v5e): JSON has no NaN.
           "estimated_step_ms": report.estimated_step_s * 1e3 if est_ok else None,
           "estimated_mfu": report.estimated_mfu if est_ok else None,
           "estimated_seq_per_s_per_chip":
               report.estimated_seq_per_s / report.devices if est_ok else None,
           "compile_s": report.compile_s, "compiles": compiles,
           "cell_wall_s": time.time() - t0}
    print(json.dumps(row), flush=True)
    with open(args.out, "a") as f:
      f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
