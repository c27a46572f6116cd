"""What `bert_jax.prepare` produces vs the reference script's instances, over several seeds.

  .venv/bin/python benchmarks/prepare_fidelity.py --reference_repo=/tmp/ref_bert             # nsp
  .venv/bin/python benchmarks/prepare_fidelity.py --reference_repo=/tmp/ref_albert --objective=sop
  .venv/bin/python benchmarks/prepare_fidelity.py --reference_repo=DIR --input=FILE --vocab=VOCAB.txt \
      --seeds=0,1,2,3,4 --max_seq_length=128 --json

--reference_repo: a clone of google-research/bert (nsp) or google-research/albert (sop, or nsp
with its random_next_sentence=True); not part of this project (clone or fetch it yourself). Its
create_pretraining_data.py and tokenization.py are imported from there at run time, in this
process: they are TF1 code, so while they are imported `import tensorflow as tf` resolves to
`tensorflow.compat.v1` (ALBERT's `from albert import tokenization` to DIR/tokenization.py, and
its unused `tensorflow_hub` import to an empty stand-in when that package is absent). Then, per
seed, `tokenization.FullTokenizer(vocab, do_lower_case)` and `create_training_instances([input],
tokenizer, max_seq_length, dupe_factor=1, short_seq_prob=0.1, masked_lm_prob=0.15,
max_predictions_per_seq=20, random.Random(seed))` are called directly (ALBERT's module FLAGS
parsed first: random_next_sentence=False for sop, the rest at its defaults) and the stats come
from the TrainingInstance objects (len(tokens), is_random_next).

Ours, per seed: `python -m bert_jax.prepare --input=FILE --vocab=VOCAB --data_dir=TMP
--objective=OBJ --seed=S --validation_fraction=0 --masking=dynamic --max_seq_length=N` in a
subprocess, and the train split read back with tfds.builder_from_directory (input_ids length,
next_sentence_label). One pass each (dupe_factor=1; our dynamic mode is one pass by design).

Prints, for each side, the mean and the sample std over the seeds of: the mean instance length
([CLS]/[SEP] included), the NotNext (nsp) / swapped (sop) share, the instances per pass and the
share of instances in each length bin (--bin_width tokens), with ours/reference and the
difference in units of the reference's seed-to-seed std and as Welch's t. Also the share of the
corpus's sentences (non-empty lines) whose token ids differ between our tokenizer
(bert_jax.text.tokenization.Tokenizer) and the reference's FullTokenizer on the same vocab.

--vocab: default, one trained on --input with `python -m bert_jax.vocab --vocab_size=8000
--lower_case` (into the temporary directory). The casing given to the reference's tokenizer is
the one our Tokenizer infers from the vocab (as prepare does). Two trainings of that vocab on
the same text were not identical here (2026-12-01), so pass --vocab to compare two runs.
"""

