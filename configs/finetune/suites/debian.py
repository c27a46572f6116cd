"""Debian package sections: 12-class classification of a package's description by its archive
section (admin, fonts, games, graphics, math, net, science, sound, text, utils, web, x11).

The data is a local task, not downloaded: a directory with train.tsv, dev.tsv and test.tsv
(`label<TAB>text`, a header row; 10,739 / 1,363 / 1,364 rows in this project's copy, made from
Debian 12's package index), passed with --data_dir (there is no default):

  python -m bert_jax.finetune_suite --suite=debian --init_from=EXPORT --workdir=runs/debian \
      --data_dir=DIR/debian-sections

Three seeds; the score is dev accuracy (majority class: ~15%); MCC (the multi-class R_K) is in
suite.json. The best model of each run predicts test.tsv (WORKDIR/debian/seed<k>/
test_predictions.tsv, with the gold label beside each prediction). BERT's recipe at lr 5e-5,
3 epochs, batch 32 (~1,000 steps a seed).
"""

import ml_collections


def get_config():
  s = ml_collections.ConfigDict()
  s.name = "debian"
  s.data_dir = ""  # the directory with train.tsv, dev.tsv, test.tsv: --data_dir (required)
  s.seeds = [0, 1, 2]
  s.result = "final"
  s.overrides = {}
  s.tasks = ml_collections.ConfigDict(sort_keys=False)  # the table's order
  s.tasks.debian = dict(
      config="default", metrics="accuracy",
      overrides={"task": "classification",
                 "data": {"train_file": "train.tsv", "eval_file": "dev.tsv",
                          "test_file": "test.tsv", "text_a_key": "text", "label_key": "label",
                          "max_seq_length": 128},
                 "train": {"batch_size": 32, "num_epochs": 3.0},
                 "optimizer": {"learning_rate": 5e-5}},
      hint="pass --data_dir=DIR, the debian-sections task's directory: train.tsv, dev.tsv, "
           "test.tsv, `label<TAB>text` with a header row")
  return s
