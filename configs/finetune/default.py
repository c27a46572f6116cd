"""The fine-tuning base config: every key, declared once, with what it means. Presets override it.

Not meant to be run on its own (it names no data); see glue_sst2.py, conll2003.py, squad_v1.py.
Override any key on the command line: --config.train.batch_size=16
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # classification | regression | token_classification | question_answering.
  c.task = "classification"
  # Start from: an HF / google-research/bert / bert_jax export directory, or a pretraining WORKDIR.
  c.init_from = ""

  c.model = ml_collections.ConfigDict()
  c.model.preset = ""  # "" = the checkpoint's size; else checked against it (needed w/o init_from).
  c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32).
  # -1 / "": the checkpoint's own value (BERT's releases: 0.1; ModernBERT's: 0).
  c.model.hidden_dropout_prob = -1.0  # dropout on embeddings and sub-layer outputs.
  c.model.attention_probs_dropout_prob = -1.0  # dropout on attention probabilities.
  c.model.classifier_dropout = -1.0  # dropout before the head (BERT's default: hidden's).
  c.model.classifier_pooling = ""  # ModernBERT: cls | mean (over the attention mask).
  c.model.scan_layers = False  # unrolled (faster steps, less memory) vs lax.scan (one layer body).
  c.model.remat_policy = "none"  # none | full | save_dots: recompute activations in backward.
  c.model.attention_impl = "auto"  # auto | xla | cudnn | splash | manual (models/attention.py).

  c.data = ml_collections.ConfigDict()
  c.data.source = "files"  # files (local train/eval/test files) | tfds (a prepared local TFDS).
  c.data.tfds_name = ""  # TFDS name: glue/sst2, glue/mrpc, glue/stsb, conll2003, squad/v1.1, ...
  c.data.tfds_data_dir = ""  # where that TFDS dataset is prepared (never downloaded here).
  c.data.train_split = "train"  # TFDS split to train on.
  c.data.eval_split = "validation"  # TFDS split to evaluate on ("" = none).
  c.data.test_split = ""  # TFDS split to predict (unlabelled; "" = none).
  c.data.train_file = ""  # local training file (csv/tsv/jsonl; conll; SQuAD json).
  c.data.eval_file = ""  # local evaluation file (labelled).
  c.data.test_file = ""  # local file to predict (labels optional).
  c.data.format = ""  # csv | tsv | jsonl | conll | json; "" = from the file extension.
  c.data.text_a_key = "sentence"  # column of the (first) text.
  c.data.text_b_key = ""  # column of the second text of a pair ("" = single sentences).
  c.data.label_key = "label"  # column of the label (a class name or a number for regression).
  c.data.tokens_key = "tokens"  # tagging JSONL: the list of words.
  c.data.tags_key = "tags"  # tagging JSONL: the list of tags (one per word).
  c.data.labels = ""  # comma-separated label set; "" = TFDS's names or sorted training labels.
  c.data.vocab = ""  # vocab.txt / spm.model; "" = the one that came with init_from.
  c.data.max_seq_length = 128  # tokens per sequence, [CLS] and [SEP]s included.
  c.data.doc_stride = 128  # QA: tokens between the starts of two context windows.
  c.data.max_query_length = 64  # QA: question tokens kept.
  c.data.max_answer_length = 30  # QA: longest answer span, in tokens.
  c.data.n_best_size = 20  # QA: top start / end logits combined into candidate spans.
  c.data.version_2_with_negative = False  # QA: SQuAD v2.0 (unanswerable questions).
  c.data.null_score_diff_threshold = 0.0  # QA v2.0: predict "" when null - best > this.

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32  # GLOBAL batch size.
  c.train.num_epochs = 3.0  # passes over the training data (fractions allowed).
  c.train.num_steps = -1  # > 0 overrides num_epochs with an exact number of steps.
  c.train.seed = 0  # head init, dropout and data order seed.
  c.train.log_every_steps = 50  # train metrics to the log / metrics.jsonl every N steps.
  c.train.on_nonfinite = "stop"  # stop | skip: what a non-finite loss or gradient does.
  c.train.max_skipped_steps = 100  # in skip mode, stop once this many steps were skipped.
  c.train.peak_tflops_per_device = 0.0  # MFU denominator; 0 = known chip table / CPU measured.
  c.train.profile_start_step = -1  # first step of a jax.profiler trace (-1: no trace).
  c.train.profile_num_steps = 5  # steps in the trace (written to WORKDIR/profile).

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # adamw (optax) | bert_adam (original) | lamb | stable_adamw.
  c.optimizer.learning_rate = 2e-5  # peak learning rate (BERT paper: 2e-5 .. 5e-5).
  c.optimizer.warmup_proportion = 0.1  # warmup steps as a fraction of all steps.
  c.optimizer.warmup_steps = -1  # >= 0 overrides warmup_proportion.
  c.optimizer.decay = "linear"  # linear | polynomial | cosine | constant, after warmup.
  c.optimizer.power = 1.0  # polynomial decay power.
  c.optimizer.end_learning_rate = 0.0  # learning rate at the last step.
  c.optimizer.b1 = 0.9  # first-moment decay.
  c.optimizer.b2 = 0.999  # second-moment decay.
  c.optimizer.eps = 1e-6  # epsilon (BERT's value).
  c.optimizer.weight_decay = 0.01  # decoupled weight decay (not on LayerNorm or biases).
  c.optimizer.clip_grad_norm = 1.0  # global-norm gradient clipping (0 = off).

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # data-parallel size (-1 = all devices left over).
  c.mesh.fsdp = 1  # FSDP size: params and optimizer state sharded over it.
  c.mesh.tensor = 1  # tensor-parallel size.

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64  # global eval batch size.
  c.eval.every_steps = 0  # evaluate (and checkpoint) every N steps; 0 = every epoch.
  c.eval.best_metric = ""  # metric picking WORKDIR/best; "" = the task's (accuracy, pearson, f1).

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.max_to_keep = 1  # training checkpoints kept for resuming (the best is separate).
  c.checkpoint.async_save = True  # write in the background while training continues.
  c.checkpoint.on_save_error = "stop"  # stop | continue: a failed save (e.g. disk full).

  c.export = ml_collections.ConfigDict()
  c.export.format = ""  # hf | tf1 | orbax: also write the best model to WORKDIR/export.
  return c
