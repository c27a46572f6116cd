"""The largest per-chip batch of the train step that fits a TPU chip, searched over AOT compiles.

    cells = aot_search.parse_cells("large-128-none-v5p-8,large-128-none-v4-8")
    aot_search.search(cells, compile_fn, "aot_table.jsonl")   # one JSON row per cell
    print(aot_search.markdown(aot_search.read_rows("aot_table.jsonl")))

What `benchmarks/aot_table.py` runs for the TPU table of docs/benchmarks.md. A cell is a config
preset, a sequence length, a remat policy and a topology; `compile_fn(cell, per_chip)` compiles
the cell's train step at `per_chip` sequences per chip (`aot.compile_train_step`) and returns
its `aot.AotReport`, or raises `aot.DoesNotFit` when XLA refuses it.

The search, per cell: per-device memory is about linear in the per-chip batch b (state and
gradients fixed, activations proportional to b), so two compiles (b0, 2*b0) on the first chip
of a (preset, seq, remat) give a line, reused by the other chips. The line gives the largest
multiple of 8 under the chip's HBM and a compile checks it:
  - refused (`DoesNotFit`): step down, to the lowest of 8 less, what the line allows under the
    HBM XLA said it lets a program use (learned per chip from the refusal: v4 30.75 of 32 GiB),
    and the batch scaled by available / required temporaries; and where a batch already fit,
    not below 8 more than it (the gap between the largest fit and the refusal is tried);
  - compiled but over the HBM: step down by what the line says the excess costs;
  - fits: step up while this chip's own bytes per sequence say 8 more fit (the first chip's line
    over-counts some chips);
until the next batch is one already tried or not above the largest that fit. Each finished
cell is appended to the output file as one JSON line at once, and a rerun skips the cells
already there (reusing their lines).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable

from bert_jax.training import aot

TOPOLOGIES = ("v5p-8", "v5e-8", "v4-8", "v4-32", "v5p-128")
NAMES = {"bert_base": "BERT-Base", "bert_large": "BERT-Large"}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One row of the table: configs/<preset>.py at seq_len with max_predictions masked
  positions per sequence, remat policy `remat`, on `topology` (e.g. v5p-8)."""
  preset: str
  seq_len: int
  max_predictions: int
  remat: str
  topology: str


def max_predictions(seq_len: int) -> int:
  """BERT's masked positions per sequence: 20 at 128, 80 at 512."""
  return 20 if seq_len <= 128 else 80


# The grid in docs/benchmarks.md: BERT-Base and BERT-Large, phase 1 (128) and phase 2 (512),
# without remat and with `save_dots` (the phase-2 presets' policy), on five topologies;
# BERT-Base first (a BERT-Base compile takes minutes on one CPU core, BERT-Large up to a
# quarter of an hour). Each (model, seq, remat) starts on v5p-8, whose two compiles give the line.
DEFAULT_CELLS = tuple(Cell(preset, seq, max_predictions(seq), remat, topology)
                      for preset in ("bert_base", "bert_large") for seq in (128, 512)
                      for remat in ("none", "save_dots") for topology in TOPOLOGIES)


def parse_cells(spec: str) -> list[Cell]:
  """'bert_large-128-none-v5p-8,base-512-save_dots-v4-32' -> cells ('large' is 'bert_large');
  '' -> DEFAULT_CELLS."""
  if not spec:
    return list(DEFAULT_CELLS)
  cells = []
  for c in spec.split(","):
    try:
      preset, seq, remat, topology = c.strip().split("-", 3)
      seq_len = int(seq)
    except ValueError:
      raise ValueError(f"--cells: {c!r} is not preset-seq-remat-topology, e.g. "
                       "bert_large-128-none-v5p-8") from None
    preset = preset if preset.startswith("bert_") else f"bert_{preset}"
    cells.append(Cell(preset, seq_len, max_predictions(seq_len), remat, topology))
  return cells


CompileFn = Callable[[Cell, int], "aot.AotReport"]


def _multiple_of_8(x: float) -> int:
  return int(x) // 8 * 8


