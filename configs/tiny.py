"""BERT-tiny (L2/H128) on the bundled sample corpus: the CPU demo and the tests' config.

Sized for a 2-core CPU: ~12 steps/s at batch 32, seq 128. Run (after launch/demo.sh made the data):
  python -m bert_jax.train --config=configs/tiny.py --workdir=/tmp/tiny \
      --config.data.data_dir=demo_output/data
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.preset = "tiny"
  c.train.batch_size = 32
  c.train.num_steps = 2_000
  c.train.log_every_steps = 50
  c.optimizer.learning_rate = 1e-3  # small models take a larger peak rate
  c.optimizer.warmup_steps = 100
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 500
  c.eval.batch_size = 64
  c.eval.num_batches = 10
  return c
