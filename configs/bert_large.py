"""BERT-Large phase 1 (seq 128, 900k steps at batch 256), original optimizer and schedule.

Sized for a v4-32 / v5p-32 slice or 8×H100: FSDP over 4 within data parallelism, bf16 compute.
  python -m bert_jax.train --config=configs/bert_large.py --workdir=gs://BUCKET/runs/large \
      --config.data.data_dir=gs://BUCKET/data/seq128
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.preset = "large"
  c.model.dtype = "bfloat16"
  c.data.seq_len = 128
  c.data.max_predictions_per_seq = 20
  c.train.batch_size = 256
  c.train.num_steps = 900_000
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10_000
  c.mesh.fsdp = 4
  return c
