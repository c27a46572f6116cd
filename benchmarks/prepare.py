"""Throughput of `bert_jax.prepare` in MB of raw text per second, end to end.

  .venv/bin/python benchmarks/prepare.py                      # the bundled sample, all cores
  .venv/bin/python benchmarks/prepare.py --input=FILE --reference_script=/tmp/bert_ref/create_pretraining_data.py

Times `bert_jax.data.prepare.prepare()` on --input (default: the bundled sample,
`bert_jax.data.SAMPLE_CORPUS`) in this process (TensorFlow already imported: the clock covers
reading, tokenizing, pairing, masking when static, serialising and writing the TFDS dataset),
best of --repeats runs. The vocabulary (WordPiece, --vocab_size, uncased) is trained first on
the same text unless --vocab is given; that is not timed.

--reference_script: google-research/bert's create_pretraining_data.py, with its tokenization.py
beside it (not part of this project: fetch them yourself). It is TF1 code; it runs here with
`tensorflow.compat.v1` standing in for `tensorflow` (the compat shim below, which also loads the
tokenization.py beside it as the script's `tokenization`), in a subprocess, timed from after its
imports, with --dupe_factor=1 (one pass, as our dynamic mode; set --reference_dupe_factor=10 for
its default) and --do_lower_case=True on the same vocab. Prints the speed ratio.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# Runs a TF1 script under TF2: `import tensorflow as tf` gets tensorflow.compat.v1, and the
# script's `import tokenization` gets the tokenization.py beside it (as `python script.py` would).
_SHIM = r"""
import importlib.util, os, runpy, sys, time
import tensorflow.compat.v1 as tf1
sys.modules["tensorflow"] = tf1
beside = os.path.join(os.path.dirname(sys.argv[1]), "tokenization.py")
if os.path.exists(beside):
  spec = importlib.util.spec_from_file_location("tokenization", beside)
  sys.modules["tokenization"] = module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
start = time.perf_counter()
sys.argv = sys.argv[1:]
try:
  runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
  if e.code:
    raise
print("REFERENCE_SECONDS", time.perf_counter() - start)
"""


def run_ours(args, vocab, work):
  from bert_jax.data.prepare import prepare
  times = []
  for i in range(args.repeats):
    data_dir = os.path.join(work, f"ours{i}")
    start = time.perf_counter()
    prepare(input=args.input, vocab=vocab, data_dir=data_dir, masking=args.masking,
            dupe_factor=1, num_workers=args.num_workers or None, max_seq_length=128,
            **({"shard_size_mb": args.shard_size_mb} if args.shard_size_mb else {}))
    times.append(time.perf_counter() - start)
    shutil.rmtree(data_dir)
  return min(times), times


def run_reference(args, vocab, work):
  shim = os.path.join(work, "tf1_shim.py")
  with open(shim, "w") as f:
    f.write(_SHIM)
  cmd = [sys.executable, shim, os.path.abspath(args.reference_script),
         f"--input_file={args.input}", f"--output_file={os.path.join(work, 'ref.tfrecord')}",
         f"--vocab_file={vocab}", "--do_lower_case=True", "--max_seq_length=128",
         "--max_predictions_per_seq=20", f"--dupe_factor={args.reference_dupe_factor}",
         "--random_seed=12345"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  r = subprocess.run(cmd, capture_output=True, text=True, env=env)
  if r.returncode:
    sys.exit(f"reference script failed:\n{r.stderr[-3000:]}")
  line = [x for x in r.stdout.splitlines() if x.startswith("REFERENCE_SECONDS")][-1]
  return float(line.split()[1])


def main():
  from bert_jax.data import SAMPLE_CORPUS
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--input", default=SAMPLE_CORPUS,
                 help="text file, one sentence per line (default: the bundled sample)")
  p.add_argument("--vocab", default=None, help="vocab.txt; default: train one (not timed)")
  p.add_argument("--vocab_size", type=int, default=30522)
  p.add_argument("--masking", default="dynamic", choices=("dynamic", "static"))
  p.add_argument("--num_workers", type=int, default=0, help="0 = all cores")
  p.add_argument("--shard_size_mb", type=float, default=None, help="default: prepare's")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--reference_script", default=None)
  p.add_argument("--reference_dupe_factor", type=int, default=1,
                 help="1: the same work as ours; 10: the reference's default (10 maskings, "
                      "which our dynamic masking replaces)")
  p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  from bert_jax.text.vocab import train_vocab

  size = os.path.getsize(args.input)
  work = tempfile.mkdtemp(prefix="bench_prepare_")
  try:
    vocab = args.vocab or train_vocab(args.input, os.path.join(work, "vocab"), args.vocab_size,
                                      lower_case=True)
    best, times = run_ours(args, vocab, work)
    result = {"input": args.input, "input_mb": size / 1e6, "masking": args.masking,
              "num_workers": args.num_workers or os.cpu_count(), "cpus": os.cpu_count(),
              "seconds": best, "all_seconds": times, "mb_per_s": size / 1e6 / best}
    if args.reference_script:
      ref = run_reference(args, vocab, work)
      result.update(reference_seconds=ref, reference_mb_per_s=size / 1e6 / ref,
                    speedup=ref / best)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  if args.json:
    print(json.dumps(result))
    return
  print(f"{'':34s} {'seconds':>9s} {'MB/s':>8s}")
  print(f"{'bert_jax.prepare (' + args.masking + ')':34s} {best:9.2f} {result['mb_per_s']:8.2f}")
  if args.reference_script:
    print(f"{f'reference, dupe_factor={args.reference_dupe_factor}':34s} {result['reference_seconds']:9.2f} "
          f"{result['reference_mb_per_s']:8.2f}")
    print(f"speedup: {result['speedup']:.1f}x")
  print(f"input {args.input}: {size / 1e6:.2f} MB, {result['num_workers']} workers, "
        f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
  main()
