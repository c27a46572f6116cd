r"""Pretrain BERT (masked LM + next sentence prediction) on a device mesh.

  python -m bert_jax.train --config=configs/bert_base.py --workdir=DIR \
      --config.data.data_dir=DATA [--config.train.batch_size=512 ...]

Same command on one CPU, one GPU, an 8-GPU box or every host of a TPU pod (multi-host is
auto-detected on Cloud TPU and SLURM; elsewhere pass --coordinator_address/--num_processes/
--process_id). Restarting with the same --workdir resumes from the newest complete checkpoint.
SIGTERM (preemption, `scancel`, Ctrl-C's TERM) saves a checkpoint at the next step boundary
and exits with status 143. Start-up errors (bad config, flags, data) print one line and exit 2;
a run stopped by a non-finite loss exits 3; one whose checkpoint could not be written (disk full)
exits 4 with earlier checkpoints intact.

Writes in WORKDIR: config.json (the resolved config), checkpoints/, metrics.jsonl (train and
eval scalars, one JSON object per line), TensorBoard events (train/, eval/), profile/.
The run itself: `bert_jax.training.trainer.train_and_evaluate`.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from bert_jax import cli
from bert_jax.errors import UserError
from bert_jax.training.trainer import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and metrics go "
                               "(local or gs://).")
cli.define_distributed_flags()
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Compile the train step ahead of time "
                                  "for --topology and report memory/FLOPs; no training.")
_TOPOLOGY = flags.DEFINE_string("topology", "", "TPU topology for --compile_only, e.g. "
                                "v5p-128, v4-32, v5e-8, v6e-16, v5p:2x2x1.")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "TPU slices for --compile_only "
                                   "(multi-slice over DCN).")
_SPLASH_EFFICIENCY = flags.DEFINE_float(
    "splash_efficiency", 0.5, "For --compile_only: the fraction of the chip's peak FLOP/s the "
    "splash attention kernels are assumed to reach; their cost is added to XLA's estimated step "
    "time, whose cost model does not see inside a Pallas kernel.")


def main(argv):
  del argv
  cli.quiet_library_logs()
  cli.start_processes()
  config = _CONFIG.value
  if config is None:
    raise UserError("--config is required, e.g. --config=configs/tiny.py")
  if _COMPILE_ONLY.value:
    from bert_jax.training import aot
    if not _TOPOLOGY.value:
      raise UserError("--compile_only needs --topology, e.g. --topology=v5p-8")
    aot.compile_only(config, _TOPOLOGY.value, _NUM_SLICES.value,
                     _SPLASH_EFFICIENCY.value)
    return
  if not _WORKDIR.value:
    raise UserError("--workdir is required (a local path or gs://bucket/path)")
  train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main, config_flag=_CONFIG, huge_pages=True)
