"""CoNLL-2003 English NER (BIO tags PER/ORG/LOC/MISC, 14k train / 3.3k dev sentences): entity F1.

BERT-Base cased, 3 epochs at batch 32 (~1,300 steps) — minutes on one GPU; the paper reports
~95-96 dev F1 (with document context; sentence-level as here is ~1 point lower).
  tfds build conll2003 --data_dir=TFDS                # on a machine with network
  python -m bert_jax.finetune --config=configs/finetune/conll2003.py --workdir=/tmp/ner \
      --config.init_from=EXPORT --config.data.tfds_data_dir=TFDS
Local CoNLL files (word ... tag per line, blank line between sentences): --config.data.source=files
  --config.data.train_file=eng.train --config.data.eval_file=eng.testa --config.data.format=conll
"""

from configs.finetune import default


def get_config():
  c = default.get_config()
  c.task = "token_classification"
  c.data.source = "tfds"
  c.data.tfds_name = "conll2003"
  c.data.max_seq_length = 128
  c.train.batch_size = 32
  c.train.num_epochs = 3.0
  c.optimizer.learning_rate = 5e-5
  c.eval.best_metric = "f1"
  return c
