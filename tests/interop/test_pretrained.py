"""Checkpoint interop: round trips, the other tools reading our files, and bad input."""

import json
import logging
import os
import struct

import jax
import ml_dtypes
import numpy as np
import pytest

from bert_jax import create_model, load_pretrained, save_pretrained
from bert_jax.interop import CheckpointError, detect_format, named_tensors
from bert_jax.interop import safetensors_io
from helpers import assert_trees_equal, batch, params_of, random_model, small_config


@pytest.fixture(scope="module")
def model():
  return random_model(small_config())


@pytest.fixture
def vocab(tmp_path):
  p = tmp_path / "vocab.txt"
  p.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                         [f"w{i}" for i in range(115)]) + "\n")
  return p


@pytest.mark.parametrize("fmt", ["hf", "tf1", "orbax"])
def test_round_trip_is_bit_identical_and_carries_the_vocab(model, vocab, tmp_path, fmt):
  out = save_pretrained(model, tmp_path / fmt, format=fmt, vocab=vocab)
  assert detect_format(out) == fmt
  assert (out / "vocab.txt").read_text() == vocab.read_text()
  back = load_pretrained(out)
  # The config comes back too: orbax stores every field, hf/tf1 the architecture fields, and
  # this model leaves every other field (dtype, layer_norm_eps, ...) at its default.
  assert back.config == model.config
  assert_trees_equal(params_of(back), params_of(model))
  # The vocabulary travels on: save the loaded model again without naming it.
  again = save_pretrained(back, tmp_path / f"{fmt}-again", format="hf")
  assert (again / "vocab.txt").exists()
  assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


@pytest.mark.parametrize("fmt", ["hf", "tf1", "orbax"])
def test_each_format_carries_its_config_fields(tmp_path, fmt):
  config = small_config(hidden_act="gelu", initializer_range=0.05, layer_norm_eps=1e-6,
                        pad_token_id=1, classifier_dropout=0.3, dtype="bfloat16")
  back = load_pretrained(save_pretrained(create_model(config), tmp_path / fmt, format=fmt)).config
  default = small_config()
  carried = {"orbax": config, "hf": config.replace(dtype=default.dtype),
             "tf1": default.replace(hidden_act="gelu", initializer_range=0.05)}[fmt]
  assert back == carried


def _shard(d, split_at):
  """Rewrites d/model.safetensors as two shards plus model.safetensors.index.json."""
  tensors = safetensors_io.load(str(d / "model.safetensors"))
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[:split_at],
            "model-00002-of-00002.safetensors": names[split_at:]}
  for file, part in shards.items():
    safetensors_io.save({n: np.array(tensors[n]) for n in part}, str(d / file))
  (d / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}))
  os.remove(d / "model.safetensors")
  return list(shards)


