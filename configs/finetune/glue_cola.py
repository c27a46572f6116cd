"""GLUE CoLA (grammatical acceptability, 8.5k train / 1,043 dev): Matthews correlation.

BERT-Base, 3 epochs at batch 32 (~800 steps) — minutes on one GPU; the paper reports ~52 MCC
(test). Prepare the TFDS data beforehand:
  tfds build glue/cola --data_dir=TFDS
  python -m bert_jax.finetune --config=configs/finetune/glue_cola.py --workdir=/tmp/cola \
      --config.init_from=EXPORT --config.data.tfds_data_dir=TFDS
"""

from configs.finetune import default


def get_config():
  c = default.get_config()
  c.task = "classification"
  c.data.source = "tfds"
  c.data.tfds_name = "glue/cola"
  c.data.text_a_key = "sentence"
  c.train.batch_size = 32
  c.train.num_epochs = 3.0
  c.optimizer.learning_rate = 2e-5
  c.eval.best_metric = "mcc"
  return c
