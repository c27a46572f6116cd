"""GLUE (dev sets), as MosaicBERT's GLUE script reports it: 8 tasks (WNLI and AX left out, as
the BERT paper does), 5 seeds on the small ones (CoLA, MRPC, STS-B, RTE), one on the rest.

  tfds build glue/cola glue/sst2 glue/mrpc glue/stsb glue/qqp glue/mnli glue/qnli glue/rte \
      --data_dir=TFDS                                   # once, where there is network
  python -m bert_jax.finetune_suite --suite=glue --init_from=EXPORT --workdir=runs/glue \
      --data_dir=TFDS                                   # or --glue_dir=GLUE (GLUE's own TSVs)

Scores (each task's number that enters the average; the GLUE leaderboard's): CoLA Matthews
correlation; MRPC and QQP the mean of F1 and accuracy; STS-B the mean of Pearson and Spearman;
SST-2, MNLI (matched), QNLI, RTE accuracy. Fractions (0.85), not percentages. The recipe is
BERT's (configs/finetune/glue_*.py and default.py: AdamW, lr 2e-5, batch 32, 3 epochs, warmup
10%); MosaicBERT tunes lr and epochs per task and starts RTE, MRPC and STS-B from the MNLI
model, which this suite does not do. Change any key for every task (--set=train.num_epochs=2)
or for one (--set=rte:optimizer.learning_rate=1e-5).
"""

import ml_collections

SMALL = [0, 1, 2, 3, 4]


def get_config():
  s = ml_collections.ConfigDict()
  s.name = "glue"
  s.data_dir = ""  # TFDS data dir ("" = $TFDS_DATA_DIR or ~/tensorflow_datasets): --data_dir
  s.glue_dir = ""  # GLUE's own TSVs instead (CoLA/train.tsv, ...): --glue_dir
  s.seeds = [0]  # a task without its own seeds
  s.result = "final"  # final | best: each run's last eval, or its best (eval.best_metric)
  s.overrides = {}  # fine-tuning config keys for every task, nested: {"train": {"num_epochs": 2}}
  t = s.tasks = ml_collections.ConfigDict(sort_keys=False)  # the table's order
  t.cola = dict(config="glue_cola", glue="cola", seeds=SMALL, metrics="mcc")
  t.sst2 = dict(config="glue_sst2", glue="sst2", metrics="accuracy")
  t.mrpc = dict(config="glue_mrpc", glue="mrpc", seeds=SMALL, metrics="f1,accuracy")
  t.stsb = dict(config="glue_stsb", glue="stsb", seeds=SMALL, metrics="pearson,spearman")
  t.qqp = dict(config="default", glue="qqp", metrics="f1,accuracy",
               overrides={"eval": {"best_metric": "f1"}})
  t.mnli = dict(config="default", glue="mnli", metrics="accuracy")
  t.qnli = dict(config="default", glue="qnli", metrics="accuracy")
  t.rte = dict(config="default", glue="rte", seeds=SMALL, metrics="accuracy")
  return s
