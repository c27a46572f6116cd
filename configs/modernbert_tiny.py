"""ModernBERT-tiny (4 layers: global, local, local, global; H128) on CPU: the recipe's
objective and optimizer at a demo size. Needs a dataset prepared without a sentence task:
  python -m bert_jax.prepare --input=... --vocab=VOCAB/tokenizer.json --data_dir=DATA \
      --objective=none --max_seq_length=256 --max_predictions_per_seq=77
  python -m bert_jax.train --config=configs/modernbert_tiny.py --workdir=/tmp/mbt \
      --config.data.data_dir=DATA
"""

from configs import modernbert_base


def get_config():
  c = modernbert_base.get_config()
  c.model.preset = "modernbert_tiny"
  c.model.dtype = "float32"
  c.model.global_rope_theta = 160_000.0
  c.data.seq_len = 256
  c.data.max_predictions_per_seq = 77  # 30% of 256
  c.train.batch_size = 32
  c.train.batch_size_warmup_min = 8  # 8 -> 32 sequences over the first 2M tokens (489 steps)
  c.train.batch_size_warmup_tokens = 2_000_000
  c.train.num_steps = 2_000
  c.train.log_every_steps = 50
  c.optimizer.learning_rate = 3e-3  # small models take a larger peak rate
  c.optimizer.warmup_steps = 100
  c.optimizer.decay_steps = 400  # decay in the same run (the recipe decays in a later one)
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 500
  c.eval.batch_size = 64
  c.eval.num_batches = 10
  c.mesh.fsdp = 1
  return c
