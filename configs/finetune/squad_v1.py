"""SQuAD v1.1 extractive QA (88k train / 10.6k dev questions): exact match and F1.

BERT-Base, 2 epochs at batch 32, length 384, stride 128 (~5,500 steps) — about an hour on one
GPU; the paper reports 80.8 EM / 88.5 F1 (dev). From the official JSON files:
  python -m bert_jax.finetune --config=configs/finetune/squad_v1.py --workdir=/tmp/squad \
      --config.init_from=EXPORT --config.data.train_file=train-v1.1.json \
      --config.data.eval_file=dev-v1.1.json
TFDS instead (prepared beforehand with `tfds build squad/v1.1`): --config.data.source=tfds
  --config.data.tfds_name=squad/v1.1 --config.data.tfds_data_dir=TFDS
WORKDIR/eval_predictions.json is in the official evaluate-v1.1.py format.
"""

from configs.finetune import default


def get_config():
  c = default.get_config()
  c.task = "question_answering"
  c.data.source = "files"
  c.data.max_seq_length = 384
  c.data.doc_stride = 128
  c.data.max_query_length = 64
  c.data.max_answer_length = 30
  c.data.n_best_size = 20
  c.train.batch_size = 32
  c.train.num_epochs = 2.0
  c.optimizer.learning_rate = 3e-5
  c.eval.batch_size = 64
  c.eval.best_metric = "f1"
  return c
