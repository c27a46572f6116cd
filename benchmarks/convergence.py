r"""Do we train like HF PyTorch BERT? Same initial weights, same data, same optimizer.

  python benchmarks/convergence.py [--steps=400] [--corpus=FILE]
  python benchmarks/convergence.py --objective=none --masked_lm_prob=0.3 --hf_collator
  python benchmarks/convergence.py --objective=none --masking_strategy=whole_word --hf_collator
  (--json: also the whole result as one JSON line last, as
  tests/training/test_convergence_hf.py reads it)

1. Builds a WordPiece vocab and a `bert_pretraining` dataset (--objective nsp: sentence pairs;
   none: `[CLS] full sentences [SEP]` rows) from --corpus (default: the bundled sample,
   `bert_jax.data.SAMPLE_CORPUS`; cached in --work_dir per corpus and settings), and draws
   --steps batches from our input pipeline (dynamic masking at --masked_lm_prob with
   --masking_strategy).
2. Initialises BERT-tiny once (ours), exports it with save_pretrained(format="hf") and loads that
   into transformers.BertForPreTraining (nsp) or BertForMaskedLM (none): identical weights.
3. Trains both with AdamW (bias-corrected, eps 1e-6, weight decay 0.01 on all but
   biases/LayerNorm), global-norm clipping 1.0, linear warmup then linear decay. Ours is the
   exact jitted step bert_jax.train runs; theirs is HF's loss with torch.optim.AdamW + LambdaLR.
   Dropout is off in both (--dropout to turn it on).
   - Default: HF trains on OUR masked batches (labels -100 off our masked positions): the two
     runs are the same computation up to float rounding.
   - --hf_collator (objective none): the two sides mask INDEPENDENTLY. HF gets the same rows in
     the same order unmasked (our masks undone with masked_positions / masked_ids) and masks them
     with its own collator: `DataCollatorForLanguageModeling(mlm_probability=p)` (token; each
     token a Bernoulli(p) draw, 80/10/10) or, for whole_word,
     `DataCollatorForLanguageModeling(whole_word_mask=True)`: transformers 5 (what the `hf` extra
     installs) removed `DataCollatorForWholeWordMask` for it. Each word is a Bernoulli(p) draw
     and all its pieces become `[MASK]` (no 10% random / 10% kept), so our side then masks with
     --mask_token_prob=1.0 unless told otherwise. The collator gets `special_tokens_mask`
     ([CLS], [SEP], [PAD]: what our pipeline never masks) and, for whole words,
     `offset_mapping` built from the vocabulary's `##` pieces, so a word is the same unit on
     both sides (BERT's: a word and its `##` continuations; from a real tokenization's offsets HF
     would take "os.path." or "world." as one word: it splits at whitespace only).
     --hf_masked_lm_prob / --hf_masking_strategy give HF's collator another rate or unit, to see
     what the check detects.
4. Prints the MLM (and NSP) loss, mean over windows of --window steps, side by side and the
   relative difference of the final window; the check passes when each is within --tolerance
   (2%). With --hf_collator it also prints, per side, the masked share of the non-special
   tokens, the [MASK] / kept / random shares of the masked ones and the share in words of two or
   more pieces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

import repo_configs  # benchmarks/repo_configs.py


def parser() -> argparse.ArgumentParser:
  from bert_jax.data import SAMPLE_CORPUS
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--corpus", default=str(SAMPLE_CORPUS),
                 help="text file, one sentence per line (default: the bundled sample)")
  p.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "bert_jax_conv"))
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--warmup", type=int, default=40)
  p.add_argument("--vocab_size", type=int, default=8000)
  p.add_argument("--vocab", default=None,
                 help="an existing WordPiece vocab.txt instead of one trained on --corpus "
                      "(training is not bit-reproducible: HF's trainer breaks ties by hash order)")
  p.add_argument("--dropout", action="store_true", help="dropout 0.1 in both (stochastic)")
  p.add_argument("--window", type=int, default=50)
  p.add_argument("--objective", choices=("nsp", "none"), default="nsp",
                 help="nsp: MLM + NSP (BertForPreTraining); none: MLM alone (BertForMaskedLM)")
  p.add_argument("--masked_lm_prob", type=float, default=0.15)
  p.add_argument("--masking_strategy", choices=("token", "whole_word"), default="token")
  p.add_argument("--max_predictions_per_seq", type=int, default=None,
                 help="default: 20, or round(masked_lm_prob * seq_len) + 2 when that is more")
  p.add_argument("--mask_token_prob", type=float, default=None,
                 help="our [MASK] share (default 0.8; 1.0 when HF's collator masks whole "
                      "words: it only writes [MASK])")
  p.add_argument("--random_token_prob", type=float, default=None,
                 help="our random share (default 0.1; 0.0 when --mask_token_prob is 1.0)")
  p.add_argument("--hf_collator", action="store_true",
                 help="HF masks the same rows itself with its collator (objective none)")
  p.add_argument("--hf_masked_lm_prob", type=float, default=None,
                 help="HF collator's rate (default: --masked_lm_prob; another value shows what "
                      "the check detects)")
  p.add_argument("--hf_masking_strategy", choices=("token", "whole_word"), default=None,
                 help="HF collator's unit (default: --masking_strategy)")
  p.add_argument("--seed", type=int, default=0, help="our input pipeline's and HF's mask seed")
  p.add_argument("--tolerance", type=float, default=0.02)
  p.add_argument("--torch_threads", type=int, default=0,
                 help="torch.set_num_threads for HF's side (0: torch's default)")
  p.add_argument("--json", action="store_true",
                 help="also print the result as one JSON line last: the settings, per-step "
                 "losses, windows, final windows, differences, masking statistics")
  return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
  """Fills in the defaults that depend on other flags; checks the combination."""
  if args.hf_collator and args.objective != "none":
    raise SystemExit("error: --hf_collator compares MLM alone: use it with --objective=none")
  if args.max_predictions_per_seq is None:
    count = round(args.masked_lm_prob * args.seq_len)
    args.max_predictions_per_seq = 20 if count <= 20 else count + 2
  if args.hf_masked_lm_prob is None:
    args.hf_masked_lm_prob = args.masked_lm_prob
  if args.hf_masking_strategy is None:
    args.hf_masking_strategy = args.masking_strategy
  if args.mask_token_prob is None:
    args.mask_token_prob = 1.0 if (args.hf_collator
                                   and args.hf_masking_strategy == "whole_word") else 0.8
  if args.random_token_prob is None:
    args.random_token_prob = 0.0 if args.mask_token_prob == 1.0 else 0.1
  return args


def prepare_batches(args):
  """(vocab_size, vocab path, dataset info, batches): --steps batches from our input pipeline."""
  from bert_jax.data import input_pipeline
  from bert_jax.data.prepare import prepare
  from bert_jax.text.vocab import train_vocab
  # One cache per corpus and vocabulary (vocab) and per dataset settings (data): a different
  # --corpus, --vocab or --objective must not reuse another's.
  if args.vocab:
    with open(args.vocab, "rb") as f:
      key = hashlib.sha1(f.read()).hexdigest()
    vocab_path = args.vocab
  else:
    key = str(args.vocab_size)
  tag = hashlib.sha1(f"{os.path.abspath(args.corpus)}:{key}".encode()).hexdigest()[:12]
  if not args.vocab:
    vocab_path = os.path.join(args.work_dir, tag, "vocab", "vocab.txt")
    if not os.path.exists(vocab_path):
      train_vocab(args.corpus, os.path.dirname(vocab_path), vocab_size=args.vocab_size,
                  kind="wordpiece", lower_case=True)
  data_tag = f"data_{args.objective}_{args.seq_len}_{args.max_predictions_per_seq}"
  if (args.objective, args.seq_len, args.max_predictions_per_seq) == ("nsp", 128, 20):
    data_tag = "data"  # the cache of the original benchmark
  data_dir = os.path.join(args.work_dir, tag, data_tag)
  if not os.path.exists(data_dir):
    # Dynamic masking: the prepared rate and strategy are only the defaults the pipeline
    # overrides below (prepare checks that the rate's count fits max_predictions_per_seq).
    prepare(input=args.corpus, vocab=vocab_path, data_dir=data_dir,
            max_seq_length=args.seq_len, max_predictions_per_seq=args.max_predictions_per_seq,
            masked_lm_prob=args.masked_lm_prob, objective=args.objective)
  info = input_pipeline.dataset_info(data_dir)
  it = input_pipeline.train_iterator(
      data_dir, batch_size=args.batch_size, seq_len=args.seq_len,
      max_predictions_per_seq=args.max_predictions_per_seq, seed=args.seed,
      masked_lm_prob=args.masked_lm_prob, masking_strategy=args.masking_strategy,
      mask_token_prob=args.mask_token_prob, random_token_prob=args.random_token_prob)
  batches = [next(it) for _ in range(args.steps)]
  del it  # (its prefetching threads stop with it)
  return info["vocab_size"], vocab_path, info, batches


def run_ours(args, vocab_size, batches, hf_dir):
  """(mlm losses, nsp losses or None, seconds): our jitted train step on our batches."""
  import jax
  from bert_jax import save_pretrained
  from bert_jax.parallel import sharding
  from bert_jax.training import pretraining
  from bert_jax.training import train_state
  from flax import nnx
  c = repo_configs.load("default")
  c.model.preset = "tiny"
  if not args.dropout:
    c.model.hidden_dropout_prob = c.model.attention_probs_dropout_prob = 0.0
  c.train.batch_size, c.train.num_steps = args.batch_size, args.steps
  c.data.seq_len, c.data.max_predictions_per_seq = args.seq_len, args.max_predictions_per_seq
  c.optimizer.name, c.optimizer.learning_rate = "adamw", args.lr
  c.optimizer.warmup_steps, c.optimizer.eps, c.optimizer.clip_grad_norm = args.warmup, 1e-6, 1.0
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  setup = pretraining.build(c, mesh, vocab_size, args.objective)
  state = setup.init_state(jax.random.key(0))
  model = nnx.merge(setup.graphdef, jax.device_get(state.params))
  save_pretrained(model, hf_dir, format="hf")  # the starting point both sides use
  losses = []
  t = time.perf_counter()
  for b in batches:
    if args.objective == "none":
      b = {k: v for k, v in b.items() if k != "next_sentence_label"}
    state, m = setup.train_step(state, train_state.global_batch(b, setup.batch_sharding))
    losses.append(m)
  losses = jax.device_get(losses)
  nsp = [float(m["nsp_loss"]) for m in losses] if args.objective != "none" else None
  return [float(m["mlm_loss"]) for m in losses], nsp, time.perf_counter() - t


def _torch_model_and_optimizer(args, hf_dir):
  import torch
  import transformers
  torch.manual_seed(0)
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  cls = transformers.BertForMaskedLM if args.objective == "none" else (
      transformers.BertForPreTraining)
  model = cls.from_pretrained(hf_dir)
  if not args.dropout:
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    for m in model.modules():
      if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
    for layer in model.bert.encoder.layer:
      layer.attention.self.dropout.p = 0.0
  model.train()
  decay = [p for n, p in model.named_parameters() if not (n.endswith("bias")
                                                             or "LayerNorm" in n)]
  no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                           {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, eps=1e-6)

  def lr_lambda(step):  # our schedule: linear warmup, then linear decay from step 0 to the end
    if step < args.warmup:
      return step / args.warmup
    return max(0.0, 1.0 - step / args.steps)

  return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def run_torch(args, batches, hf_dir):
  """(mlm losses, nsp losses or None, seconds): HF on OUR masked batches."""
  import numpy as np
  import torch
  model, opt, sched = _torch_model_and_optimizer(args, hf_dir)
  ce = torch.nn.functional.cross_entropy
  mlm, nsp = [], []
  t = time.perf_counter()
  for b in batches:
    labels = np.full(b["input_ids"].shape, -100, np.int64)
    rows, cols = np.nonzero(b["masked_weights"])
    labels[rows, b["masked_positions"][rows, cols]] = b["masked_ids"][rows, cols]
    out = model(input_ids=torch.tensor(b["input_ids"], dtype=torch.long),
                token_type_ids=torch.tensor(b["token_type_ids"], dtype=torch.long),
                attention_mask=torch.tensor(b["attention_mask"], dtype=torch.long))
    logits = out.logits if args.objective == "none" else out.prediction_logits
    mlm_loss = ce(logits.view(-1, logits.shape[-1]), torch.tensor(labels).view(-1),
                  ignore_index=-100)
    loss = mlm_loss
    if args.objective != "none":
      nsp_loss = ce(out.seq_relationship_logits,
                    torch.tensor(b["next_sentence_label"], dtype=torch.long))
      loss = loss + nsp_loss
      nsp.append(nsp_loss.item())
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    mlm.append(mlm_loss.item())
  return mlm, (nsp if args.objective != "none" else None), time.perf_counter() - t


def unmask(batch: dict):
  """The rows before our masking: input_ids with the masked positions' original ids back."""
  import numpy as np
  ids = batch["input_ids"].copy()
  rows, cols = np.nonzero(batch["masked_weights"])
  ids[rows, batch["masked_positions"][rows, cols]] = batch["masked_ids"][rows, cols]
  return ids


