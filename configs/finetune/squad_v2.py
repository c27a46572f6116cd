"""SQuAD v2.0 extractive QA with unanswerable questions (130k train / 11.9k dev): EM and F1.

BERT-Base, 2 epochs at batch 32, length 384, stride 128 (~8,200 steps) — one to two hours on one
GPU; BERT-Large reaches ~78-81 F1 (dev) in the google-research/bert README.
  python -m bert_jax.finetune --config=configs/finetune/squad_v2.py --workdir=/tmp/squad2 \
      --config.init_from=EXPORT --config.data.train_file=train-v2.0.json \
      --config.data.eval_file=dev-v2.0.json
WORKDIR/eval_predictions.json and eval_null_odds.json are evaluate-v2.0.py's inputs; tune
--config.data.null_score_diff_threshold on dev (the official script's best_f1_thresh).
"""

from configs.finetune import squad_v1


def get_config():
  c = squad_v1.get_config()
  c.data.version_2_with_negative = True
  c.data.null_score_diff_threshold = 0.0
  return c
