r"""The dropout mask on its own: its speed against the previous mask, and its bits for dieharder.

  python benchmarks/dropout_mask.py                       # time: shipped vs lanes, BERT-Base shapes
  python benchmarks/dropout_mask.py --stream=rows | dieharder -a -g 200    # statistical tests

Timing: the mask and its application (`where(keep, x / (1 - rate), 0)`, summed so nothing is
left unread) for the attention probabilities [B, N, L, L] and the hidden states [B, L, H] of
`--model` at `--batch_size` x `--seq_len`, jitted, the variants called in turn on fresh keys and
inputs; the median of `--calls` calls each. `shipped` is `layers.dropout_keep_mask`; `lanes` is
the mask shipped until 2026-12-01 (four 16-bit draws per Threefry hash on four adjacent
elements; `benchmarks/aot_variants.py --mask=lanes`).

`--stream=rows|cols` writes the shipped generator's raw uint32 draws (`layers.dropout_draws`)
to stdout until the reader stops: attention-shaped blocks [4, 16, 128, 128] under the keys
fold_in(key(--seed), 0), fold_in(key(--seed), 1), ... (how bert.py keys its layers), in
row-major order (`rows`: consecutive elements of a row, then the next row) or transposed
(`cols`: the same element of consecutive rows, which tests the rows' independence).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def stream(order: str, seed: int) -> None:
  import jax
  import numpy as np
  from bert_jax.models import layers
  shape = (4, 16, 128, 128)
  draws = jax.jit(lambda k: layers.dropout_draws(k, shape))
  key = jax.random.key(seed)
  out = sys.stdout.buffer
  i = 0
  try:
    while True:
      d = np.asarray(draws(jax.random.fold_in(key, i)))
      if order == "cols":
        d = d.reshape(-1, shape[-1]).T
      out.write(np.ascontiguousarray(d).tobytes())
      i += 1
  except BrokenPipeError:
    pass


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="base", help="tiny | mini | small | medium | base | large")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--rate", type=float, default=0.1)
  p.add_argument("--calls", type=int, default=40)
  p.add_argument("--stream", choices=["rows", "cols"], default=None)
  p.add_argument("--seed", type=int, default=2026, help="the stream's key")
  p.add_argument("--json", action="store_true")
  args = p.parse_args()
  if args.stream:
    stream(args.stream, args.seed)
    return

  import jax
  import jax.numpy as jnp
  from aot_variants import lanes
  from bert_jax.models import config as model_config
  from bert_jax.models import layers
  m = model_config.PRESETS[args.model]
  b, seq, rate = args.batch_size, args.seq_len, args.rate
  shapes = {"attention": (b, m.num_attention_heads, seq, seq), "hidden": (b, seq, m.hidden_size)}
  masks = {"shipped": layers.dropout_keep_mask, "lanes": lanes}
  rows = []
  for where, shape in shapes.items():
    fns = {name: jax.jit(lambda k, x, mask=mask: jnp.where(
        mask(k, x.shape, rate), x / (1 - rate), 0).sum()) for name, mask in masks.items()}
    keys = [jax.random.fold_in(jax.random.key(0), i) for i in range(8)]
    xs = [jax.random.normal(jax.random.key(i), shape) for i in range(2)]
    for f in fns.values():
      f(keys[0], xs[0]).block_until_ready()
    times = {name: [] for name in fns}
    for i in range(args.calls):
      for name, f in fns.items():
        t = time.perf_counter()
        f(keys[i % len(keys)], xs[i % len(xs)]).block_until_ready()
        times[name].append(time.perf_counter() - t)
    for name in fns:
      rows.append({"tensor": where, "shape": list(shape), "mask": name,
                   "median_ms": 1e3 * statistics.median(times[name]),
                   "elements_per_s": math.prod(shape) /
                   statistics.median(times[name])})
  print(f"dropout mask + apply, rate {rate}, {args.model} batch {b} seq {seq}, "
        f"{jax.devices()[0].platform}, median of {args.calls} interleaved calls")
  print(f"{'tensor':<10} {'shape':<20} {'mask':<8} {'ms':>8} {'Melem/s':>9}")
  for r in rows:
    print(f"{r['tensor']:<10} {'x'.join(map(str, r['shape'])):<20} {r['mask']:<8} "
          f"{r['median_ms']:>8.2f} {r['elements_per_s'] / 1e6:>9.0f}")
  if args.json:
    print(json.dumps(rows))


if __name__ == "__main__":
  main()