def hf_tokenizer(vocab_path: str, vocab_size: int):
  """BertTokenizerFast from our vocab.txt, offline: transformers 5's `vocab=` (a path or a dict).
  Not `BertTokenizerFast(vocab_file=...)`, transformers 4's keyword: 5 ignores it and builds a
  tokenizer of the 5 special tokens only (the collator would then draw its random replacements
  among ids 0-4)."""
  import transformers
  tok = transformers.BertTokenizerFast(vocab=vocab_path, do_lower_case=True)
  if len(tok) != vocab_size:
    raise RuntimeError(f"HF tokenizer from {vocab_path} has {len(tok)} tokens, expected "
                       f"{vocab_size}")
  return tok


def hf_collator(args, tokenizer):
  """(collator, kind): HF's MLM collator for --hf_masking_strategy at --hf_masked_lm_prob."""
  import transformers
  if args.hf_masking_strategy == "token":
    return (transformers.DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=args.hf_masked_lm_prob, seed=args.seed),
        "DataCollatorForLanguageModeling")
  # [MASK] only: with whole_word_mask=True it warns and sets these itself.
  return (transformers.DataCollatorForLanguageModeling(
      tokenizer, mlm_probability=args.hf_masked_lm_prob, whole_word_mask=True,
      mask_replace_prob=1.0,
      random_replace_prob=0.0, seed=args.seed),
      "DataCollatorForLanguageModeling(whole_word_mask=True)")


