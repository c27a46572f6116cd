r"""Export a pretraining checkpoint for fine-tuning: parameters only, as HF, TF1 or bert_jax files.

  python -m bert_jax.export --workdir=DIR [--step=N] --format=hf|tf1|orbax --output_dir=OUT \
      [--overwrite] [--dtype=float32|bfloat16] [--vocab=PATH]

Reads WORKDIR/checkpoints/<step>/state (the newest step by default) restoring ONLY the parameter
tree (an Orbax partial restore: the optimizer state is never read), onto one CPU device whatever
mesh wrote it, so a checkpoint from a TPU pod or a GPU node exports in one CPU process. The model
config comes from WORKDIR/config.json (the run's resolved config) and the checkpoint's own
shapes; the vocabulary from the run's dataset (`--vocab` overrides). Writes OUT with
`bert_jax.save_pretrained` (atomically: OUT appears complete or not at all) plus a README.md
model card: architecture, data, training recipe, step, and the eval metrics logged at that step.

- hf: config.json + model.safetensors + vocab.txt; loads with
  `transformers.BertForPreTraining.from_pretrained(OUT)` (a run with objective none, which has no
  NSP head: `transformers.BertForMaskedLM`).
- tf1: bert_config.json + bert_model.ckpt.* (google-research/bert names) + vocab.txt.
- orbax: bert_jax.json + config.json + params/ (bert_jax.load_pretrained, fine-tuning init_from).
Errors (no checkpoint, unknown step, OUT exists) print one line and exit 2.
"""

from __future__ import annotations

from absl import flags, logging

from bert_jax import cli
from bert_jax.training.export import FORMATS, ExportError, export

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("workdir", None, "bert_jax.train work directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
  flags.DEFINE_enum("format", "hf", FORMATS, "Output format.")
  flags.DEFINE_string("output_dir", None, "Directory to write (must not exist unless "
                      "--overwrite).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir.")
  flags.DEFINE_string("dtype", "float32", "Weights dtype: float32 | bfloat16.")
  flags.DEFINE_string("vocab", None, "Vocabulary to ship (default: the run's dataset's).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it touches at INFO
  if not FLAGS.workdir or not FLAGS.output_dir:
    raise ExportError("--workdir and --output_dir are required")
  path, step = export(FLAGS.workdir, FLAGS.output_dir, format=FLAGS.format, step=FLAGS.step,
                      overwrite=FLAGS.overwrite, dtype=FLAGS.dtype, vocab=FLAGS.vocab)
  print(f"exported step {step} of {FLAGS.workdir} as {FLAGS.format} to {path}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
