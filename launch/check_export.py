"""Checks an HF export (e.g. launch/demo.sh's) the way a user would load it: transformers' class
for it (BertForPreTraining, or BertForMaskedLM for a run without a sentence task) and
bert_jax.load_pretrained give the same masked-LM (and NSP) logits.

  python launch/check_export.py EXPORT_DIR
"""

import sys

import numpy as np


def main(path: str) -> None:
  import json
  import os

  import torch
  import transformers

  import bert_jax
  with open(os.path.join(path, "config.json")) as f:
    arch = json.load(f)["architectures"][0]
  pretraining = arch == "BertForPreTraining"
  hf = getattr(transformers, arch).from_pretrained(path).eval()
  ours = bert_jax.load_pretrained(path, task=None)  # the export's own task
  vocab = hf.config.vocab_size
  ids = np.random.default_rng(0).integers(5, vocab, (2, 24)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP] in bert_jax's vocabularies
  with torch.no_grad():
    theirs = hf(input_ids=torch.from_numpy(ids).long())
  out = ours(ids, masked_positions=np.tile(np.arange(24, dtype=np.int32), (2, 1)))
  want = theirs.prediction_logits if pretraining else theirs.logits
  mlm = np.abs(np.asarray(out.mlm_logits) - want.numpy()).max()
  nsp = (np.abs(np.asarray(out.nsp_logits) - theirs.seq_relationship_logits.numpy()).max()
         if pretraining else 0.0)
  print(f"{path}: transformers.{arch} loads it (vocab {vocab}); max |logit difference| vs "
        f"bert_jax: MLM {mlm:.2e}" + (f", NSP {nsp:.2e}" if pretraining else ""))
  if not (mlm < 1e-4 and nsp < 1e-4):
    sys.exit("export check failed: transformers and bert_jax disagree on the export")


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python launch/check_export.py EXPORT_DIR")
  main(sys.argv[1])
