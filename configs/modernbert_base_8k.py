"""ModernBERT-base context extension to 8,192 tokens, from phase 1's parameters: global RoPE θ
raised from 10,000 to 160,000 (local layers keep 10,000 and their 128-token window), the same
objective and optimizer at a lower peak rate (3e-4, as the published recipe's extension).

  python -m bert_jax.train --config=configs/modernbert_base_8k.py --workdir=gs://BUCKET/mb/8k \
      --config.data.data_dir=gs://BUCKET/data/seq8192 \
      --config.init_from=gs://BUCKET/mb/base/export   # bert_jax.export of phase 1

Data: --objective=none --max_seq_length=8192 --max_predictions_per_seq=2458.
"""

from configs import modernbert_base


def get_config():
  c = modernbert_base.get_config()
  c.model.global_rope_theta = 160_000.0
  c.model.remat_policy = "save_dots"
  c.data.seq_len = 8192
  c.data.max_predictions_per_seq = 2458  # 30% of 8192
  c.data.max_sequences_per_row = 64
  c.train.batch_size = 576  # the same 4.7M tokens per step as phase 1
  c.train.batch_size_warmup_min = 0  # no batch-size warmup in the extension
  c.train.batch_size_warmup_tokens = 0
  c.train.num_steps = 64_000  # ~300B tokens
  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 500
  c.optimizer.decay_steps = 0
  return c