def test_sharded_safetensors_load(model, tmp_path):
  d = save_pretrained(model, tmp_path / "hf", format="hf")
  files = _shard(d, 10)
  assert detect_format(d) == "hf"
  assert_trees_equal(params_of(load_pretrained(d)), params_of(model))
  os.remove(d / files[1])
  with pytest.raises(CheckpointError) as e:
    load_pretrained(d)
  assert _one_line(e) == (f"{d / files[1]}: shard listed in {d / 'model.safetensors.index.json'} "
                          "is missing")
  (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../x"}}))
  with pytest.raises(CheckpointError, match="shard name '../x' escapes the checkpoint directory"):
    load_pretrained(d)
  (d / "model.safetensors.index.json").write_text("{}")
  with pytest.raises(CheckpointError, match="not a valid safetensors index"):
    load_pretrained(d)


def test_bfloat16_hf_export_loads_as_its_rounded_weights(model, tmp_path):
  d = save_pretrained(model, tmp_path / "hf", format="hf", dtype="bfloat16")
  stored = safetensors_io.lazy_load(str(d / "model.safetensors"))
  assert set(stored.dtypes.values()) == {"BF16"}
  rounded = jax.tree.map(lambda a: a.astype(ml_dtypes.bfloat16).astype(np.float32),
                         params_of(model))
  assert_trees_equal(params_of(load_pretrained(d)), rounded)


def test_tf1_checkpoint_has_google_research_bert_names(model, tmp_path):
  tf = pytest.importorskip("tensorflow")
  out = save_pretrained(model, tmp_path / "tf1", format="tf1")
  reader = tf.train.load_checkpoint(str(out / "bert_model.ckpt"))
  shapes = reader.get_variable_to_shape_map()
  assert shapes["bert/embeddings/word_embeddings"] == [120, 64]
  assert shapes["bert/encoder/layer_2/attention/self/query/kernel"] == [64, 64]
  assert shapes["bert/encoder/layer_0/intermediate/dense/kernel"] == [64, 128]
  assert shapes["bert/encoder/layer_1/output/LayerNorm/gamma"] == [64]
  assert shapes["cls/seq_relationship/output_weights"] == [2, 64]
  assert shapes["cls/predictions/output_bias"] == [120]
  assert len(shapes) == 5 + 3 * 16 + 2 + 5 + 2  # embeddings, layers, pooler, MLM, NSP
  params = params_of(model)
  qkv = params["bert"]["encoder"]["layers"][2]["attention"]["qkv"]["kernel"]  # [H, 3, N, D]
  np.testing.assert_array_equal(reader.get_tensor("bert/encoder/layer_2/attention/self/key/kernel"),
                                qkv[:, 1].reshape(64, 64))
  cfg = json.loads((out / "bert_config.json").read_text())
  assert cfg["num_hidden_layers"] == 3 and "dtype" not in cfg


def test_tf1_checkpoint_prefix_path_and_optimizer_slots_are_skipped(model, tmp_path):
  tf = pytest.importorskip("tensorflow")
  tensors = named_tensors(model, "tf1")
  tensors["bert/embeddings/word_embeddings/adam_m"] = np.zeros((120, 64), np.float32)
  tensors["global_step"] = np.array(7, np.int64)
  d = tmp_path / "ckpt"
  d.mkdir()
  names = sorted(tensors)
  tf.raw_ops.SaveV2(prefix=str(d / "model.ckpt-7"), tensor_names=names,
                    shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(tensors[n]) for n in names])
  (d / "bert_config.json").write_text(json.dumps(model.config.to_tf1_dict()))
  back = load_pretrained(d / "model.ckpt-7")
  assert_trees_equal(params_of(back), params_of(model))


def test_pytorch_bin_loads_with_weights_only(model, tmp_path):
  torch = pytest.importorskip("torch")
  d = save_pretrained(model, tmp_path / "hf", format="hf")
  sd = {k: torch.from_numpy(np.array(v)) for k, v in safetensors_io.load(str(d / "model.safetensors")).items()}
  torch.save(sd, d / "pytorch_model.bin")
  os.remove(d / "model.safetensors")
  assert_trees_equal(params_of(load_pretrained(d)), params_of(model))


def test_transformers_reads_our_hf_export(model, tmp_path):
  transformers = pytest.importorskip("transformers")
  d = save_pretrained(model, tmp_path / "hf", format="hf", dtype="bfloat16")
  hf = transformers.BertForPreTraining.from_pretrained(d)
  assert str(hf.bert.embeddings.word_embeddings.weight.dtype) == "torch.bfloat16"
  assert hf.config.num_hidden_layers == 3


def test_pretraining_checkpoint_into_a_classifier_initialises_the_head(model, tmp_path, caplog):
  d = save_pretrained(model, tmp_path / "hf", format="hf")
  with caplog.at_level(logging.WARNING, logger="bert_jax"):
    clf = load_pretrained(d, "classification", num_labels=3)
  assert "no weights for classifier; initialising them fresh" in caplog.text
  assert "not used by task 'classification'" in caplog.text
  assert_trees_equal(params_of(clf)["bert"], params_of(model)["bert"])
  ids, types, mask = batch(model.config)
  assert clf(ids, types, mask).logits.shape == (3, 3)


def test_classifier_num_labels_is_read_from_the_checkpoint(tmp_path):
  clf = random_model(small_config(), "classification", num_labels=5)
  d = save_pretrained(clf, tmp_path / "c", format="tf1")
  back = load_pretrained(d, "classification")
  assert back.num_labels == 5
  assert_trees_equal(params_of(back), params_of(clf))


def test_orbax_export_keeps_its_task(tmp_path):
  qa = random_model(small_config(), "question_answering")
  d = save_pretrained(qa, tmp_path / "qa", format="orbax")
  assert type(load_pretrained(d, task=None)).__name__ == "BertForQuestionAnswering"


# ---- masked_lm: HF's BertForMaskedLM (no pooler, no NSP) --------------------------------------
ATOL = 1e-5  # as tests/models/test_hf_parity.py


def _no_head(params):
  params = dict(params, bert=dict(params["bert"]))
  params.pop("nsp"), params["bert"].pop("pooler")
  return params


