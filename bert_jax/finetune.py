r"""Fine-tune BERT: sequence classification / regression, token tagging, extractive QA.

  python -m bert_jax.finetune --config=configs/finetune/glue_sst2.py --workdir=DIR \
      --config.init_from=PATH [--config.data.train_file=... --config.train.num_epochs=3 ...]

PATH is anything `bert_jax.load_pretrained` reads (an HF directory, a google-research/bert
checkpoint, a `bert_jax.export` directory) or a pretraining WORKDIR (its newest checkpoint).
The recipe: AdamW, linear warmup over the first 10% of steps then linear decay to 0, a few
epochs; the mesh, parameter shardings, jitted donated train step, Orbax checkpoints and the
training loop are pretraining's (multi-host: the same flags as bert_jax.train). After every
epoch (or every eval.every_steps): eval metrics to the log, WORKDIR/metrics.jsonl and
TensorBoard (train/, eval/), eval predictions to WORKDIR/eval_predictions.*, a checkpoint in
WORKDIR/checkpoints (restarting with the same --workdir resumes exactly; SIGTERM saves one and
exits 143), and when the eval metric improves the model to WORKDIR/best (a bert_jax export:
`load_pretrained(WORKDIR/best)`) and test predictions to WORKDIR/test_predictions.* (a labelled
test file is also scored: results.json best_test).
WORKDIR/results.json summarises the run; with export.format set, the best model is also written
as WORKDIR/export (hf | tf1 | orbax). Bad input (config, data, checkpoint) prints one line
`error: ...` and exits 2; a non-finite loss exits 3; a failed checkpoint save exits 4.
The run itself: `bert_jax.finetuning.run.finetune_and_evaluate`.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from bert_jax import cli
from bert_jax.errors import UserError
from bert_jax.finetuning.run import finetune_and_evaluate

FLAGS = flags.FLAGS


def define_flags():
  config = config_flags.DEFINE_config_file("config", None, "Config file "
                                           "(configs/finetune/*.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, predictions and the best "
                      "model go.")
  cli.define_distributed_flags()
  return config


def main(argv):
  del argv
  cli.quiet_library_logs()
  cli.start_processes()
  if FLAGS.config is None:
    raise UserError("--config is required, e.g. --config=configs/finetune/glue_sst2.py")
  if not FLAGS.workdir:
    raise UserError("--workdir is required")
  results = finetune_and_evaluate(FLAGS.config, FLAGS.workdir)
  best = results["best"]
  print(f"best {results['metric']} {best if best is None else round(best, 4)} at step "
        f"{results['best_step']}; results in {FLAGS.workdir}/results.json")


if __name__ == "__main__":
  cli.run(main, config_flag=define_flags(), huge_pages=True)