def hf_features(ids, batch, special_ids, is_word_start, whole_words: bool):
  """The collator's input for our unmasked rows: one dict per row.

  special_tokens_mask marks [CLS], [SEP] and [PAD] (what our pipeline never masks); without it
  the collator calls get_special_tokens_mask, which in transformers 5 also protects [UNK] and
  [MASK]. For whole words, offset_mapping gives the pieces of a word (a token and its `##`
  continuations) touching character spans and a gap before each word, so the collator's words
  (a new word where a token does not start where the previous one ended) are BERT's words.
  """
  import numpy as np
  special = np.isin(ids, [special_ids["[CLS]"], special_ids["[SEP]"], special_ids["[PAD]"]])
  feats = {"input_ids": ids, "token_type_ids": batch["token_type_ids"],
           "attention_mask": batch["attention_mask"], "special_tokens_mask": special.astype(int)}
  if whole_words:
    gap = np.where(is_word_start[ids] | special, 1, 0)  # one character of space before a word
    start = np.cumsum(gap + 1, axis=1) - 1
    feats["offset_mapping"] = np.stack([start, start + 1], -1) * ~special[..., None]
  return [{k: v[i].tolist() for k, v in feats.items()} for i in range(len(ids))]


class MaskStats:
  """Counts over a run's batches, one side: what share of the non-special tokens is masked,
  how the masked inputs read ([MASK] / the original kept / anything else: random), and how many
  masked tokens sit in words of two or more pieces (whole-word masking's unit)."""

  def __init__(self, special_ids: dict, is_word_start):
    import numpy as np
    self._special = np.array([special_ids["[CLS]"], special_ids["[SEP]"], special_ids["[PAD]"]])
    self._mask_id, self._is_word_start = special_ids["[MASK]"], is_word_start
    self.n = dict(candidates=0, masked=0, masked_special=0, mask=0, kept=0, multi_piece=0)

  def add(self, original, inputs, masked):
    """original, inputs: int [B, L] (the row, the model's input); masked: bool [B, L]."""
    import numpy as np
    special = np.isin(original, self._special)
    continues = ~self._is_word_start[original] & ~special
    multi = continues | np.pad(continues[:, 1:], ((0, 0), (0, 1)))  # a piece of a longer word
    n = self.n
    n["candidates"] += int((~special).sum())
    n["masked"] += int(masked.sum())
    n["masked_special"] += int((masked & special).sum())
    n["mask"] += int((masked & (inputs == self._mask_id)).sum())
    n["kept"] += int((masked & (inputs == original)).sum())
    n["multi_piece"] += int((masked & multi).sum())

  def summary(self) -> dict:
    n, m = self.n, max(self.n["masked"], 1)
    return {"masked_fraction": n["masked"] / n["candidates"], "masked_special": n["masked_special"],
            "mask_share": n["mask"] / m, "kept_share": n["kept"] / m,
            "random_share": 1 - (n["mask"] + n["kept"]) / m,
            "multi_piece_share": n["multi_piece"] / m}