@pytest.mark.parametrize("fmt", ["hf", "tf1", "orbax"])
def test_masked_lm_round_trips_without_pooler_or_nsp(vocab, tmp_path, fmt):
  mlm = random_model(small_config(), "masked_lm")
  out = save_pretrained(mlm, tmp_path / fmt, format=fmt, vocab=vocab)
  if fmt == "hf":
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    names = set(safetensors_io.lazy_load(str(out / "model.safetensors")))
  elif fmt == "tf1":
    tf = pytest.importorskip("tensorflow")
    names = set(tf.train.load_checkpoint(str(out / "bert_model.ckpt")).get_variable_to_shape_map())
  else:
    names = {"/".join(map(str, p)) for p, _ in jax.tree_util.tree_flatten_with_path(
        params_of(load_pretrained(out, task=None)))[0]}
  assert names and not [n for n in names if "pooler" in n or "seq_relationship" in n]
  if fmt != "orbax":
    assert {n for n in names if n.startswith("cls")} == (
        {"cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
         "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
         "cls.predictions.bias"} if fmt == "hf" else
        {"cls/predictions/transform/dense/kernel", "cls/predictions/transform/dense/bias",
         "cls/predictions/transform/LayerNorm/gamma", "cls/predictions/transform/LayerNorm/beta",
         "cls/predictions/output_bias"})
  back = load_pretrained(out, "masked_lm")
  assert type(back).__name__ == "BertForMaskedLM"
  assert_trees_equal(params_of(back), params_of(mlm))
  if fmt != "tf1":  # an HF directory's architectures, or our export's task
    assert type(load_pretrained(out, task=None)).__name__ == "BertForMaskedLM"


