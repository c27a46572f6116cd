r"""Where a TPU train step's estimated time goes: the same AOT compile under config variants.

  python benchmarks/aot_variants.py --preset=bert_large --per_chip=896 --topology=v5p-8 \
      --variants="base,model.hidden_dropout_prob=0.0+model.attention_probs_dropout_prob=0.0"

Each variant is `base` or `section.field=value` overrides joined by `+`, applied to the preset's
config (configs/<preset>.py, unrolled layers, `--per_chip` sequences per chip); each is compiled
for `--topology` with `bert_jax.training.aot.compile_train_step` (the code behind
`bert_jax.train --compile_only`) and printed as one JSON line: XLA's ESTIMATED step time and MFU
(an estimate from libtpu's cost model, v5p only), memory per chip and FLOPs. One compile at a
known batch: the rows of docs/benchmarks.md's TPU table marked § come from it.

The dropout-mask experiment that used this program (`--mask`: nine experimental masks swapped
in for the shipped one, on a `--layers`-shrunk encoder) is finished and those options are
removed; its results are in docs/benchmarks.md, "Where the estimated step goes".
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import repo_configs  # noqa: E402  (benchmarks/repo_configs.py)


def _apply(config, variant: str):
  for override in variant.split("+"):
    if override == "base":
      continue
    try:
      key, value = override.split("=", 1)
      section, field = key.split(".")
      old = config[section][field]
    except (ValueError, KeyError, AttributeError):
      raise SystemExit(f"error: --variants: {override!r} is not base or section.field=value "
                       "with a key of configs/default.py") from None
    config[section][field] = value if isinstance(old, str) else type(old)(value)
  return config


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="bert_large", help="a config under configs/")
  p.add_argument("--per_chip", type=int, default=256)
  p.add_argument("--topology", default="v5p-8")
  p.add_argument("--variants", default="base,model.hidden_dropout_prob=0.0+"
                 "model.attention_probs_dropout_prob=0.0")
  p.add_argument("--splash_efficiency", type=float, default=0.5,
                 help="fraction of peak FLOP/s assumed for the splash kernels, whose cost is "
                 "added to XLA's estimate (aot.splash_cost)")
  args = p.parse_args()

  from bert_jax.training import aot
  chips = aot.parse_topology(args.topology)[2]
  for variant in args.variants.split(","):
    config = repo_configs.load(args.preset)
    config.model.scan_layers = False
    config.train.batch_size = args.per_chip * chips
    config.train.grad_accum_steps = 1
    try:
      r = aot.compile_train_step(_apply(config, variant), args.topology,
                                 kernel_efficiency=args.splash_efficiency)
    except aot.DoesNotFit as e:
      raise SystemExit(f"error: {variant}: {e}") from None
    print(json.dumps({
        "variant": variant, "preset": args.preset, "per_chip": args.per_chip,
        "topology": args.topology,
        # XLA's estimate plus the splash kernels' own cost (the "xla_" fields: XLA's alone).
        "estimated_step_ms": r.estimated_step_s * 1e3 if r.estimated_step_s > 0 else None,
        "estimated_mfu": r.estimated_mfu if r.estimated_step_s > 0 else None,
        "xla_estimated_step_ms": r.xla_step_s * 1e3 if r.xla_step_s > 0 else None,
        "xla_estimated_mfu": r.xla_mfu if r.xla_step_s > 0 else None,
        "splash": None if r.splash is None else {
            "calls": r.splash.calls, "flops": r.splash.flops, "bytes": r.splash.bytes,
            "ms": r.splash.seconds * 1e3, "efficiency": r.splash.efficiency,
            "keys_per_query": r.splash.keys_per_query},
        "per_device_gib": r.per_device_bytes / aot.GiB,
        "compiler_flops_per_device": r.compiler_flops_per_device,
        "compile_s": r.compile_s}), flush=True)


if __name__ == "__main__":
  main()
