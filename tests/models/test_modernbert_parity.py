"""Numerical parity with HF transformers' PyTorch ModernBERT on identical weights (fp32, CPU).

Both directions: HF's weights imported to ours, ours exported to HF (`save_pretrained(...,
format="hf")` loaded by transformers' Auto classes). Sequences longer than the local window,
padding in the batch, global and local layers, every head. Tolerance 1e-5 absolute on logits.
"""

import json

import numpy as np
import pytest

from bert_jax import load_pretrained, save_pretrained
from bert_jax.models.config import ModernBertConfig
from helpers import random_model

torch = pytest.importorskip("torch", reason="parity tests need the `hf` extra (torch)")
transformers = pytest.importorskip("transformers", reason="parity tests need the `hf` extra")

ATOL = 1e-5
LENGTH = 48  # > the window (16 = 8 each side) of the local layers
HF_CLASSES = {
    "masked_lm": "ModernBertForMaskedLM",
    "classification": "ModernBertForSequenceClassification",
    "token_classification": "ModernBertForTokenClassification",
    "question_answering": "ModernBertForQuestionAnswering",
}


def _hf_config(**kw):
  # 4 layers: 0 and 3 global, 1 and 2 local; norm and decoder biases as in the released models.
  base = dict(vocab_size=120, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
              num_attention_heads=4, local_attention=16, max_position_embeddings=128,
              pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
              global_rope_theta=160_000.0, local_rope_theta=10_000.0)
  base.update(kw)
  return transformers.ModernBertConfig(**base)