def _hf_logits(hf, ids, types, mask):
  """A transformers model's logits (eval mode, no grad) for numpy inputs."""
  import torch
  with torch.no_grad():
    return hf.eval()(input_ids=torch.tensor(ids, dtype=torch.long),
                     token_type_ids=torch.tensor(types, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()


def test_transformers_loads_our_masked_lm_export_to_the_same_logits(tmp_path):
  pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  mlm = random_model(small_config(hidden_act="gelu"), "masked_lm")
  d = save_pretrained(mlm, tmp_path / "hf", format="hf")
  hf, info = transformers.BertForMaskedLM.from_pretrained(d, attn_implementation="eager",
                                                          output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids, types, mask = batch(mlm.config)
  want = _hf_logits(hf, ids, types, mask)
  np.testing.assert_allclose(np.asarray(mlm(ids, types, mask).mlm_logits), want, atol=ATOL,
                             rtol=0)


def test_an_hf_pretraining_directory_loads_as_masked_lm_like_transformers(tmp_path, caplog):
  """transformers' own BertForPreTraining weights -> our masked_lm (pooler, NSP dropped) gives
  the logits transformers' BertForMaskedLM gives from the same directory."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = small_config(hidden_act="gelu")
  torch.manual_seed(0)
  hf_pre = transformers.BertForPreTraining(transformers.BertConfig(**cfg.to_hf_dict()))
  with torch.no_grad():  # non-trivial biases and LayerNorms
    for p in hf_pre.parameters():
      p.add_(0.05 * torch.randn_like(p))
  hf_pre.save_pretrained(tmp_path / "hf")
  with caplog.at_level(logging.WARNING, logger="bert_jax"):
    ours = load_pretrained(tmp_path / "hf", "masked_lm")
  assert "not used by task 'masked_lm'" in caplog.text
  assert "pooler" not in params_of(ours)["bert"] and "nsp" not in params_of(ours)
  hf = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf", attn_implementation="eager")
  ids, types, mask = batch(cfg)
  want = _hf_logits(hf, ids, types, mask)
  np.testing.assert_allclose(np.asarray(ours(ids, types, mask).mlm_logits), want, atol=ATOL,
                             rtol=0)


@pytest.mark.parametrize("fmt", ["hf", "tf1", "orbax"])
def test_pretraining_and_masked_lm_checkpoints_load_as_each_other(model, tmp_path, fmt, caplog):
  d = save_pretrained(model, tmp_path / fmt, format=fmt)
  mlm = load_pretrained(d, "masked_lm")
  assert_trees_equal(params_of(mlm), _no_head(params_of(model)))
  back = save_pretrained(mlm, tmp_path / f"{fmt}-mlm", format=fmt)
  with caplog.at_level(logging.WARNING, logger="bert_jax"):
    pre = load_pretrained(back, "pretraining")
  assert "no weights for nsp, pooler; initialising them fresh" in caplog.text
  assert_trees_equal(_no_head(params_of(pre)), _no_head(params_of(model)))


# ---- bad input: one line each, naming the file and the fix ----------------------------------
def _one_line(excinfo):
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  return msg


def test_missing_directory(tmp_path):
  with pytest.raises(CheckpointError) as e:
    load_pretrained(tmp_path / "nope")
  assert _one_line(e).startswith(f"{tmp_path / 'nope'}: no such checkpoint directory")


def test_unknown_format(tmp_path):
  (tmp_path / "weights.npz").write_bytes(b"x")
  with pytest.raises(CheckpointError) as e:
    load_pretrained(tmp_path)
  assert "not a BERT checkpoint directory (found: weights.npz); expected config.json" in _one_line(e)


def test_config_weights_mismatch(model, tmp_path):
  d = save_pretrained(model, tmp_path / "hf", format="hf")
  cfg = json.loads((d / "config.json").read_text())
  cfg["intermediate_size"] = 256
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError) as e:
    load_pretrained(d)
  assert ("tensor bert.encoder.layer.0.intermediate.dense.weight has shape [128, 64] but the "
          "config (hidden_size=64, intermediate_size=256, vocab_size=120) needs [256, 64]"
          in _one_line(e))


def test_fewer_layers_in_config_than_weights(model, tmp_path):
  d = save_pretrained(model, tmp_path / "hf", format="hf")
  cfg = json.loads((d / "config.json").read_text())
  cfg["num_hidden_layers"] = 2
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match="unexpected tensor bert.encoder.layer.2.*for a "
                     "2-layer BERT; the config file does not match"):
    load_pretrained(d)
  cfg["num_hidden_layers"] = 4
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match="missing tensor bert.encoder.layer.3"):
    load_pretrained(d)


def test_vocab_size_differs_from_embedding_rows(model, tmp_path):
  d = save_pretrained(model, tmp_path / "tf1", format="tf1")
  cfg = json.loads((d / "bert_config.json").read_text())
  cfg["vocab_size"] = 30522
  (d / "bert_config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError) as e:
    load_pretrained(d)
  assert ("bert/embeddings/word_embeddings has 120 rows but the config says vocab_size=30522; "
          "make vocab_size in the config file equal the vocabulary size") in _one_line(e)


def test_truncated_safetensors(model, tmp_path):
  d = save_pretrained(model, tmp_path / "hf", format="hf")
  f = d / "model.safetensors"
  data = f.read_bytes()
  f.write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError) as e:
    load_pretrained(d)
  assert "the file is truncated" in _one_line(e) and str(f) in str(e.value)
  f.write_bytes(data[:5])
  with pytest.raises(CheckpointError, match="truncated safetensors file"):
    load_pretrained(d)


def test_safetensors_header_that_lies(model, tmp_path):
  d = save_pretrained(model, tmp_path / "hf", format="hf")
  f = d / "model.safetensors"
  data = f.read_bytes()
  (n,) = struct.unpack("<Q", data[:8])
  header = json.loads(data[8:8 + n])
  header["bert.pooler.dense.bias"]["shape"] = [64, 64]  # claims more bytes than its offsets
  blob = json.dumps(header).encode()
  blob += b" " * (-len(blob) % 8)
  f.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n:])
  with pytest.raises(CheckpointError) as e:
    load_pretrained(d)
  assert "tensor 'bert.pooler.dense.bias' header says shape [64, 64]" in _one_line(e)
  assert "the header lies" in str(e.value)
  f.write_bytes(struct.pack("<Q", 10 ** 12) + data[8:])
  with pytest.raises(CheckpointError, match="header claims 1000000000000 bytes"):
    load_pretrained(d)


def test_save_refuses_an_existing_directory_unless_overwrite(model, tmp_path):
  d = save_pretrained(model, tmp_path / "hf", format="hf")
  before = (d / "model.safetensors").read_bytes()
  with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
    save_pretrained(create_model(small_config(), seed=3), d, format="hf")
  assert (d / "model.safetensors").read_bytes() == before
  save_pretrained(create_model(small_config(), seed=3), d, format="hf", overwrite=True)
  assert (d / "model.safetensors").read_bytes() != before
  assert sorted(os.listdir(tmp_path)) == ["hf"]


def test_a_failed_save_leaves_nothing(model, tmp_path):
  with pytest.raises(FileNotFoundError, match="no such vocabulary file"):
    save_pretrained(model, tmp_path / "out", format="hf", vocab=tmp_path / "missing.txt")
  with pytest.raises(ValueError, match="dtype 'int8' is not one of"):
    save_pretrained(model, tmp_path / "out", format="hf", dtype="int8")
  assert os.listdir(tmp_path) == []
