r"""Do we train like HF PyTorch BERT? Same initial weights, same batches, same optimizer.

  python benchmarks/convergence.py [--steps=400] [--corpus=FILE]

1. Builds a WordPiece vocab and a seq-128 `bert_pretraining` dataset from --corpus (default: the
   bundled sample, `bert_jax.data.SAMPLE_CORPUS`; cached in --work_dir per corpus), and draws
   --steps batches from our input pipeline (dynamic masking).
2. Initialises BERT-tiny once (ours), exports it with save_pretrained(format="hf") and loads that
   into transformers.BertForPreTraining: identical starting weights.
3. Trains both on the identical batches with AdamW (bias-corrected, eps 1e-6, weight decay 0.01
   on all but biases/LayerNorm), global-norm clipping 1.0, linear warmup then linear decay.
   Ours is the exact jitted step bert_jax.train runs; theirs is HF's loss (labels -100 off the
   masked positions) with torch.optim.AdamW + LambdaLR. Dropout is off in both (--dropout to
   turn it on), so the two runs are the same computation up to float rounding.
4. Prints MLM and NSP loss (mean over windows of 50 steps) side by side and the relative
   difference of the final window; the check passes when both are within 2%.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

import repo_configs  # benchmarks/repo_configs.py


def prepare_batches(args):
  from bert_jax.data import input_pipeline
  from bert_jax.data.prepare import prepare
  from bert_jax.text.vocab import train_vocab
  # One cache per corpus and vocab size: a different --corpus must not reuse another's data.
  tag = hashlib.sha1(f"{os.path.abspath(args.corpus)}:{args.vocab_size}".encode()).hexdigest()[:12]
  vocab_dir = os.path.join(args.work_dir, tag, "vocab")
  data_dir = os.path.join(args.work_dir, tag, "data")
  if not os.path.exists(os.path.join(vocab_dir, "vocab.txt")):
    train_vocab(args.corpus, vocab_dir, vocab_size=args.vocab_size, kind="wordpiece",
                lower_case=True)
  if not os.path.exists(data_dir):
    prepare(input=args.corpus, vocab=os.path.join(vocab_dir, "vocab.txt"), data_dir=data_dir,
            max_seq_length=128, max_predictions_per_seq=20)
  info = input_pipeline.dataset_info(data_dir)
  it = input_pipeline.train_iterator(data_dir, batch_size=args.batch_size, seq_len=128,
                                     max_predictions_per_seq=20, seed=0)
  return info["vocab_size"], [next(it) for _ in range(args.steps)]


def run_ours(args, vocab_size, batches, hf_dir):
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
  c.optimizer.name, c.optimizer.learning_rate = "adamw", args.lr
  c.optimizer.warmup_steps, c.optimizer.eps, c.optimizer.clip_grad_norm = args.warmup, 1e-6, 1.0
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  setup = pretraining.build(c, mesh, vocab_size)
  state = setup.init_state(jax.random.key(0))
  model = nnx.merge(setup.graphdef, jax.device_get(state.params))
  save_pretrained(model, hf_dir, format="hf")  # the starting point both sides use
  losses = []
  t = time.perf_counter()
  for b in batches:
    state, m = setup.train_step(state, train_state.global_batch(b, setup.batch_sharding))
    losses.append(m)
  losses = jax.device_get(losses)
  return ([float(m["mlm_loss"]) for m in losses], [float(m["nsp_loss"]) for m in losses],
          time.perf_counter() - t)


def run_torch(args, batches, hf_dir):
  import numpy as np
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.BertForPreTraining.from_pretrained(hf_dir)
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

  sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
  mlm, nsp = [], []
  t = time.perf_counter()
  for b in batches:
    labels = np.full(b["input_ids"].shape, -100, np.int64)
    rows, cols = np.nonzero(b["masked_weights"])
    labels[rows, b["masked_positions"][rows, cols]] = b["masked_ids"][rows, cols]
    out = model(input_ids=torch.tensor(b["input_ids"], dtype=torch.long),
                token_type_ids=torch.tensor(b["token_type_ids"], dtype=torch.long),
                attention_mask=torch.tensor(b["attention_mask"], dtype=torch.long))
    ce = torch.nn.functional.cross_entropy
    mlm_loss = ce(out.prediction_logits.view(-1, out.prediction_logits.shape[-1]),
                  torch.tensor(labels).view(-1), ignore_index=-100)
    nsp_loss = ce(out.seq_relationship_logits,
                  torch.tensor(b["next_sentence_label"], dtype=torch.long))
    opt.zero_grad()
    (mlm_loss + nsp_loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    mlm.append(mlm_loss.item())
    nsp.append(nsp_loss.item())
  return mlm, nsp, time.perf_counter() - t


def main():
  from bert_jax.data import SAMPLE_CORPUS
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--corpus", default=SAMPLE_CORPUS,
                 help="text file, one sentence per line (default: the bundled sample)")
  p.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "bert_jax_conv"))
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--warmup", type=int, default=40)
  p.add_argument("--vocab_size", type=int, default=8000)
  p.add_argument("--dropout", action="store_true", help="dropout 0.1 in both (stochastic)")
  p.add_argument("--window", type=int, default=50)
  args = p.parse_args()
  if not os.path.exists(args.corpus):
    sys.exit(f"error: --corpus={args.corpus}: no such file")
  vocab_size, batches = prepare_batches(args)
  hf_dir = os.path.join(args.work_dir, "init_hf")
  import shutil
  shutil.rmtree(hf_dir, ignore_errors=True)
  ours = run_ours(args, vocab_size, batches, hf_dir)
  theirs = run_torch(args, batches, hf_dir)
  import numpy as np
  w = args.window
  print(f"BERT-tiny, vocab {vocab_size}, batch {args.batch_size} x 128, {args.steps} steps, "
        f"AdamW lr {args.lr} warmup {args.warmup} linear decay, dropout "
        f"{'0.1' if args.dropout else 'off'}; identical initial weights and batches")
  print(f"{'steps':>11s} {'MLM ours':>9s} {'MLM torch':>9s} {'NSP ours':>9s} {'NSP torch':>9s}")
  for s in range(0, args.steps, w):
    print(f"{s + 1:5d}-{min(s + w, args.steps):5d} {np.mean(ours[0][s:s + w]):9.4f} "
          f"{np.mean(theirs[0][s:s + w]):9.4f} {np.mean(ours[1][s:s + w]):9.4f} "
          f"{np.mean(theirs[1][s:s + w]):9.4f}")
  final = {k: (np.mean(a[-w:]), np.mean(b[-w:])) for k, a, b in
           (("mlm", ours[0], theirs[0]), ("nsp", ours[1], theirs[1]))}
  rel = {k: abs(a - b) / abs(b) for k, (a, b) in final.items()}
  ok = all(r <= 0.02 for r in rel.values())
  print(f"final window: MLM {final['mlm'][0]:.4f} vs {final['mlm'][1]:.4f} "
        f"({100 * rel['mlm']:.2f}%), NSP {final['nsp'][0]:.4f} vs {final['nsp'][1]:.4f} "
        f"({100 * rel['nsp']:.2f}%) -> {'PASS' if ok else 'FAIL'} (within 2%)")
  print(f"wall time: ours {ours[2]:.1f}s, torch {theirs[2]:.1f}s")
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