import argparse
import glob
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name, path, package_path=None):
  spec = importlib.util.spec_from_file_location(
      name, path, submodule_search_locations=package_path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def import_reference(repo):
  """DIR/create_pretraining_data.py (and its tokenization.py) under TF2: returns (module,
  tokenization module, kind) with kind "albert" when it has ALBERT's random_next_sentence."""
  script = os.path.join(repo, "create_pretraining_data.py")
  if not os.path.isfile(os.path.join(repo, "tokenization.py")) or not os.path.isfile(script):
    sys.exit(f"error: --reference_repo={repo}: needs create_pretraining_data.py and "
             f"tokenization.py (a clone of google-research/bert or google-research/albert)")
  with open(script) as f:
    kind = "albert" if "random_next_sentence" in f.read() else "bert"
  import tensorflow as tf
  names = ("tensorflow", "tokenization", "albert", "albert.tokenization", "tensorflow_hub")
  saved = {k: sys.modules[k] for k in names if k in sys.modules}
  sys.modules["tensorflow"] = tf.compat.v1  # the TF1 API the scripts were written against
  try:
    if importlib.util.find_spec("tensorflow_hub") is None:
      sys.modules["tensorflow_hub"] = types.ModuleType("tensorflow_hub")  # only from_hub_module
    if kind == "albert":  # `from albert import tokenization`: DIR as the package `albert`
      package = types.ModuleType("albert")
      package.__path__ = [repo]
      sys.modules["albert"] = package
      tokenization = _load("albert.tokenization", os.path.join(repo, "tokenization.py"))
      package.tokenization = tokenization
    else:  # `import tokenization`, as `python create_pretraining_data.py` finds it beside it
      tokenization = _load("tokenization", os.path.join(repo, "tokenization.py"))
    module = _load("_reference_create_pretraining_data", script)
  finally:
    for k in names:
      sys.modules.pop(k, None)
    sys.modules.update(saved)
  return module, tokenization, kind


def run_reference(module, tokenization, kind, args, vocab, lower_case):
  flag_args = [sys.argv[0]]
  if kind == "albert":
    flag_args.append(f"--random_next_sentence={args.objective == 'nsp'}")
  elif args.objective != "nsp":
    sys.exit(f"error: --objective={args.objective} needs google-research/albert as "
             f"--reference_repo ({args.reference_repo} is google-research/bert: nsp only)")
  module.FLAGS(flag_args)
  tokenizer = tokenization.FullTokenizer(vocab_file=vocab, do_lower_case=lower_case)
  runs = []
  for seed in args.seeds:
    start = time.perf_counter()
    instances = module.create_training_instances(
        [args.input], tokenizer, args.max_seq_length, dupe_factor=1, short_seq_prob=0.1,
        masked_lm_prob=0.15, max_predictions_per_seq=20, rng=random.Random(seed))
    runs.append(([len(x.tokens) for x in instances], [int(x.is_random_next) for x in instances],
                 time.perf_counter() - start))
    print(f"reference seed {seed}: {len(instances)} instances, {runs[-1][2]:.1f} s",
          file=sys.stderr)
  return tokenizer, runs


def run_ours(args, vocab, work):
  import tensorflow as tf
  import tensorflow_datasets as tfds
  runs = []
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  for seed in args.seeds:
    data_dir = os.path.join(work, f"ours_{seed}")
    cmd = [sys.executable, "-m", "bert_jax.prepare", f"--input={args.input}",
           f"--vocab={vocab}", f"--data_dir={data_dir}", f"--objective={args.objective}",
           f"--seed={seed}", "--validation_fraction=0", "--masking=dynamic",
           f"--max_seq_length={args.max_seq_length}"]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=_REPO_ROOT)
    seconds = time.perf_counter() - start
    if r.returncode:
      sys.exit(f"error: {' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    version_dirs = glob.glob(os.path.join(data_dir, "bert_pretraining", "*", "dataset_info.json"))
    builder = tfds.builder_from_directory(os.path.dirname(version_dirs[0]))
    ds = builder.as_dataset(split="train").map(
        lambda x: (tf.shape(x["input_ids"])[0], x["next_sentence_label"]))
    lengths, labels = [], []
    for n, label in ds.as_numpy_iterator():
      lengths.append(int(n))
      labels.append(int(label))
    runs.append((lengths, labels, seconds))
    print(f"ours seed {seed}: {len(lengths)} instances, {seconds:.1f} s (with start-up)",
          file=sys.stderr)
    shutil.rmtree(data_dir, ignore_errors=True)
  return runs


def tokenization_differences(path, ours, theirs, tokenization):
  """(sentences, differing, first few differing lines) over the non-empty lines of `path`,
  each read as the reference reads it (convert_to_unicode, strip)."""
  with open(path, "rb") as f:
    lines = [tokenization.convert_to_unicode(x).strip() for x in f.read().split(b"\n")]
  lines = [x for x in lines if x]
  mine = []
  for k in range(0, len(lines), 4096):
    mine.extend(ours.encode_batch(lines[k:k + 4096]))
  differing = [line for line, ids in zip(lines, mine)
               if list(ids) != theirs.convert_tokens_to_ids(theirs.tokenize(line))]
  return len(lines), len(differing), differing[:3]


def _mean_std(values):
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, 0.0
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(runs, bins, bin_width):
  """Per-seed stats of (lengths, labels, seconds) runs -> {stat: (mean, std, per-seed list)}."""
  per_seed = {"mean length": [], "label share": [], "instances": []}
  for lo in bins:
    per_seed[f"len {lo + 1}-{lo + bin_width}"] = []
  for lengths, labels, _ in runs:
    n = len(lengths)
    per_seed["mean length"].append(sum(lengths) / n)
    per_seed["label share"].append(sum(labels) / n)
    per_seed["instances"].append(n)
    counts = [0] * len(bins)
    for length in lengths:
      counts[min(max(length - 1, 0) // bin_width, len(bins) - 1)] += 1
    for lo, c in zip(bins, counts):
      per_seed[f"len {lo + 1}-{lo + bin_width}"].append(c / n)
  return {k: (*_mean_std(v), v) for k, v in per_seed.items()}


def main():
  from bert_jax.data import SAMPLE_CORPUS
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--reference_repo", required=True,
                 help="clone of google-research/bert (nsp) or google-research/albert (sop)")
  p.add_argument("--objective", default="nsp", choices=("nsp", "sop"))
  p.add_argument("--input", default=SAMPLE_CORPUS,
                 help="text file, one sentence per line, blank line between documents "
                      "(default: the bundled sample)")
  p.add_argument("--vocab", default=None,
                 help="vocab.txt; default: train one on --input (8000, lower-cased)")
  p.add_argument("--seeds", default="0,1,2,3,4")
  p.add_argument("--max_seq_length", type=int, default=128)
  p.add_argument("--bin_width", type=int, default=16, help="tokens per length-histogram bin")
  p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
  args = p.parse_args()
  args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  args.input = os.path.abspath(args.input)
  args.reference_repo = os.path.abspath(args.reference_repo)
  if not os.path.isfile(args.input):
    sys.exit(f"error: --input={args.input} is not a file")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ["CUDA_VISIBLE_DEVICES"] = ""
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel("ERROR")
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  from bert_jax.text.tokenization import Tokenizer

  work = tempfile.mkdtemp(prefix="bench_prepare_fidelity_")
  try:
    vocab = args.vocab
    if vocab is None:
      cmd = [sys.executable, "-m", "bert_jax.vocab", f"--input={args.input}",
             f"--output_dir={os.path.join(work, 'vocab')}", "--vocab_size=8000", "--lower_case"]
      r = subprocess.run(cmd, capture_output=True, text=True, cwd=_REPO_ROOT,
                         env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
      if r.returncode:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-3000:]}")
      vocab = os.path.join(work, "vocab", "vocab.txt")
    vocab = os.path.abspath(vocab)
    ours_tokenizer = Tokenizer.from_file(vocab)
    module, tokenization, kind = import_reference(args.reference_repo)
    theirs_tokenizer, ref_runs = run_reference(module, tokenization, kind, args, vocab,
                                               ours_tokenizer.lower_case)
    sentences, differing, examples = tokenization_differences(
        args.input, ours_tokenizer, theirs_tokenizer, tokenization)
    our_runs = run_ours(args, vocab, work)
  finally:
    shutil.rmtree(work, ignore_errors=True)

  bins = list(range(0, args.max_seq_length, args.bin_width))
  ref, ours = summarize(ref_runs, bins, args.bin_width), summarize(our_runs, bins, args.bin_width)
  label = "NotNext share" if args.objective == "nsp" else "swapped share"
  rows = []
  for key in ref:
    rm, rs, rv = ref[key]
    om, os_, ov = ours[key]
    rows.append({"stat": label if key == "label share" else key,
                 "reference_mean": rm, "reference_std": rs, "ours_mean": om, "ours_std": os_,
                 "ratio": om / rm if rm else None,
                 "diff_in_reference_std": (om - rm) / rs if rs else None,
                 "welch_t": (om - rm) / se if (se := math.sqrt(rs**2 / len(rv) + os_**2 / len(ov)))
                            else None,
                 "reference_per_seed": rv, "ours_per_seed": ov})
  result = {"objective": args.objective, "reference_repo": args.reference_repo,
            "reference_kind": kind, "input": args.input,
            "input_mb": os.path.getsize(args.input) / 1e6, "vocab": args.vocab or "trained (8000)",
            "vocab_size": ours_tokenizer.vocab_size, "lower_case": ours_tokenizer.lower_case,
            "seeds": args.seeds, "max_seq_length": args.max_seq_length,
            "bin_width": args.bin_width, "stats": rows,
            "tokenization": {"sentences": sentences, "differing": differing,
                             "share": differing / sentences if sentences else 0.0,
                             "examples": examples},
            "reference_seconds_per_seed": _mean_std([r[2] for r in ref_runs])[0],
            "ours_seconds_per_seed_with_startup": _mean_std([r[2] for r in our_runs])[0]}
  if args.json:
    print(json.dumps(result))
    return

  def fmt(mean, std, key):
    if key == "instances":
      return f"{mean:9.1f} ± {std:6.1f}"
    if key == "mean length":
      return f"{mean:9.2f} ± {std:6.2f}"
    return f"{mean:9.4f} ± {std:6.4f}"

  ref_name = f"google-research/{kind}"
  print(f"{args.objective}: {ref_name} create_training_instances vs bert_jax.prepare, "
        f"max_seq_length {args.max_seq_length}, dupe_factor 1, seeds {args.seeds} "
        f"(mean ± sample std over seeds)")
  print(f"input {args.input} ({result['input_mb']:.2f} MB), vocab {result['vocab']}: "
        f"{ours_tokenizer.vocab_size} ids, lower_case={ours_tokenizer.lower_case}")
  print(f"{'':16s} {'reference':>18s} {'ours':>18s} {'ours/ref':>9s} {'Δ/σref':>7s} {'t':>6s}")
  for row, key in zip(rows, ref):
    ratio = f"{row['ratio']:9.3f}" if row["ratio"] is not None else f"{'-':>9s}"
    z = row["diff_in_reference_std"]
    z = f"{z:+7.2f}" if z is not None else f"{'-':>7s}"
    t = f"{row['welch_t']:+6.2f}" if row["welch_t"] is not None else f"{'-':>6s}"
    print(f"{row['stat']:16s} {fmt(row['reference_mean'], row['reference_std'], key)} "
          f"{fmt(row['ours_mean'], row['ours_std'], key)} {ratio} {z} {t}")
  print(f"Δ/σref: (ours - reference) over the reference's seed-to-seed std; t: Welch's t of the "
        f"two means over {len(args.seeds)} seeds each (|t| > ~2.3 would be unlikely by chance)")
  tok = result["tokenization"]
  print(f"tokenization: {tok['differing']} of {tok['sentences']} sentences differ "
        f"({100 * tok['share']:.3f}%) between bert_jax's Tokenizer and the reference's "
        f"FullTokenizer")
  for line in examples:
    print(f"  differs: {line[:100]!r}")
  print(f"seconds per seed: reference {result['reference_seconds_per_seed']:.1f} "
        f"(in process), ours {result['ours_seconds_per_seed_with_startup']:.1f} "
        f"(subprocess, start-up included)")


if __name__ == "__main__":
  main()
