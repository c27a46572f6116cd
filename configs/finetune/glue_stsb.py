"""GLUE STS-B (sentence-pair similarity 0-5, 5.7k train / 1.5k dev): regression, Pearson and
Spearman correlation (best model by Pearson).

BERT-Base, 3 epochs at batch 32 (~540 steps) — minutes on one GPU; the paper reports ~86-87
Spearman (test). Prepare the TFDS data beforehand:
  tfds build glue/stsb --data_dir=TFDS
  python -m bert_jax.finetune --config=configs/finetune/glue_stsb.py --workdir=/tmp/stsb \
      --config.init_from=EXPORT --config.data.tfds_data_dir=TFDS
"""

from configs.finetune import default


def get_config():
  c = default.get_config()
  c.task = "regression"
  c.data.source = "tfds"
  c.data.tfds_name = "glue/stsb"
  c.data.text_a_key, c.data.text_b_key = "sentence1", "sentence2"
  c.train.batch_size = 32
  c.train.num_epochs = 3.0
  c.optimizer.learning_rate = 2e-5
  c.eval.best_metric = "pearson"
  return c
