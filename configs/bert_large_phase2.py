"""BERT-Large phase 2: seq 512, 100k steps, from phase 1's parameters (fresh optimizer).

Sized for a v4-32 / v5p-32 slice or 8×H100 (bf16, FSDP 4, save_dots remat):
  python -m bert_jax.train --config=configs/bert_large_phase2.py --workdir=gs://BUCKET/runs/large2 \
      --config.data.data_dir=gs://BUCKET/data/seq512 --config.init_from=gs://BUCKET/runs/large/export

Sequence packing (`--config.data.pack=True`, off here): see configs/bert_base_phase2.py.
"""

from configs import bert_large


def get_config():
  c = bert_large.get_config()
  c.data.seq_len = 512
  c.data.max_predictions_per_seq = 76
  c.train.num_steps = 100_000
  c.optimizer.warmup_steps = 1_000
  c.model.remat_policy = "save_dots"
  return c