def _is_word_start(vocab_path: str):
  from bert_jax.text.tokenization import Tokenizer
  return Tokenizer.from_file(vocab_path, lower_case=True).is_word_start


def ours_mask_stats(batches, special_ids: dict, is_word_start) -> dict:
  """MaskStats of our batches (the masked positions from masked_positions / masked_weights)."""
  import numpy as np
  st = MaskStats(special_ids, is_word_start)
  for b in batches:
    masked = np.zeros(b["input_ids"].shape, bool)
    rows, cols = np.nonzero(b["masked_weights"])
    masked[rows, b["masked_positions"][rows, cols]] = True
    st.add(unmask(b), b["input_ids"], masked)
  return st.summary()


def run_torch_collator(args, batches, hf_dir, vocab_path, vocab_size, info):
  """(mlm losses, None, seconds, stats): HF masks our unmasked rows with its own collator."""
  import torch
  model, opt, sched = _torch_model_and_optimizer(args, hf_dir)
  tokenizer = hf_tokenizer(vocab_path, vocab_size)
  collator, kind = hf_collator(args, tokenizer)
  special_ids = info["special_ids"]
  is_word_start = _is_word_start(vocab_path)
  mlm = []
  stats = MaskStats(special_ids, is_word_start)
  t = time.perf_counter()
  for b in batches:
    ids = unmask(b)
    hb = collator(hf_features(ids, b, special_ids, is_word_start,
                              args.hf_masking_strategy == "whole_word"))
    labels = hb["labels"]
    stats.add(ids, hb["input_ids"].numpy(), labels.numpy() != -100)
    out = model(input_ids=hb["input_ids"],
                token_type_ids=torch.tensor(b["token_type_ids"], dtype=torch.long),
                attention_mask=torch.tensor(b["attention_mask"], dtype=torch.long), labels=labels)
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    mlm.append(out.loss.item())
  return mlm, None, time.perf_counter() - t, {"collator": kind, "hf": stats.summary()}


