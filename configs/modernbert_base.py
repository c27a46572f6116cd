"""ModernBERT-base phase 1 (Warner et al. 2024, AnswerDotAI/ModernBERT
yamls/modernbert/modernbert-base-pretrain.yaml): native length 1,024, 30% MLM without NSP,
StableAdamW, batch-size warmup, learning-rate warmup then a long stable phase; the decay comes
later (a separate run, or optimizer.decay_steps > 0).

Global RoPE θ is 10,000 in phase 1: the context extension (configs/modernbert_base_8k.py)
raises it to 160,000, which is what the released checkpoint has. The batch grows from 768 to
4,608 sequences of 1,024 tokens over the first 50B tokens (21,194 steps,
bert_jax/training/batch_warmup.py); the recipe's token budgets become steps through that
schedule: the 3B-token learning-rate warmup is 3,815 steps (all at 768 sequences) and the
1.7T tokens 370,875 steps. Needs data prepared with --objective=none --max_seq_length=1024
--max_predictions_per_seq=308 (a BPE tokenizer.json such as ModernBERT's):
  python -m bert_jax.train --config=configs/modernbert_base.py --workdir=gs://BUCKET/mb/base \
      --config.data.data_dir=gs://BUCKET/data/seq1024
"""

from bert_jax.training.batch_warmup import BatchSizeSchedule
from configs import default

BATCH_WARMUP = BatchSizeSchedule(min_size=768, max_size=4608, warmup_tokens=50_000_000_000,
                                 seq_len=1024)


def get_config():
  c = default.get_config()
  c.model.preset = "modernbert_base"
  c.model.dtype = "bfloat16"
  c.model.max_position_embeddings = 8192  # RoPE: no table, the length the model may take
  c.model.global_rope_theta = 10_000.0  # phase 1 (the 8k extension raises it to 160k)
  c.model.local_rope_theta = 10_000.0
  c.data.seq_len = 1024
  c.data.max_predictions_per_seq = 308  # 30% of 1024, rounded up
  c.data.masked_lm_prob = 0.3
  c.data.pack = True  # unpadded: several documents per row, attention within each
  c.data.max_sequences_per_row = 16
  c.train.batch_size = BATCH_WARMUP.max_size
  c.train.batch_size_warmup_min = BATCH_WARMUP.min_size
  c.train.batch_size_warmup_tokens = BATCH_WARMUP.warmup_tokens
  c.train.num_steps = BATCH_WARMUP.steps_for_tokens(1.7e12)  # 370,875
  c.optimizer.name = "stable_adamw"
  c.optimizer.decouple_lr = True  # ModernBERT's decoupled_stableadamw
  c.optimizer.learning_rate = 8e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.98
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 1e-5
  c.optimizer.clip_grad_norm = 0.0  # StableAdamW clips per tensor instead
  c.optimizer.warmup_steps = BATCH_WARMUP.steps_for_tokens(3e9)  # 3,815 steps of 768
  c.optimizer.decay = "wsd"
  c.optimizer.decay_steps = 0  # stable to the end; decay in a later run
  c.checkpoint.every_steps = 5_000
  c.eval.every_steps = 5_000
  return c
