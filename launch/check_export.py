"""Checks an HF export (e.g. launch/demo.sh's) the way a user would load it: transformers'
BertForPreTraining and bert_jax.load_pretrained give the same masked-LM and NSP logits.

  python launch/check_export.py EXPORT_DIR
"""

import sys

import numpy as np


def main(path: str) -> None:
  import torch
  import transformers

  import bert_jax
  hf = transformers.BertForPreTraining.from_pretrained(path).eval()
  ours = bert_jax.load_pretrained(path)
  vocab = hf.config.vocab_size
  ids = np.random.default_rng(0).integers(5, vocab, (2, 24)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP] in bert_jax's vocabularies
  with torch.no_grad():
    theirs = hf(input_ids=torch.from_numpy(ids).long())
  out = ours(ids, masked_positions=np.tile(np.arange(24, dtype=np.int32), (2, 1)))
  mlm = np.abs(np.asarray(out.mlm_logits) - theirs.prediction_logits.numpy()).max()
  nsp = np.abs(np.asarray(out.nsp_logits) - theirs.seq_relationship_logits.numpy()).max()
  print(f"{path}: transformers.BertForPreTraining loads it (vocab {vocab}); max |logit "
        f"difference| vs bert_jax: MLM {mlm:.2e}, NSP {nsp:.2e}")
  if not (mlm < 1e-4 and nsp < 1e-4):
    sys.exit("export check failed: transformers and bert_jax disagree on the export")


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python launch/check_export.py EXPORT_DIR")
  main(sys.argv[1])
