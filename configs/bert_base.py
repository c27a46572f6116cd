"""BERT-Base phase 1 (seq 128, 900k steps at batch 256: the original recipe's first 90%).

Sized for one 8-chip host (TPU v4-8 / v5p-8, or 8 GPUs): pure data parallelism, bf16 compute.
  python -m bert_jax.train --config=configs/bert_base.py --workdir=gs://BUCKET/runs/base \
      --config.data.data_dir=gs://BUCKET/data/seq128
Then phase 2 with configs/bert_base_phase2.py.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.preset = "base"
  c.model.dtype = "bfloat16"
  c.data.seq_len = 128
  c.data.max_predictions_per_seq = 20
  c.train.batch_size = 256
  c.train.num_steps = 900_000
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10_000
  return c
