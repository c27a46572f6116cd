"""BERT-Base phase 2: seq 512, 100k steps, continuing from phase 1's parameters.

Needs a dataset prepared at --max_seq_length=512 --max_predictions_per_seq=76. Sized for one
8-chip host with bf16. The optimizer restarts (fresh moments, short warmup), as phase 2 does:
  python -m bert_jax.train --config=configs/bert_base_phase2.py --workdir=gs://BUCKET/runs/base2 \
      --config.data.data_dir=gs://BUCKET/data/seq512 \
      --config.init_from=gs://BUCKET/runs/base/export   # `bert_jax.export --format=orbax` of phase 1

Sequence packing (`--config.data.pack=True`) puts several short sequences in one row with
block-diagonal attention: on ../shared/corpus at 512 it raises the non-padding fraction of a row
from 58% to 96% (1.6x the real tokens per step, docs/benchmarks.md). It is off here because it
also raises the sequences per step (the batch counts rows); turn it on and size the batch for it.
"""

from configs import bert_base


def get_config():
  c = bert_base.get_config()
  c.data.seq_len = 512
  c.data.max_predictions_per_seq = 76
  c.train.num_steps = 100_000
  c.optimizer.warmup_steps = 1_000
  c.model.remat_policy = "save_dots"
  return c
