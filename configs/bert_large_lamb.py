"""BERT-Large with LAMB at batch 64k (You et al. 2019, "Training BERT in 76 minutes").

Phase 1 recipe: 7,038 steps at batch 65,536, lr 6e-3 (sqrt scaling), warmup 2,000, poly decay.
Sized for a TPU v5p-512 / v4-1024 pod slice (data parallel over all chips, FSDP 8); on fewer
chips raise train.grad_accum_steps.
  python -m bert_jax.train --config=configs/bert_large_lamb.py --workdir=gs://BUCKET/runs/lamb \
      --config.data.data_dir=gs://BUCKET/data/seq128
"""

from configs import bert_large


def get_config():
  c = bert_large.get_config()
  c.train.batch_size = 65_536
  c.train.num_steps = 7_038
  c.optimizer.name = "lamb"
  c.optimizer.learning_rate = 6e-3
  c.optimizer.warmup_steps = 2_000
  c.optimizer.decay = "polynomial"
  c.optimizer.power = 1.0
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_grad_norm = 1.0
  c.mesh.fsdp = 8
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 500
  return c
