"""GLUE SST-2 (single-sentence sentiment, 67k train / 872 dev): accuracy.

BERT-Base, 3 epochs at batch 32 (6,315 steps) — one GPU or TPU host; BERT-Base reaches ~92-93%
dev accuracy in the paper. TFDS data must be prepared beforehand (nothing is downloaded here):
  tfds build glue/sst2 --data_dir=TFDS                # on a machine with network
  python -m bert_jax.finetune --config=configs/finetune/glue_sst2.py --workdir=/tmp/sst2 \
      --config.init_from=EXPORT --config.data.tfds_data_dir=TFDS
Local GLUE TSVs instead: --config.data.source=files --config.data.train_file=SST-2/train.tsv
  --config.data.eval_file=SST-2/dev.tsv (columns sentence, label).
"""

from configs.finetune import default


def get_config():
  c = default.get_config()
  c.task = "classification"
  c.data.source = "tfds"
  c.data.tfds_name = "glue/sst2"
  c.data.text_a_key = "sentence"
  c.data.max_seq_length = 128
  c.train.batch_size = 32
  c.train.num_epochs = 3.0
  c.optimizer.learning_rate = 2e-5
  c.eval.best_metric = "accuracy"
  return c