def unigram_entropy(batches, special_ids: dict) -> float:
  """Entropy (nats) of the token frequencies of the rows' non-special tokens: about the MLM loss
  of a model that predicts the frequencies and ignores the context."""
  import numpy as np
  ids = np.concatenate([unmask(b).ravel() for b in batches])
  ids = ids[~np.isin(ids, [special_ids["[CLS]"], special_ids["[SEP]"], special_ids["[PAD]"]])]
  p = np.bincount(ids) / len(ids)
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def compare(args: argparse.Namespace) -> dict:
  """Runs both sides; returns the per-step losses, the windows, the final-window differences
  and whether they are within args.tolerance (the benchmark's whole computation)."""
  import numpy as np
  args = resolve(args)
  if not os.path.exists(args.corpus):
    raise SystemExit(f"error: --corpus={args.corpus}: no such file")
  vocab_size, vocab_path, info, batches = prepare_batches(args)
  hf_dir = os.path.join(args.work_dir, "init_hf")
  import shutil
  shutil.rmtree(hf_dir, ignore_errors=True)
  ours = run_ours(args, vocab_size, batches, hf_dir)
  stats = {}
  if args.hf_collator:
    *theirs, stats = run_torch_collator(args, batches, hf_dir, vocab_path, vocab_size, info)
    stats["ours"] = ours_mask_stats(batches, info["special_ids"], _is_word_start(vocab_path))
  else:
    theirs = run_torch(args, batches, hf_dir)
  w = args.window
  series = {"mlm": (ours[0], theirs[0])}
  if ours[1] is not None:
    series["nsp"] = (ours[1], theirs[1])
  windows = [(s + 1, min(s + w, args.steps),
              {k: (float(np.mean(a[s:s + w])), float(np.mean(b[s:s + w])))
               for k, (a, b) in series.items()})
             for s in range(0, args.steps, w)]
  final = {k: (float(np.mean(a[-w:])), float(np.mean(b[-w:]))) for k, (a, b) in series.items()}
  rel = {k: abs(a - b) / abs(b) for k, (a, b) in final.items()}
  return {"args": args, "vocab_size": vocab_size, "losses": series, "windows": windows,
          "final": final, "rel": rel, "ok": all(r <= args.tolerance for r in rel.values()),
          "seconds": (ours[2], theirs[2]), "stats": stats,
          "unigram_entropy": unigram_entropy(batches, info["special_ids"])}


