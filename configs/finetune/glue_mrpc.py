"""GLUE MRPC (paraphrase pairs, 3.7k train / 408 dev): accuracy and F1 (best model by F1).

BERT-Base, 3 epochs at batch 32 (~345 steps) — minutes on one GPU; the paper reports ~88-89 F1.
  tfds build glue/mrpc --data_dir=TFDS                # on a machine with network
  python -m bert_jax.finetune --config=configs/finetune/glue_mrpc.py --workdir=/tmp/mrpc \
      --config.init_from=EXPORT --config.data.tfds_data_dir=TFDS
"""

from configs.finetune import default


def get_config():
  c = default.get_config()
  c.task = "classification"
  c.data.source = "tfds"
  c.data.tfds_name = "glue/mrpc"
  c.data.text_a_key, c.data.text_b_key = "sentence1", "sentence2"
  c.data.max_seq_length = 128
  c.train.batch_size = 32
  c.train.num_epochs = 3.0
  c.optimizer.learning_rate = 2e-5
  c.eval.best_metric = "f1"
  return c
