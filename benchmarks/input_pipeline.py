"""Throughput of `bert_jax.data.input_pipeline.train_iterator` in sequences per second.

  .venv/bin/python benchmarks/input_pipeline.py                   # seq 128, dynamic masking
  .venv/bin/python benchmarks/input_pipeline.py --masking_strategy=whole_word --json
  .venv/bin/python benchmarks/input_pipeline.py --masking_strategy=span --masked_lm_prob=0.3 \
      --max_predictions_per_seq=40
  .venv/bin/python benchmarks/input_pipeline.py --seq_len=512 --max_predictions_per_seq=76 --pack

Prepares a dataset from --input (default: the bundled sample, `bert_jax.data.SAMPLE_CORPUS`)
once (not timed), then times next() on the iterator — reading TFRecords, shuffle,
batch, parse, dynamic masking, numpy conversion — after --warmup batches, for --seconds.
With --pack the rows are packed (several sequences per row): it also reports the fraction of
non-padding tokens per row with and without packing, which is the train step's gain from it
(a packed row costs the same FLOPs as an unpacked one).
"""

import argparse
import json
import os
import shutil
import tempfile
import time


def main():
  from bert_jax.data import SAMPLE_CORPUS
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--input", default=SAMPLE_CORPUS,
                 help="text file(s) to prepare, one sentence per line (default: the bundled sample)")
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--max_predictions_per_seq", type=int, default=20)
  p.add_argument("--batch_size", type=int, default=256, help="per-process batch")
  p.add_argument("--masking_strategy", default="token",
                 choices=("token", "whole_word", "span", "ngram"))
  p.add_argument("--whole_word_masking", action="store_true",
                 help="alias of --masking_strategy=whole_word")
  p.add_argument("--masked_lm_prob", type=float, default=0.15)
  p.add_argument("--seconds", type=float, default=10.0)
  p.add_argument("--warmup", type=int, default=20)
  p.add_argument("--pack", action="store_true", help="pack sequences into rows")
  p.add_argument("--max_sequences_per_row", type=int, default=4)
  p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
  args = p.parse_args()
  if args.whole_word_masking:
    args.masking_strategy = "whole_word"
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  from bert_jax.data import input_pipeline
  from bert_jax.data.prepare import prepare
  from bert_jax.text.vocab import train_vocab

  corpus = args.input
  work = tempfile.mkdtemp(prefix="bench_pipeline_")
  try:
    vocab = train_vocab(corpus, os.path.join(work, "vocab"), 30522, lower_case=True)
    prepare(input=corpus, vocab=vocab, data_dir=work, max_seq_length=args.seq_len,
            max_predictions_per_seq=args.max_predictions_per_seq)
    it = input_pipeline.train_iterator(
        work, batch_size=args.batch_size, seq_len=args.seq_len,
        max_predictions_per_seq=args.max_predictions_per_seq, seed=0,
        masking_strategy=args.masking_strategy, masked_lm_prob=args.masked_lm_prob,
        pack=args.pack,
        max_sequences_per_row=args.max_sequences_per_row)
    for _ in range(args.warmup):
      next(it)
    batches, sequences, tokens, start = 0, 0, 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
      b = next(it)
      batches += 1
      sequences += int(b["nsp_weights"].sum()) if args.pack else len(b["input_ids"])
      tokens += int(b["attention_mask"].sum())
    elapsed = time.perf_counter() - start
    info = input_pipeline.dataset_info(work)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  result = {"seq_len": args.seq_len, "batch_size": args.batch_size,
            "max_predictions_per_seq": args.max_predictions_per_seq,
            "masking_strategy": args.masking_strategy, "masked_lm_prob": args.masked_lm_prob,
            "batches": batches,
            "seconds": elapsed, "sequences_per_s": sequences / elapsed,
            "rows_per_s": batches * args.batch_size / elapsed, "pack": args.pack,
            "nonpad_fraction": tokens / (batches * args.batch_size * args.seq_len),
            "nonpad_fraction_unpacked": tokens / (sequences * args.seq_len),
            "num_train_examples": info["num_train_examples"],
            "cpus": os.cpu_count(), "corpus": corpus}
  if args.json:
    print(json.dumps(result))
    return
  masking = f"dynamic {args.masking_strategy} {args.masked_lm_prob:g}"
  masking += ", packed" if args.pack else ""
  print(f"{'pipeline':48s} {'batches':>8s} {'seq/s':>10s} {'non-pad tokens':>15s}")
  print(f"{f'seq {args.seq_len}, batch {args.batch_size}, {masking}':48s} {batches:8d} "
        f"{result['sequences_per_s']:10.0f} {100 * result['nonpad_fraction']:14.1f}%")
  if args.pack:
    print(f"one sequence per row would be {100 * result['nonpad_fraction_unpacked']:.1f}% "
          f"non-padding: packing gives {result['nonpad_fraction'] / result['nonpad_fraction_unpacked']:.2f}x "
          "the real tokens per train step")
  print(f"{os.cpu_count()} CPUs; corpus {corpus}")


if __name__ == "__main__":
  main()