def report(r: dict) -> None:
  a = r["args"]
  peer = "HF" if a.hf_collator else "torch"
  if a.hf_collator:
    same = (a.hf_masking_strategy, a.hf_masked_lm_prob) == (a.masking_strategy, a.masked_lm_prob)
    how = (f"MLM only; {a.masking_strategy} masking at {a.masked_lm_prob}"
           + ("" if same else f" (HF: {a.hf_masking_strategy} at {a.hf_masked_lm_prob})")
           + f", each side its own (ours: input pipeline, {a.mask_token_prob:g}/"
           f"{a.random_token_prob:g} [MASK]/random; HF: {r['stats']['collator']}); identical "
           "initial weights and rows")
  else:
    how = ((f"MLM only ({a.masking_strategy} {a.masked_lm_prob}); " if a.objective == "none"
            else "") + "identical initial weights and batches")
  print(f"BERT-tiny, vocab {r['vocab_size']}, batch {a.batch_size} x {a.seq_len}, {a.steps} steps, "
        f"AdamW lr {a.lr} warmup {a.warmup} linear decay, dropout "
        f"{'0.1' if a.dropout else 'off'}; {how}")
  keys = list(r["final"])
  head = f"{'steps':>11s}"
  for k in keys:
    head += f" {k.upper() + ' ours':>9s} {k.upper() + ' ' + peer:>9s}"
  print(head + f" {'diff':>7s}")  # of the MLM loss
  for s, e, v in r["windows"]:
    line = f"{s:5d}-{e:5d}"
    for k in keys:
      line += f" {v[k][0]:9.4f} {v[k][1]:9.4f}"
    ours, theirs = v["mlm"]
    print(line + f" {100 * (ours - theirs) / theirs:+6.2f}%")
  if a.hf_collator:
    o, h = r["stats"]["ours"], r["stats"]["hf"]
    print("masking (share of non-special tokens masked; of those: [MASK] / kept / random; in "
          "words of 2+ pieces):")
    for side, st in (("ours", o), ("HF", h)):
      print(f"  {side:4s} {100 * st['masked_fraction']:5.2f}%; {100 * st['mask_share']:.1f} / "
            f"{100 * st['kept_share']:.1f} / {100 * st['random_share']:.1f}%; "
            f"{100 * st['multi_piece_share']:.1f}%")
    print(f"  [CLS]/[SEP]/[PAD] masked: ours {o['masked_special']}, HF {h['masked_special']}")
  print(f"unigram entropy of the rows' non-special tokens: {r['unigram_entropy']:.4f} (a "
        "context-blind model's MLM loss)")
  parts = [f"{k.upper()} {o:.4f} vs {t:.4f} ({100 * r['rel'][k]:.2f}%)"
           for k, (o, t) in r["final"].items()]
  print(f"final window: {', '.join(parts)} -> {'PASS' if r['ok'] else 'FAIL'} "
        f"(within {100 * a.tolerance:g}%)")
  print(f"wall time: ours {r['seconds'][0]:.1f}s, {peer} {r['seconds'][1]:.1f}s")


def to_json(r: dict) -> str:
  """compare()'s result as one JSON line (arrays as lists, the settings as a dict)."""
  import numpy as np
  def plain(x):
    if isinstance(x, argparse.Namespace):
      return plain(vars(x))
    if isinstance(x, dict):
      return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
      return x.tolist()
    if isinstance(x, np.generic):
      return x.item()
    return x
  return json.dumps(plain(r))


def main():
  args = parser().parse_args()
  r = compare(args)
  report(r)
  if args.json:
    print(to_json(r))
  sys.exit(0 if r["ok"] else 1)


if __name__ == "__main__":
  main()
