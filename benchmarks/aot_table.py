r"""The largest per-chip batch that fits, and the compiler's estimated throughput, per TPU chip.

  python benchmarks/aot_table.py [--cells=large-128-none-v5p-8,...] [--out=aot_table.jsonl]
  python benchmarks/aot_table.py --out=aot_table.jsonl --markdown      # the table, no compiles

For each cell (model, seq len, remat policy, topology) this AOT-compiles the real train step
(`bert_jax.training.aot.compile_train_step`, the code behind `bert_jax.train --compile_only`) with
the config preset's optimizer (configs/bert_base.py, configs/bert_large.py) and a data-parallel
mesh over the topology, and searches the largest per-chip batch that fits with
`bert_jax.training.aot_search.search` (its docstring has the search: two compiles give a memory
line per (model, seq, remat), reused by the other chips; further compiles check the line's batch,
stepping down on a refusal and up where the chip's own memory per sequence leaves room). The
last compile gives XLA's ESTIMATED step time -- an estimate from the cost model, not a
measurement; libtpu's cost model gives one for v5p only (a negative time for v4, v5e and v6e,
shown as n/a).

Each result is appended to --out as one JSON line as soon as it is known, so a long run can be
read while it goes, and a rerun skips the cells already there. TPU compiles are slow on a CPU
(BERT-Base 12 layers ~4 min on one core, BERT-Large up to a quarter of an hour and ~17 GiB).
"""

from __future__ import annotations

import argparse
import gc
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import repo_configs  # noqa: E402  (benchmarks/repo_configs.py)


def _config(cell, per_chip: int, chips: int):
  config = repo_configs.load(cell.preset)
  config.data.seq_len, config.data.max_predictions_per_seq = cell.seq_len, cell.max_predictions
  config.model.remat_policy = cell.remat
  config.model.scan_layers = False
  config.train.batch_size = per_chip * chips
  config.train.grad_accum_steps = 1
  return config


def _compile(cell, per_chip: int):
  import jax

  from bert_jax.training import aot
  chips = aot.parse_topology(cell.topology)[2]
  try:
    report = aot.compile_train_step(_config(cell, per_chip, chips), cell.topology)
  finally:
    # A search runs many compiles in one process: drop what jit cached for the last one.
    jax.clear_caches()
    gc.collect()
  print(f"  {cell.preset} seq {cell.seq_len} remat {cell.remat} {cell.topology} per-chip batch "
        f"{per_chip}: {report.per_device_bytes / aot.GiB:.2f} GiB of "
        f"{report.hbm_bytes / aot.GiB:.0f} ({report.compile_s:.0f}s compile)", flush=True)
  return report


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--cells", default="", help="comma list of preset-seq-remat-topology "
                 "(e.g. bert_large-128-none-v5p-8); default: the table in docs/benchmarks.md")
  p.add_argument("--out", default="aot_table.jsonl")
  p.add_argument("--markdown", action="store_true",
                 help="print --out's rows as the markdown table in docs/benchmarks.md; compile nothing")
  args = p.parse_args()
  from bert_jax.training import aot_search
  if args.markdown:
    print(aot_search.markdown(aot_search.read_rows(args.out)))
    return
  try:
    cells = aot_search.parse_cells(args.cells)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  aot_search.search(cells, _compile, args.out, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
  main()