def _search_cell(cell: Cell, compile_fn: CompileFn, line: tuple[float, float] | None,
                 usable_hbm: dict[str, float], log) -> tuple[dict | None, tuple[float, float]]:
  """(the cell's row or None if nothing fits, the (fixed bytes, bytes per sequence) line)."""
  t0 = time.time()
  compiles = 0
  if line is None:
    b0 = 32 if cell.seq_len <= 128 else 8
    r0, r1 = compile_fn(cell, b0), compile_fn(cell, 2 * b0)
    compiles += 2
    slope = (r1.per_device_bytes - r0.per_device_bytes) / b0
    line = (r0.per_device_bytes - b0 * slope, slope)
  fixed, slope = line
  kind = cell.topology.split("-")[0]
  hbm = aot.parse_topology(cell.topology)[0].hbm_bytes
  usable = usable_hbm.get(kind, hbm)
  best, b, tried = None, max(8, _multiple_of_8((usable - fixed) // slope)), set()
  while b >= 8 and b not in tried:
    tried.add(b)
    compiles += 1
    try:
      report = compile_fn(cell, b)
    except aot.DoesNotFit as e:  # the TPU compiler refuses past its usable HBM
      log(f"  per-chip batch {b}: does not fit ({e.required_gib}G of {e.available_gib}G for "
          "temporaries)")
      if e.available_gib == e.available_gib:  # not NaN: learn the usable HBM
        usable = min(usable, e.available_gib * aot.GiB)
        usable_hbm[kind] = usable
      # Temporaries grow about in proportion to the batch (the v5p line under-counts v4's).
      scale = e.available_gib / e.required_gib if e.required_gib > 0 else 0.9
      b = min(b - 8, _multiple_of_8((usable - fixed) // slope), _multiple_of_8(b * scale))
      if best is not None:  # between the largest that fit and this refusal: try the gap
        b = max(b, best.batch_size // best.devices + 8)
      report = None
    if report is not None and not report.fits:
      b -= max(8, _multiple_of_8(-(-(report.per_device_bytes - hbm) // slope)))
    elif report is not None:
      best = report
      # Step up while this chip's own bytes per sequence say 8 more fit: the line comes from
      # the first chip's compiles and over-counts some chips (v5e lays out temporaries
      # differently), and after a refusal `usable` is the HBM XLA actually lets us use.
      own = max(0.5 * slope, (report.per_device_bytes - fixed) / b)
      b = b + _multiple_of_8((usable - report.per_device_bytes) // own)
    if best is not None and b <= best.batch_size // best.devices:
      break
  if best is None:
    return None, line
  report, b = best, best.batch_size // best.devices
  est_ok = report.estimated_step_s > 0
  splash = getattr(report, "splash", None)
  row = {"preset": cell.preset, "seq_len": cell.seq_len, "remat": cell.remat,
         "topology": cell.topology, "chips": report.devices,
         "per_chip_batch": b if report.fits else 0, "fits": report.fits,
         "per_device_gib": report.per_device_bytes / aot.GiB,
         "hbm_gib": report.hbm_bytes / aot.GiB, "fixed_gib": fixed / aot.GiB,
         "gib_per_sequence": slope / aot.GiB,
         # None where XLA's cost model gave no valid estimate (it returns a negative time
         # for v4, v5e and v6e): JSON has no NaN.
         "estimated_step_ms": report.estimated_step_s * 1e3 if est_ok else None,
         "estimated_mfu": report.estimated_mfu if est_ok else None,
         "estimated_seq_per_s_per_chip":
             report.estimated_seq_per_s / report.devices if est_ok else None,
         # The estimate above includes the splash kernels' own cost (aot.splash_cost), which
         # XLA's alone (this field) leaves out; equal where the step has no splash call.
         "xla_estimated_step_ms":
             getattr(report, "xla_step_s", report.estimated_step_s) * 1e3 if est_ok else None,
         "splash_ms": splash.seconds * 1e3 if est_ok and splash else None,
         "compile_s": report.compile_s, "compiles": compiles, "cell_wall_s": time.time() - t0}
  return row, line


def read_rows(path: str) -> list[dict]:
  """The rows `search` wrote to `path` ([] if there is no such file)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def search(cells: Iterable[Cell], compile_fn: CompileFn, out: str, log=print) -> list[dict]:
  """Searches each cell's largest per-chip batch (module docstring), appends each row to `out`
  as one JSON line as soon as it is known, and returns the new rows. Cells already in `out`
  are skipped, and their memory lines reused; `log` gets one line per event."""
  lines = {}  # (preset, seq, remat) -> (fixed bytes, bytes per sequence per chip)
  usable_hbm = {}  # chip kind -> the HBM XLA lets a program use, learned from a refusal
  done = set()
  for row in read_rows(out):  # resume
    key = (row["preset"], row["seq_len"], row["remat"])
    lines[key] = (row["fixed_gib"] * aot.GiB, row["gib_per_sequence"] * aot.GiB)
    done.add(key + (row["topology"].split()[0],))
  rows = []
  for cell in cells:
    key = (cell.preset, cell.seq_len, cell.remat)
    name = f"{cell.preset} seq {cell.seq_len} remat {cell.remat} {cell.topology}"
    if key + (cell.topology,) in done:
      log(f"  {name}: in {out} already")
      continue
    row, lines[key] = _search_cell(cell, compile_fn, lines.get(key), usable_hbm, log)
    if row is None:
      log(f"  {name}: nothing fits")
      continue
    log(json.dumps(row))
    with open(out, "a") as f:
      f.write(json.dumps(row) + "\n")
    rows.append(row)
  return rows


def markdown(rows: Iterable[dict]) -> str:
  """Rows as the markdown table in docs/benchmarks.md."""
  order = {"bert_base": 0, "bert_large": 1}
  rows = sorted(rows, key=lambda r: (order.get(r["preset"], 2), r["seq_len"], r["remat"],
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
