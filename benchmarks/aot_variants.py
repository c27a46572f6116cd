r"""Where a TPU train step's estimated time goes: the same AOT compile under config variants.

  python benchmarks/aot_variants.py --preset=bert_large --layers=2 --per_chip=256 \
      --topology=v5p-8 --variants="base,model.hidden_dropout_prob=0.0+model.attention_probs_dropout_prob=0.0"
  python benchmarks/aot_variants.py --layers=2 --mask=stand_in        # what drawing the masks costs

Each variant is `base` or `section.field=value` overrides joined by `+`, applied to the preset's
config (unrolled layers, `--per_chip` sequences per chip); each is compiled for `--topology`
with `bert_jax.aot.compile_train_step` (the code behind `bert_jax.train --compile_only`) and
printed as one JSON line: XLA's ESTIMATED step time and MFU (an estimate from libtpu's cost
model, v5p only), memory per chip and FLOPs. `--layers` shrinks the encoder so a variant
compiles in ~2 minutes instead of ~10 (embeddings and heads then weigh more).

`--mask` swaps the dropout mask generator for an experiment (never for training):
  shipped   the shipped one (`layers.dropout_keep_mask`: a Threefry hash per row, a keyed
            32-bit mix per element);
  lanes     the one shipped until 2026-12-01: four 16-bit draws per Threefry hash on four
            adjacent elements of the last axis;
  barrier   the shipped one behind `lax.optimization_barrier` (materialised once: shows whether
            XLA recomputes it in the backward pass);
  stand_in  one multiply per element, NOT a usable random generator (shows what applying the
            mask costs without the hash);
  rbg       `jax.random.bits` with an rbg key (the TPU hardware generator);
  threefry13  `lanes` with 13 Threefry rounds instead of 20 (Random123's smallest
            BigCrush-passing count for 2x32; jax.random uses 20);
  rows      four draws per hash on four rows (second-to-last axis) instead of four lanes;
  major     four draws per hash on four slices of the last major axis divisible by 4;
  full      one hash per element at the tensor's own shape (four times the hashing, no
            reshape). Results: docs/benchmarks.md, "Where the estimated step goes".
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _four_draws(rng, cshape, axis: int, split_first: bool, shape, rate, rounds: int = 20):
  """Keep mask of `shape` from one hash per counter of cshape, whose size-1 `axis` becomes the
  four 16-bit draws of each hash (then reshaped to `shape`)."""
  import jax
  import jax.numpy as jnp
  from bert_jax.models import layers
  b1, b2 = layers.threefry2x32(*layers._key_words(rng),
                               *layers.hash_counters(cshape, split_first), rounds=rounds)
  j = jax.lax.broadcasted_iota(jnp.uint32, (*cshape[:axis], 4, *cshape[axis + 1:]), axis)
  words = jnp.where(j < 2, b1, b2)
  draws = (words >> ((j & 1) * jnp.uint32(16))) & jnp.uint32(0xFFFF)
  return (draws >= jnp.uint32(round(rate * 65536))).reshape(shape)


def lanes(rng, shape, rate, rounds: int = 20):
  """The mask shipped until 2026-12-01: four 16-bit draws per Threefry hash on four adjacent
  elements of the last axis (a reshape out of [..., last // 4, 4])."""
  *lead, last = shape
  if last % 4:
    raise SystemExit(f"--mask=lanes: last axis {last} is not a multiple of 4")
  cshape = (*lead, last // 4, 1)
  return _four_draws(rng, cshape, len(cshape) - 1, len(lead) > 0, shape, rate, rounds)


def _swap_mask(kind: str):
  import jax
  import jax.numpy as jnp
  from bert_jax.models import layers
  shipped = layers.dropout_keep_mask
  if kind == "barrier":
    layers.dropout_keep_mask = lambda rng, shape, rate: jax.lax.optimization_barrier(
        shipped(rng, shape, rate))
  elif kind == "stand_in":
    def stand_in(rng, shape, rate):
      k1, k2 = layers._key_words(rng)
      counter = jnp.zeros(shape, jnp.uint32)
      for axis, n in enumerate(shape):
        counter = counter * jnp.uint32(n) + jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
      h = (counter ^ k1) * jnp.uint32(0x9E3779B1) + k2
      return (h >> 16) >= jnp.uint32(round(rate * 65536))
    layers.dropout_keep_mask = stand_in
  elif kind == "rbg":
    def rbg(rng, shape, rate):
      k1, k2 = layers._key_words(rng)
      key = jax.random.wrap_key_data(jnp.stack([k1, k2, k1, k2]), impl="rbg")
      return jax.random.bits(key, tuple(shape), jnp.uint16) >= jnp.uint16(round(rate * 65536))
    layers.dropout_keep_mask = rbg
  elif kind == "lanes":
    layers.dropout_keep_mask = lanes
  elif kind == "threefry13":
    layers.dropout_keep_mask = functools.partial(lanes, rounds=13)
  elif kind == "rows":
    def rows(rng, shape, rate):  # the four draws of a hash go to four rows, not four lanes
      *lead, last = shape
      if not lead or lead[-1] % 4:
        return lanes(rng, shape, rate)
      cshape = (*lead[:-1], lead[-1] // 4, 1, last)
      return _four_draws(rng, cshape, len(cshape) - 2, len(lead) > 1, shape, rate)
    layers.dropout_keep_mask = rows
  elif kind == "full":
    def full(rng, shape, rate):  # every element hashes its own counter: no reshape at all
      b1, _ = layers.threefry2x32(*layers._key_words(rng),
                                  *layers.hash_counters(shape, len(shape) > 1))
      return (b1 >> 16) >= jnp.uint32(round(rate * 65536))
    layers.dropout_keep_mask = full
  elif kind == "major":
    def major(rng, shape, rate):  # the four draws of a hash go to four slices of a major axis
      axes = [a for a in range(len(shape) - 2) if shape[a] % 4 == 0]
      if not axes:
        return lanes(rng, shape, rate)
      a = axes[-1]
      cshape = (*shape[:a], shape[a] // 4, 1, *shape[a + 1:])
      return _four_draws(rng, cshape, a + 1, False, shape, rate)
    layers.dropout_keep_mask = major
  elif kind != "shipped":
    raise SystemExit(f"--mask={kind!r}: expected shipped, barrier, stand_in, rbg, lanes, "
                     "threefry13, rows, full or major")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="bert_large", help="a config under configs/")
  p.add_argument("--layers", type=int, default=0, help="encoder layers (0: the preset's)")
  p.add_argument("--per_chip", type=int, default=256)
  p.add_argument("--topology", default="v5p-8")
  p.add_argument("--variants", default="base,model.hidden_dropout_prob=0.0+"
                 "model.attention_probs_dropout_prob=0.0")
  p.add_argument("--mask", default="shipped")
  args = p.parse_args()

  from bert_jax import aot
  from bert_jax.models import config as model_config
  _swap_mask(args.mask)
  chips = aot.parse_topology(args.topology)[2]
  for variant in args.variants.split(","):
    config = importlib.import_module(f"configs.{args.preset}").get_config()
    if args.layers:
      name = config.model.preset
      model_config.PRESETS[name] = model_config.PRESETS[name].replace(
          num_hidden_layers=args.layers)
    config.model.scan_layers = False
    config.train.batch_size = args.per_chip * chips
    config.train.grad_accum_steps = 1
    for override in variant.split("+"):
      if override == "base":
        continue
      key, value = override.split("=", 1)
      section, field = key.split(".")
      old = config[section][field]
      config[section][field] = value if isinstance(old, str) else type(old)(value)
    r = aot.compile_train_step(config, args.topology)
    print(json.dumps({
        "variant": variant, "mask": args.mask, "layers": args.layers or None,
        "per_chip": args.per_chip, "topology": args.topology,
        "estimated_step_ms": r.estimated_step_s * 1e3 if r.estimated_step_s > 0 else None,
        "estimated_mfu": r.estimated_mfu if r.estimated_step_s > 0 else None,
        "per_device_gib": r.per_device_bytes / aot.GiB,
        "compiler_flops_per_device": r.compiler_flops_per_device,
        "compile_s": r.compile_s}), flush=True)


if __name__ == "__main__":
  main()
