"""The base config: every key, declared once, with what it means. Presets override it.

Not meant to be run on its own (it names no data); see configs/tiny.py for the CPU demo.
Override any key on the command line: --config.train.batch_size=512
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  # tiny | mini | small | medium | base | large (BERT) | modernbert_{tiny,base,large} (PRESETS).
  c.model.preset = "base"
  c.model.vocab_size = -1  # -1: the dataset's vocabulary size; else must equal it.
  # Keys at -1 / "" keep the preset's value (BERT: 512 positions, gelu_new, dropout 0.1;
  # ModernBERT: 8192 positions, gelu, dropout 0).
  c.model.max_position_embeddings = -1  # BERT: position table rows; ModernBERT: RoPE context.
  c.model.hidden_act = ""  # gelu_new (tanh, BERT's code) | gelu (erf, HF's "gelu").
  c.model.hidden_dropout_prob = -1.0  # dropout on embeddings and sub-layer outputs.
  c.model.attention_probs_dropout_prob = -1.0  # dropout on attention probabilities.
  c.model.global_rope_theta = -1.0  # ModernBERT: RoPE θ of global layers (160k).
  c.model.local_rope_theta = -1.0  # ModernBERT: RoPE θ of local layers (10k).
  c.model.local_attention = -1  # ModernBERT: sliding window of local layers (128: 64 each side).
  c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32).
  c.model.scan_layers = False  # unrolled (faster steps, less memory) vs lax.scan (one layer body).
  c.model.remat_policy = "none"  # none | full | save_dots: recompute activations in backward.
  c.model.attention_impl = "auto"  # auto | xla | cudnn | splash | manual (models/attention.py).

  c.data = ml_collections.ConfigDict()
  c.data.source = "tfds"  # tfds (a dataset made by bert_jax.prepare) | synthetic (benchmarks).
  c.data.data_dir = ""  # TFDS data dir written by `python -m bert_jax.prepare` (may be gs://).
  c.data.dataset = ""  # TFDS name, e.g. bert_pretraining/<config>; "" = the only one there.
  c.data.objective = ""  # "" = the dataset's (nsp | sop | none); else must equal it.
  c.data.seq_len = 128  # sequence length; must equal the dataset's max_seq_length.
  c.data.max_predictions_per_seq = 20  # masked positions per sequence (76 at 512).
  c.data.masked_lm_prob = 0.15  # fraction of tokens masked by dynamic masking (0.3: ModernBERT).
  c.data.masking_strategy = ""  # "" = the dataset's | token | whole_word | span | ngram.
  c.data.mask_token_prob = 0.8  # of the masked tokens, the share set to [MASK] (BERT: 0.8).
  c.data.random_token_prob = 0.1  # ... set to a random token; the rest is kept (BERT: 0.1).
  c.data.shuffle_buffer = 10_000  # examples in the tf.data shuffle buffer (per process).
  c.data.seed = 0  # data order and masking seed.
  c.data.pack = False  # pack several short sequences per row (block-diagonal attention).
  c.data.max_sequences_per_row = 4  # with pack: at most this many sequences in one row.
  c.data.pack_group = 256  # with pack: examples packed together (first-fit decreasing).
  c.data.synthetic_vocab_size = 30522  # vocab size when source == synthetic.

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256  # GLOBAL batch size (sequences per optimizer step, all hosts).
  c.train.num_steps = 1_000_000  # optimizer steps in total (the schedule decays to here).
  c.train.grad_accum_steps = 1  # micro-batches per step (batch_size must divide by it).
  # Batch-size warmup (ModernBERT): start at this many sequences (0: off) and grow in steps of
  # it to batch_size over the first batch_size_warmup_tokens tokens (rows x seq_len).
  c.train.batch_size_warmup_min = 0
  c.train.batch_size_warmup_tokens = 0
  c.train.seed = 0  # parameter init and dropout seed.
  c.train.log_every_steps = 100  # train metrics to the log / TensorBoard every N steps.
  c.train.on_nonfinite = "stop"  # stop | skip: what a non-finite loss or gradient does.
  c.train.max_skipped_steps = 100  # in skip mode, stop once this many steps were skipped.
  c.train.peak_tflops_per_device = 0.0  # MFU denominator; 0 = known chip table / CPU measured.
  c.train.profile_start_step = -1  # first step of a jax.profiler trace (-1: no trace).
  c.train.profile_num_steps = 5  # steps in the trace (written to WORKDIR/profile).
  # Stop at a target (MLPerf style; 0 = off, else in (0, 1], needs eval.every_steps > 0): the
  # first eval whose mlm_accuracy (at the run's masking) reaches it ends the run with a
  # checkpoint there; metrics.jsonl ("target" record) and WORKDIR/target.json get target_step
  # and time_to_target_s: seconds from the process start (imports, data, compile included) to
  # that eval. Not reached by num_steps: reached=false with the best eval. A run resumed at its
  # target step trains no further.
  c.train.target_mlm_accuracy = 0.0

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "bert_adam"  # bert_adam (original) | adamw (optax) | lamb | stable_adamw.
  c.optimizer.learning_rate = 1e-4  # peak learning rate.
  c.optimizer.warmup_steps = 10_000  # linear warmup from 0 to the peak.
  c.optimizer.decay = "linear"  # linear | polynomial | cosine | constant | wsd, after warmup.
  c.optimizer.power = 1.0  # polynomial decay power (1.0 = linear).
  c.optimizer.end_learning_rate = 0.0  # learning rate reached at train.num_steps.
  c.optimizer.decay_steps = -1  # wsd: decay over the last N steps (-1: the last 10%; 0: no decay).
  c.optimizer.wsd_decay_shape = "linear"  # wsd: linear | 1-sqrt (ModernBERT's decay phase).
  c.optimizer.b1 = 0.9  # first-moment decay.
  c.optimizer.b2 = 0.999  # second-moment decay.
  c.optimizer.eps = 1e-6  # epsilon (BERT: 1e-6; optax.adamw default would be 1e-8).
  c.optimizer.weight_decay = 0.01  # decoupled weight decay (not on LayerNorm or biases).
  c.optimizer.decouple_lr = False  # stable_adamw: decay by weight_decay * lr / peak, not * lr.
  c.optimizer.clip_grad_norm = 1.0  # global-norm gradient clipping (0 = off).

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # data-parallel size (-1 = all devices left over).
  c.mesh.fsdp = 1  # FSDP / ZeRO-3 size: params and optimizer state sharded over it.
  c.mesh.tensor = 1  # tensor-parallel size over heads / mlp / vocab.
  c.mesh.dcn_data = 1  # multi-slice TPU: slices along data (the DCN part of the data axis).

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 10_000  # save every N steps (and at the end, and on SIGTERM).
  c.checkpoint.max_to_keep = 3  # keep the newest N checkpoints.
  c.checkpoint.async_save = True  # write in the background while training continues.
  c.checkpoint.on_save_error = "stop"  # stop | continue: a failed save (e.g. disk full).

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 10_000  # evaluate every N steps (0 = only at the end).
  c.eval.batch_size = 256  # global eval batch size.
  c.eval.num_batches = -1  # batches per eval (-1 = the whole validation split).

  c.init_from = ""  # warm start params from any load_pretrained directory (fresh optimizer).
  return c
