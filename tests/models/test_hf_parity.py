"""Numerical parity with HF transformers' PyTorch BERT on identical weights (fp32, CPU).

Both directions: our random weights exported to HF, and HF's random weights imported to ours.
Every head, both GELU variants, padding in the batch. Tolerance: 1e-5 absolute on logits.
"""

import numpy as np
import pytest

from bert_jax import load_pretrained, save_pretrained
from helpers import batch, random_model, small_config

torch = pytest.importorskip("torch", reason="parity tests need the `hf` extra (torch)")
transformers = pytest.importorskip("transformers", reason="parity tests need the `hf` extra")

ATOL = 1e-5
HEADS = {
    "pretraining": "BertForPreTraining",
    "masked_lm": "BertForMaskedLM",
    "classification": "BertForSequenceClassification",
    "token_classification": "BertForTokenClassification",
    "question_answering": "BertForQuestionAnswering",
}


def _hf_outputs(hf, ids, types, mask):
  hf.eval()
  with torch.no_grad():
    o = hf(input_ids=torch.tensor(ids, dtype=torch.long),
           token_type_ids=torch.tensor(types, dtype=torch.long),
           attention_mask=torch.tensor(mask, dtype=torch.long), output_hidden_states=True)
  return {k: v.numpy() for k, v in o.items() if hasattr(v, "numpy")} | {
      "sequence_output": o.hidden_states[-1].numpy()}


def _compare(task, ours, hf_out, ids, types, mask):
  if task == "pretraining":
    positions = np.array([[0, 3, 7, 15], [1, 2, 9, 0], [4, 4, 1, 2]], np.int32)
    out = ours(ids, types, mask)
    gathered = ours(ids, types, mask, positions)
    pairs = [(out.mlm_logits, hf_out["prediction_logits"]),
             (gathered.mlm_logits,
              np.take_along_axis(hf_out["prediction_logits"], positions[..., None], axis=1)),
             (out.nsp_logits, hf_out["seq_relationship_logits"]),
             (out.sequence_output, hf_out["sequence_output"])]
  elif task == "masked_lm":
    positions = np.array([[0, 3, 7, 15], [1, 2, 9, 0], [4, 4, 1, 2]], np.int32)
    out = ours(ids, types, mask)
    pairs = [(out.mlm_logits, hf_out["logits"]),
             (ours(ids, types, mask, positions).mlm_logits,
              np.take_along_axis(hf_out["logits"], positions[..., None], axis=1)),
             (out.sequence_output, hf_out["sequence_output"])]
  elif task == "question_answering":
    out = ours(ids, types, mask)
    pairs = [(out.start_logits, hf_out["start_logits"]), (out.end_logits, hf_out["end_logits"]),
             (out.sequence_output, hf_out["sequence_output"])]
  else:
    out = ours(ids, types, mask)
    pairs = [(out.logits, hf_out["logits"])]
  for a, b in pairs:
    a = np.asarray(a)
    assert a.shape == b.shape
    # Padded positions of the sequence output are not meaningful (compare real tokens only).
    if a.ndim == 3 and a.shape[:2] == mask.shape:
      a, b = a[mask == 1], b[mask == 1]
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
@pytest.mark.parametrize("task", list(HEADS))
def test_ours_exported_to_hf_gives_the_same_outputs(task, act, tmp_path):
  cfg = small_config(hidden_act=act)
  kwargs = {"num_labels": 3} if "classification" in task else {}
  ours = random_model(cfg, task, **kwargs)
  save_pretrained(ours, tmp_path / "hf", format="hf")
  hf = getattr(transformers, HEADS[task]).from_pretrained(tmp_path / "hf",
                                                           attn_implementation="eager")
  ids, types, mask = batch(cfg)
  _compare(task, ours, _hf_outputs(hf, ids, types, mask), ids, types, mask)


@pytest.mark.parametrize("task", list(HEADS))
def test_hf_weights_imported_give_the_same_outputs(task, tmp_path):
  cfg = small_config(hidden_act="gelu")
  # HF sizes qa_outputs by num_labels, which must stay 2 for span QA.
  num_labels = 2 if task == "question_answering" else 4
  hf_cfg = transformers.BertConfig(**cfg.to_hf_dict(), num_labels=num_labels)
  torch.manual_seed(0)
  hf = getattr(transformers, HEADS[task])(hf_cfg)
  with torch.no_grad():  # make biases and LayerNorms non-trivial too
    for p in hf.parameters():
      p.add_(0.05 * torch.randn_like(p))
  hf.save_pretrained(tmp_path / "hf")
  ours = load_pretrained(tmp_path / "hf", task)
  ids, types, mask = batch(cfg)
  _compare(task, ours, _hf_outputs(hf, ids, types, mask), ids, types, mask)


def test_sdpa_attention_in_hf_agrees_too(tmp_path):
  cfg = small_config()
  ours = random_model(cfg)
  save_pretrained(ours, tmp_path / "hf", format="hf")
  hf = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf", attn_implementation="sdpa")
  ids, types, mask = batch(cfg)
  _compare("pretraining", ours, _hf_outputs(hf, ids, types, mask), ids, types, mask)
