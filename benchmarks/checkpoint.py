r"""Checkpoint cost: how long training is blocked by an async save, the full save, the restore.

  python benchmarks/checkpoint.py [--models=base,large] [--dir=/tmp/bert_jax_ckpt_bench] [--json]

Uses the trainer's own pieces: the TrainState (params + optimizer moments + step + RNG) built by
bert_jax.training.pretraining.build for the model (configs/default.py with --models' preset), and
bert_jax.training.checkpointing.Checkpointer (Orbax, async).
"blocked" is the time `save()` takes to return (the train loop continues after it); "full" adds
waiting until the checkpoint is finalized on disk; "restore" reads it back onto the same
shardings. Sizes are the bytes of the saved state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import repo_configs  # benchmarks/repo_configs.py


def bench(model: str, directory: str, repeats: int) -> dict:
  import jax
  from bert_jax.parallel import sharding
  from bert_jax.training import pretraining
  from bert_jax.training.checkpointing import Checkpointer
  c = repo_configs.load("default")
  c.model.preset = model
  c.train.batch_size = 8
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  setup = pretraining.build(c, mesh, 30522)
  state = setup.init_state(jax.random.key(0))
  jax.block_until_ready(state)
  nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
  shutil.rmtree(directory, ignore_errors=True)
  ckpt = Checkpointer(directory, max_to_keep=2, async_save=True)
  blocked, full = [], []
  for i in range(repeats):
    t = time.perf_counter()
    ckpt.save(i + 1, state)
    blocked.append(time.perf_counter() - t)
    ckpt.wait()
    full.append(time.perf_counter() - t)
  restores = []
  for _ in range(repeats):
    t = time.perf_counter()
    restored, _ = ckpt.restore(setup.abstract_state)
    jax.block_until_ready(restored)
    restores.append(time.perf_counter() - t)
    del restored
  ckpt.close()
  shutil.rmtree(directory, ignore_errors=True)
  med = lambda xs: sorted(xs)[len(xs) // 2]
  return {"model": model, "state_bytes": nbytes, "blocked_s": med(blocked),
          "full_save_s": med(full), "restore_s": med(restores),
          "write_mb_per_s": nbytes / med(full) / 2 ** 20}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="base,large")
  p.add_argument("--dir", default="/tmp/bert_jax_ckpt_bench")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", action="store_true")
  args = p.parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import logging
  logging.getLogger("absl").setLevel(logging.WARNING)
  rows = [bench(m, os.path.join(args.dir, m), args.repeats) for m in args.models.split(",")]
  print(f"Orbax async checkpoints of the full train state (median of {args.repeats}), "
        f"directory {args.dir}")
  print(f"{'model':8s} {'state GB':>9s} {'blocked s':>10s} {'full save s':>12s} "
        f"{'restore s':>10s} {'write MB/s':>11s}")
  for r in rows:
    print(f"{r['model']:8s} {r['state_bytes'] / 1e9:9.2f} {r['blocked_s']:10.2f} "
          f"{r['full_save_s']:12.2f} {r['restore_s']:10.2f} {r['write_mb_per_s']:11.0f}")
  if args.json:
    print(json.dumps(rows))


if __name__ == "__main__":
  main()
