r"""Fine-tune one checkpoint on a suite of tasks and print one table (GLUE, or tasks of your own).

  python -m bert_jax.finetune_suite --init_from=EXPORT --suite=glue --workdir=DIR \
      [--data_dir=TFDS | --glue_dir=GLUE] [--tasks=cola,mrpc] [--seeds=0,1,2] \
      [--set=train.num_epochs=2 --set=cola:optimizer.learning_rate=3e-5] [--parallel=N] [--json]

--init_from: anything `bert_jax.finetune` starts from (an HF directory, a google-research/bert
checkpoint, a `bert_jax.export` directory, a pretraining WORKDIR); or --from_scratch with
--set=model.preset=NAME --set=data.vocab=FILE: the same runs from random init, the baseline. --suite: a name under
configs/finetune/suites/ (glue, debian) or a suite config file (the format:
`bert_jax.finetuning.suite`). Each (task, seed) is a `bert_jax.finetune` run in
WORKDIR/<task>/seed<k>/; finished ones are skipped, so rerunning the command resumes. At the end:
the table (per task its metric's mean ± std over the seeds, the seeds; the average over the
tasks) on stdout and in WORKDIR/suite.json; with --json the last line is that JSON object.
GLUE reads TFDS glue/<task> prepared in --data_dir (`tfds build glue/cola --data_dir=DIR`; never
downloaded here) or GLUE's own TSVs in --glue_dir (CoLA/train.tsv, CoLA/dev.tsv, ...). Runs go
one after another, each on all local devices; --parallel=N runs N at a time as separate
processes, run i on GPU i (CUDA_VISIBLE_DEVICES). Bad input (a suite, a task's missing data, a
flag) prints one line `error: ...` and exits 2; a run's own failure exits with its code.
"""

from __future__ import annotations

import json
import os

from absl import flags

from bert_jax import cli
from bert_jax.errors import UserError
from bert_jax.finetuning import suite as suite_lib

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("suite", None, "A suite under configs/finetune/suites/ (glue, debian) or a "
                      "suite config file (.py).")
  flags.DEFINE_string("init_from", "", "The model to fine-tune: an HF / bert_jax.export / "
                      "google-research/bert directory, or a pretraining WORKDIR.")
  flags.DEFINE_bool("from_scratch", False, "Fine-tune from random init instead of --init_from "
                    "(the baseline a pretrained model is compared with): the size from "
                    "--set=model.preset=NAME, the vocabulary from --set=data.vocab=FILE.")
  flags.DEFINE_string("workdir", None, "Where the runs (WORKDIR/<task>/seed<k>/) and suite.json "
                      "go.")
  flags.DEFINE_list("tasks", [], "Run only these tasks of the suite (comma-separated).")
  flags.DEFINE_list("seeds", [], "Seeds for every task, replacing the suite's (e.g. 0,1,2).")
  flags.DEFINE_string("data_dir", "", "The TFDS data dir of GLUE (default $TFDS_DATA_DIR or "
                      "~/tensorflow_datasets), or the directory of a local suite's files.")
  flags.DEFINE_string("glue_dir", "", "GLUE's own TSVs (CoLA/train.tsv, CoLA/dev.tsv, ...), "
                      "read instead of TFDS.")
  flags.DEFINE_multi_string("set", [], "A fine-tuning config key for every task, KEY=VALUE "
                            "(train.num_epochs=2), or for one, TASK:KEY=VALUE.")
  flags.DEFINE_integer("parallel", 1, "Runs at a time: 1 = one after another in this process; "
                       "N > 1 = N `bert_jax.finetune` processes, run i on GPU i.")
  flags.DEFINE_bool("json", False, "Print the summary as one JSON object on the last line.")
  flags.DEFINE_bool("compilation_cache", True, "JAX's persistent compilation cache in "
                    "WORKDIR/jax_cache (unless JAX_COMPILATION_CACHE_DIR is set): the seeds of "
                    "a task compile once.")
  cli.define_distributed_flags()


def _seeds(values: list[str]) -> list[int]:
  try:
    return [int(v) for v in values]
  except ValueError:
    raise UserError(f"--seeds={','.join(values)}: seeds are integers, e.g. --seeds=0,1,2") \
        from None


def main(argv):
  del argv
  cli.quiet_library_logs()
  if not FLAGS.suite:
    raise UserError("--suite is required: glue, debian or a suite config file "
                    "(configs/finetune/suites/*.py)")
  if not FLAGS.workdir:
    raise UserError("--workdir is required")
  s = suite_lib.load_suite(FLAGS.suite)
  if FLAGS.data_dir:
    s.data_dir = FLAGS.data_dir
  if FLAGS.glue_dir:
    s.glue_dir = FLAGS.glue_dir
  init_from = FLAGS.init_from or s.init_from
  if FLAGS.from_scratch and init_from:
    raise UserError(f"--from_scratch fine-tunes a randomly initialised model, but --init_from="
                    f"{init_from} was given too; drop one of them")
  if not init_from and not FLAGS.from_scratch:
    raise UserError("--init_from is required: an HF / bert_jax.export directory, a "
                    "google-research/bert checkpoint or a pretraining WORKDIR (or --from_scratch "
                    "--set=model.preset=NAME --set=data.vocab=FILE for the random-init baseline)")
  if init_from and "://" not in init_from and not os.path.exists(init_from):
    raise UserError(f"--init_from={init_from}: no such file or directory")
  seeds = _seeds(FLAGS.seeds)
  if FLAGS.parallel > 1 and FLAGS.num_processes > 1:
    raise UserError("--parallel runs processes on this host; it does not combine with "
                    "--num_processes (a multi-host run goes one task after another)")
  if FLAGS.compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    cache = os.path.join(FLAGS.workdir, "jax_cache")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache  # --parallel's processes inherit it
    import jax
    jax.config.update("jax_compilation_cache_dir", cache)
  if FLAGS.parallel == 1:
    cli.start_processes()
  summary = suite_lib.run_suite(s, FLAGS.workdir, init_from=init_from, tasks=FLAGS.tasks,
                                seeds=seeds, sets=FLAGS.set, parallel=FLAGS.parallel)
  if not summary:  # not process 0
    return
  print(suite_lib.format_table(summary))
  print(f"results in {os.path.join(FLAGS.workdir, 'suite.json')}")
  if FLAGS.json:
    print(json.dumps(summary))


if __name__ == "__main__":
  define_flags()
  cli.run(main, huge_pages=True)
