r"""The shipped dropout mask on its own: its speed, and its bits for dieharder.

  python benchmarks/dropout_mask.py                       # time it at BERT-Base shapes
  python benchmarks/dropout_mask.py --stream=rows | dieharder -a -g 200    # statistical tests

Timing: the mask and its application (`where(keep, x / (1 - rate), 0)`, summed so nothing is
left unread) for the attention probabilities [B, N, L, L] and the hidden states [B, L, H] of
`--model` at `--batch_size` x `--seq_len`, jitted, called on fresh keys and inputs; the median of
`--calls` calls each. The mask is `bert_jax.models.dropout.dropout_keep_mask`, what the model's
dropout uses. (Until the dropout-mask experiment ended this program also timed the mask shipped
before 2026-12-01 beside it; that comparison's results are in docs/benchmarks.md.)

`--stream=rows|cols` writes the shipped generator's raw uint32 draws
(`bert_jax.models.dropout.dropout_draws`) to stdout until the reader stops: attention-shaped
blocks [4, 16, 128, 128] under the keys fold_in(key(--seed), 0), fold_in(key(--seed), 1), ...
(how the model keys its layers), in row-major order (`rows`: consecutive elements of a row, then
the next row) or transposed (`cols`: the same element of consecutive rows, which tests the rows'
independence).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def stream(order: str, seed: int) -> None:
  import jax
  import numpy as np

  from bert_jax.models import dropout
  shape = (4, 16, 128, 128)
  draws = jax.jit(lambda k: dropout.dropout_draws(k, shape))
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

  from bert_jax import get_config
  from bert_jax.models import dropout
  m = get_config(args.model)
  b, seq, rate = args.batch_size, args.seq_len, args.rate
  shapes = {"attention": (b, m.num_attention_heads, seq, seq), "hidden": (b, seq, m.hidden_size)}
  rows = []
  for where, shape in shapes.items():
    f = jax.jit(lambda k, x: jnp.where(
        dropout.dropout_keep_mask(k, x.shape, rate), x / (1 - rate), 0).sum())
    keys = [jax.random.fold_in(jax.random.key(0), i) for i in range(8)]
    xs = [jax.random.normal(jax.random.key(i), shape) for i in range(2)]
    f(keys[0], xs[0]).block_until_ready()
    times = []
    for i in range(args.calls):
      t = time.perf_counter()
      f(keys[i % len(keys)], xs[i % len(xs)]).block_until_ready()
      times.append(time.perf_counter() - t)
    median = statistics.median(times)
    rows.append({"tensor": where, "shape": list(shape), "mask": "shipped",
                 "median_ms": 1e3 * median, "elements_per_s": math.prod(shape) / median})
  print(f"dropout mask + apply, rate {rate}, {args.model} batch {b} seq {seq}, "
        f"{jax.devices()[0].platform}, median of {args.calls} calls")
  print(f"{'tensor':<10} {'shape':<20} {'mask':<8} {'ms':>8} {'Melem/s':>9}")
  for r in rows:
    print(f"{r['tensor']:<10} {'x'.join(map(str, r['shape'])):<20} {r['mask']:<8} "
          f"{r['median_ms']:>8.2f} {r['elements_per_s'] / 1e6:>9.0f}")
  if args.json:
    print(json.dumps(rows))


if __name__ == "__main__":
  main()