def _ours_config(**kw):
  base = dict(vocab_size=120, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
              num_attention_heads=4, local_attention=16, max_position_embeddings=128,
              pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
  base.update(kw)
  return ModernBertConfig(**base)


def _batch():
  rng = np.random.default_rng(3)
  ids = rng.integers(3, 120, (3, LENGTH)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 30:] = 0  # padding
  mask[2, 5:] = 0  # mostly padding: every kept token inside one window
  ids[mask == 0] = 0
  return ids, mask


def _perturb(hf, seed=0):
  """Non-trivial values everywhere (norm weights and biases too)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in hf.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=g))
  return hf.eval()


def _hf_run(hf, ids, mask):
  with torch.no_grad():
    o = hf(input_ids=torch.tensor(ids, dtype=torch.long),
           attention_mask=torch.tensor(mask, dtype=torch.long), output_hidden_states=True)
  return o


def _pairs(task, ours, hf_out, ids, mask):
  keep = mask.astype(bool)
  if task == "masked_lm":
    positions = np.array([[0, 20, 40, 47], [1, 2, 29, 9], [4, 0, 1, 2]], np.int32)
    out = ours(ids, attention_mask=mask)
    gathered = ours(ids, attention_mask=mask, masked_positions=positions).mlm_logits
    ref = hf_out.logits.numpy()
    return [(np.asarray(out.mlm_logits)[keep], ref[keep]),
            (np.asarray(gathered), np.take_along_axis(ref, positions[..., None], axis=1)),
            (np.asarray(out.sequence_output)[keep], hf_out.hidden_states[-1].numpy()[keep])]
  if task == "question_answering":
    out = ours(ids, attention_mask=mask)
    return [(np.asarray(out.start_logits)[keep], hf_out.start_logits.numpy()[keep]),
            (np.asarray(out.end_logits)[keep], hf_out.end_logits.numpy()[keep])]
  out = ours(ids, attention_mask=mask)
  if task == "token_classification":
    return [(np.asarray(out.logits)[keep], hf_out.logits.numpy()[keep])]
  return [(np.asarray(out.logits), hf_out.logits.numpy())]


def _assert_close(pairs):
  for a, b in pairs:
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("task,pooling", [("masked_lm", "cls"), ("classification", "cls"),
                                          ("classification", "mean"),
                                          ("token_classification", "cls"),
                                          ("question_answering", "cls")])
def test_import_hf_weights(tmp_path, task, pooling):
  torch.manual_seed(0)
  kw = {"num_labels": 2} if task == "question_answering" else {"num_labels": 3}
  hf = _perturb(getattr(transformers, HF_CLASSES[task])(
      _hf_config(classifier_pooling=pooling, **kw)))
  hf.save_pretrained(tmp_path)
  ours = load_pretrained(tmp_path, task=task)
  assert ours.config.classifier_pooling == pooling
  ids, mask = _batch()
  _assert_close(_pairs(task, ours, _hf_run(hf, ids, mask), ids, mask))


@pytest.mark.parametrize("task,pooling", [("masked_lm", "cls"), ("classification", "mean"),
                                          ("token_classification", "cls"),
                                          ("question_answering", "cls")])
def test_export_to_hf(tmp_path, task, pooling):
  head = {} if task in ("masked_lm", "question_answering") else {"num_labels": 3}
  ours = random_model(_ours_config(classifier_pooling=pooling), task, seed=1, **head)
  save_pretrained(ours, tmp_path / "hf", format="hf")
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert config["model_type"] == "modernbert"
  assert config["architectures"] == [HF_CLASSES[task]]
  auto = {"masked_lm": transformers.AutoModelForMaskedLM,
          "classification": transformers.AutoModelForSequenceClassification,
          "token_classification": transformers.AutoModelForTokenClassification,
          "question_answering": transformers.AutoModelForQuestionAnswering}[task]
  hf = auto.from_pretrained(tmp_path / "hf").eval()
  assert type(hf).__name__ == HF_CLASSES[task]
  ids, mask = _batch()
  _assert_close(_pairs(task, ours, _hf_run(hf, ids, mask), ids, mask))


def test_bare_encoder_round_trip(tmp_path):
  """ModernBertModel saved alone (no "model." prefix) loads as our encoder, and back."""
  torch.manual_seed(0)
  hf = _perturb(transformers.ModernBertModel(_hf_config()))
  hf.save_pretrained(tmp_path / "hf")
  ours = load_pretrained(tmp_path / "hf", task="encoder")
  ids, mask = _batch()
  keep = mask.astype(bool)
  ref = _hf_run(hf, ids, mask).last_hidden_state.numpy()
  np.testing.assert_allclose(np.asarray(ours(ids, attention_mask=mask).sequence_output)[keep],
                             ref[keep], atol=ATOL, rtol=0)
  save_pretrained(ours, tmp_path / "back", format="hf")
  again = transformers.AutoModel.from_pretrained(tmp_path / "back").eval()
  np.testing.assert_allclose(_hf_run(again, ids, mask).last_hidden_state.numpy()[keep],
                             ref[keep], atol=ATOL, rtol=0)


def test_scanned_layers_equal_unrolled(tmp_path):
  """scan_layers (layer 0, then groups of 3) computes what the unrolled layers compute; 7
  layers: layer 0, two scanned groups (1-3, 4-6)."""
  ours = random_model(_ours_config(num_hidden_layers=7), "masked_lm", seed=2)
  save_pretrained(ours, tmp_path / "x", format="hf")
  scanned = load_pretrained(tmp_path / "x", config_overrides={"scan_layers": True})
  ids, mask = _batch()
  np.testing.assert_allclose(np.asarray(scanned(ids, attention_mask=mask).mlm_logits),
                             np.asarray(ours(ids, attention_mask=mask).mlm_logits),
                             atol=1e-5, rtol=0)


def test_unsupported_model_type_is_one_line(tmp_path):
  hf = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
      vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=64))
  hf.save_pretrained(tmp_path)
  with pytest.raises(ValueError) as e:
    load_pretrained(tmp_path)
  assert str(e.value) == (
      f"{tmp_path / 'config.json'}: model_type 'roberta' is not supported; bert_jax loads bert, "
      "modernbert checkpoints (convert the model or use one of those)")


def test_tf1_export_of_modernbert_is_refused(tmp_path):
  with pytest.raises(ValueError) as e:
    save_pretrained(random_model(_ours_config(), "masked_lm"), tmp_path / "x", format="tf1")
  assert str(e.value) == ("format 'tf1' (google-research/bert) holds BERT only, not ModernBERT; "
                          "use format 'hf' or 'orbax'")
