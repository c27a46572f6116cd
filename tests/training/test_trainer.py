"""The training loop: end to end on real data, resume, preemption, mesh changes, NaN policy."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from bert_jax.training import trainer
from bert_jax import errors
from bert_jax.parallel import sharding
from bert_jax.training import pretraining
from bert_jax.training import train_state
from bert_jax.training.checkpointing import Checkpointer
from helpers import REPO, sigterm_after_first_metrics, tiny_config


def _metrics(workdir, kind="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == kind]


def _final_params(workdir, config, vocab):
  mesh = sharding.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  setup = pretraining.build(config, mesh, vocab)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  state, step = ckpt.restore(setup.abstract_state)
  ckpt.close()
  return step, jax.tree.map(np.asarray, state.params)


@pytest.mark.slow
def test_end_to_end_on_the_sample_corpus(sample_data, tmp_path):
  _, data_dir = sample_data
  config = tiny_config(data_dir, **{"train.num_steps": 40, "train.log_every_steps": 10,
                                    "checkpoint.every_steps": 20, "eval.every_steps": 20,
                                    "optimizer.warmup_steps": 5})
  before = signal.getsignal(signal.SIGTERM)
  result = trainer.train_and_evaluate(config, str(tmp_path))
  # The preemption handler is the process's only while training (a later SIGTERM, or a
  # multiprocessing.Pool terminating workers forked afterwards, must not be swallowed)
  assert signal.getsignal(signal.SIGTERM) is before
  logs = _metrics(tmp_path)
  assert [r["step"] for r in logs] == [10, 20, 30, 40]
  # It learns: from step 10 to 40 the MLM loss fell by 0.45-0.67 in five runs (the vocabulary,
  # and so the data, differ a little between runs; see bert_jax/text/vocab.py); without learning, 0.
  assert logs[-1]["mlm_loss"] < logs[0]["mlm_loss"] - 0.3
  for key in ("loss", "mlm_accuracy", "nsp_accuracy", "grad_norm", "learning_rate",
              "seq_per_s", "tokens_per_s", "mfu"):
    assert np.isfinite(logs[-1][key]), key
  evals = _metrics(tmp_path, "eval")
  assert [r["step"] for r in evals] == [20, 40]
  assert result["mlm_loss"] == evals[-1]["mlm_loss"] and result["examples"] > 0
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["20", "40"]
  for kind in ("train", "eval"):
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / kind))
  resolved = json.loads((tmp_path / "config.json").read_text())
  assert resolved["train"]["num_steps"] == 40 and resolved["data"]["data_dir"] == data_dir


@pytest.mark.slow
def test_sigterm_saves_then_resume_equals_an_uninterrupted_run(sample_data, tmp_path):
  """Real data (the tf.data position is restored too), CPU, fixed seed: identical losses."""
  _, data_dir = sample_data
  overrides = {"train.num_steps": 12, "train.log_every_steps": 1, "checkpoint.every_steps": 100,
               "eval.every_steps": 0}
  config = tiny_config(data_dir, **overrides)
  straight = tmp_path / "straight"
  trainer.train_and_evaluate(config, str(straight))

  resumed = tmp_path / "resumed"
  args = [f"--config={REPO / 'configs' / 'tiny.py'}", f"--workdir={resumed}",
          f"--config.data.data_dir={data_dir}"] + [
      f"--config.{k}={v}" for k, v in {**overrides, "data.seq_len": 64,
                                       "data.max_predictions_per_seq": 10,
                                       "data.shuffle_buffer": 100, "train.batch_size": 8,
                                       "optimizer.warmup_steps": 2, "eval.batch_size": 8,
                                       "train.peak_tflops_per_device": 1.0}.items()]
  sigterm_after_first_metrics(["bert_jax.train", *args], resumed)
  saved = int(os.listdir(resumed / "checkpoints")[0])
  assert 2 <= saved < 12

  trainer.train_and_evaluate(config, str(resumed))
  a = {r["step"]: r["loss"] for r in _metrics(straight)}
  b = {r["step"]: r["loss"] for r in _metrics(resumed)}
  assert all(b[s] == a[s] for s in b if s > saved + 1)  # the resumed run's steps
  assert len([s for s in b if s > saved + 1]) >= 3
  _, pa = _final_params(straight, config, 2000)
  _, pb = _final_params(resumed, config, 2000)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(x, y)


def test_restore_onto_a_different_mesh(tmp_path):
  config = tiny_config()
  eight = sharding.create_mesh(8, 1, 1)
  setup = pretraining.build(config, eight, 500)
  state = setup.init_state(jax.random.key(3))
  batch = train_state.global_batch(pretraining.synthetic_batch(8, 64, 10, 500, 0),
                                 setup.batch_sharding)
  state, _ = setup.train_step(state, batch)
  ckpt = Checkpointer(tmp_path / "checkpoints")
  ckpt.save(1, state)
  ckpt.wait()
  saved = jax.tree.map(np.asarray, state.params)
  other = pretraining.build(config, sharding.create_mesh(2, 2, 2), 500)
  restored, step = ckpt.restore(other.abstract_state)
  assert step == 1
  kernel = restored.params["bert"]["encoder"]["layers"][1]["intermediate"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  for x, y in zip(jax.tree.leaves(restored.params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(x), y)
  # and it trains on from there
  restored, metrics = other.train_step(restored, train_state.global_batch(
      pretraining.synthetic_batch(8, 64, 10, 500, 1), other.batch_sharding))
  assert np.isfinite(float(metrics["loss"]))


def _inject_nan_at(monkeypatch, bad_step):
  real = trainer.data_source

  def patched(config):
    source = real(config)
    make_iter = source.make_train_iterator

    def make_bad():
      it = make_iter()
      outer = type(it)

      class Bad(outer):
        def __next__(self):
          batch = super().__next__()
          if self.i == bad_step:  # out-of-vocabulary target: NaN loss
            batch = dict(batch, masked_ids=np.full_like(batch["masked_ids"], 10 ** 6))
          return batch
      it.__class__ = Bad
      return it

    source.make_train_iterator = make_bad
    return source

  monkeypatch.setattr(trainer, "data_source", patched)


def test_nonfinite_stop_keeps_the_last_good_checkpoint(monkeypatch, tmp_path):
  _inject_nan_at(monkeypatch, 5)
  config = tiny_config(**{"train.num_steps": 8, "checkpoint.every_steps": 2,
                          "train.log_every_steps": 2, "eval.every_steps": 0})
  with pytest.raises(errors.NonFiniteError, match="non-finite loss or gradient by step 6"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert sorted(map(int, os.listdir(tmp_path / "checkpoints"))) == [2, 4]
  step, params = _final_params(tmp_path, config, 500)
  assert step == 4 and all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_nonfinite_skip_counts_and_finishes(monkeypatch, tmp_path):
  _inject_nan_at(monkeypatch, 5)
  config = tiny_config(**{"train.num_steps": 8, "train.on_nonfinite": "skip",
                          "train.log_every_steps": 2, "eval.every_steps": 0})
  trainer.train_and_evaluate(config, str(tmp_path))
  logs = _metrics(tmp_path)
  assert logs[-1]["step"] == 8 and logs[-1]["skipped_steps"] == 1
  _, params = _final_params(tmp_path, config, 500)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_warm_start_from_a_pretrained_directory(tmp_path):
  from bert_jax import create_model, save_pretrained
  config = tiny_config()
  setup = pretraining.build(config, sharding.create_mesh(2, 2, 2), 500)
  donor = create_model(setup.bert_config, seed=42)
  save_pretrained(donor, tmp_path / "donor", format="orbax")
  state = trainer.warm_start(setup, str(tmp_path / "donor"), 0)
  from flax import nnx
  expected = nnx.to_pure_dict(nnx.state(donor, nnx.Param))
  for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert int(state.step) == 0
  wrong = create_model(setup.bert_config.replace(intermediate_size=256), seed=1)
  save_pretrained(wrong, tmp_path / "wrong", format="hf")
  with pytest.raises(errors.UserError, match="the checkpoint has intermediate_size=256 but this "
                     "run's model has intermediate_size=512"):
    trainer.warm_start(setup, str(tmp_path / "wrong"), 0)


def test_a_relative_workdir_trains_and_exports(tmp_path, monkeypatch):
  """`--workdir=demo_output/run` (the README's demo): Orbax refuses relative paths, and only
  when the first array is written, in the background; ours are made absolute first."""
  from bert_jax.training import export
  monkeypatch.chdir(tmp_path)
  trainer.train_and_evaluate(tiny_config(**{"train.num_steps": 4, "checkpoint.every_steps": 2,
                                          "eval.every_steps": 0}), os.path.join("out", "run"))
  assert sorted(os.listdir(os.path.join("out", "run", "checkpoints"))) == ["2", "4"]
  _, step = export.export(os.path.join("out", "run"), os.path.join("out", "export"),
                          format="orbax")
  assert step == 4 and os.listdir(os.path.join("out", "export"))


# ---- objectives: the dataset's (nsp | sop | none) -------------------------------------------
def _fake_dataset(monkeypatch, **info):
  """data_source over a dataset whose dataset_info is `info` (nothing is read until training)."""
  from bert_jax.data import input_pipeline
  info = {"max_seq_length": 64, "masking": "dynamic", "max_predictions_per_seq": 10,
          "vocab_size": 2000, "whole_word_masking": False, **info}
  monkeypatch.setattr(input_pipeline, "dataset_info", lambda data_dir, dataset=None: info)


def test_objective_must_match_the_dataset(monkeypatch, tmp_path):
  data_dir = str(tmp_path / "data")
  _fake_dataset(monkeypatch)  # written before datasets recorded an objective: nsp
  assert trainer.data_source(tiny_config(data_dir)).objective == "nsp"
  with pytest.raises(errors.UserError) as e:
    trainer.data_source(tiny_config(data_dir, **{"data.objective": "none"}))
  assert str(e.value) == (f"--config.data.objective=none but the dataset in {data_dir} was "
                          "prepared with --objective=nsp; prepare another dataset or drop the "
                          "override")
  _fake_dataset(monkeypatch, objective="sop")
  assert trainer.data_source(tiny_config(data_dir)).objective == "sop"
  assert trainer.data_source(tiny_config(data_dir, **{"data.objective": "sop"})).objective == "sop"
  with pytest.raises(errors.UserError, match="objective=nsp but the dataset in .* was prepared "
                     "with --objective=sop"):
    trainer.data_source(tiny_config(data_dir, **{"data.objective": "nsp"}))
  # config.json records the objective the run trains (the dataset's where the config says "").
  config = tiny_config(data_dir)
  trainer.write_config(config, tmp_path, "sop")
  assert json.loads((tmp_path / "config.json").read_text())["data"]["objective"] == "sop"
  assert config.data.objective == ""  # the caller's config is left as it was
  # Synthetic data: nsp unless data.objective says otherwise.
  assert trainer.data_source(tiny_config()).objective == "nsp"
  assert trainer.data_source(tiny_config(**{"data.objective": "none"})).objective == "none"
  from bert_jax.training import config as config_lib
  with pytest.raises(config_lib.ConfigError, match="--config.data.objective='mlm' is not one of "
                     ", nsp, sop, none"):
    config_lib.validate_config(tiny_config(**{"data.objective": "mlm"}))


def test_masking_config_against_the_dataset(monkeypatch, tmp_path):
  data_dir = str(tmp_path / "data")
  _fake_dataset(monkeypatch, masking_strategy="span", masked_lm_prob=0.15)
  source = trainer.data_source(tiny_config(data_dir))  # strategy "": the dataset's, span
  assert source.reference_eval_batches is not None  # span: also evaluated at 15% token masking
  token = trainer.data_source(tiny_config(data_dir, **{"data.masking_strategy": "token"}))
  assert token.reference_eval_batches is None  # already BERT's masking
  with pytest.raises(errors.UserError) as e:
    trainer.data_source(tiny_config(data_dir, **{"data.masked_lm_prob": 0.3}))
  assert str(e.value) == (
      "--config.data.max_predictions_per_seq=10 cannot hold --config.data.masked_lm_prob=0.3 of "
      "64 tokens (19 predictions); raise it to 19 or lower the rate")
  _fake_dataset(monkeypatch, masking="static", masking_strategy="whole_word",
                masked_lm_prob=0.15)
  with pytest.raises(errors.UserError) as e:
    trainer.data_source(tiny_config(data_dir, **{"data.masking_strategy": "ngram"}))
  assert str(e.value) == (
      f"--config.data.masking_strategy=ngram but the dataset in {data_dir} is statically masked "
      "with whole_word; drop the override or prepare a dynamic dataset")
  assert trainer.data_source(tiny_config(data_dir)).reference_eval_batches is None


def test_log_lines_name_the_objective():
  import types
  m = {"loss": 7.5, "mlm_loss": 6.8, "mlm_accuracy": 0.05, "nsp_loss": 0.6931,
       "nsp_accuracy": 0.51, "learning_rate": 1e-4, "grad_norm": 1.5, "seq_per_s": 10.0,
       "tokens_per_s": 640.0, "nonpad_fraction": 0.9}
  lines = {}
  for objective in ("nsp", "sop", "none"):
    setup = types.SimpleNamespace(train_step=None, batch_sharding=None, flops_per_token=1.0,
                                  objective=objective)
    task = trainer.PretrainingTask(tiny_config(), setup, None)
    lines[objective] = task.log_line(4, 6, m)
  assert "| mlm 6.8000 acc 0.0500 | nsp 0.6931 acc 0.5100 | lr" in lines["nsp"]
  assert "| mlm 6.8000 acc 0.0500 | sop 0.6931 acc 0.5100 | lr" in lines["sop"]
  assert "| mlm 6.8000 acc 0.0500 | lr 1.00e-04 |" in lines["none"]
  assert "nsp" not in lines["none"] and "nsp" not in lines["sop"]


@pytest.mark.slow
def test_a_masked_lm_run_trains_logs_and_exports_a_bert_for_masked_lm(tmp_path, caplog):
  """objective none end to end: no nsp key in metrics.jsonl, config.json records the objective,
  the export is an HF BertForMaskedLM (transformers gives our logits), and a warm start from a
  pretraining export drops its pooler and NSP head."""
  from flax import nnx

  from bert_jax import create_model, load_pretrained, save_pretrained
  from bert_jax.training import export
  config = tiny_config(**{"data.objective": "none", "train.num_steps": 4,
                          "checkpoint.every_steps": 4, "eval.every_steps": 0})
  with caplog.at_level("INFO"):
    result = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  records = _metrics(tmp_path / "run") + _metrics(tmp_path / "run", "eval")
  assert [r["step"] for r in records] == [2, 4, 4]
  assert not [k for r in records for k in r if "nsp" in k]
  assert np.isfinite(result["mlm_loss"]) and result["loss"] == result["mlm_loss"]
  assert result["examples"] == 16  # 2 eval batches of 8
  assert "objective none (masked_lm)" in caplog.text and "| nsp" not in caplog.text
  assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["objective"] == "none"

  out, _ = export.export(str(tmp_path / "run"), str(tmp_path / "hf"), format="hf")
  assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
  card = (out / "README.md").read_text()
  assert "Masked-LM pretraining (no sentence-pair task)" in card
  assert "transformers.BertForMaskedLM.from_pretrained(PATH)" in card
  ours = load_pretrained(out, task=None)
  assert type(ours).__name__ == "BertForMaskedLM"
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  hf = transformers.BertForMaskedLM.from_pretrained(out, attn_implementation="eager").eval()
  ids = np.random.default_rng(0).integers(5, 500, (2, 16)).astype(np.int32)
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours(ids).mlm_logits), want, atol=1e-5, rtol=0)

  # Fine-tuning from the run's WORKDIR: its encoder, and a fresh pooler for classification.
  from bert_jax.finetuning import run as finetune_run
  from configs.finetune import default as finetune_default
  ft = finetune_default.get_config()
  ft.init_from, ft.model.preset = str(tmp_path / "run"), "tiny"
  clf = finetune_run.initial_model(ft, "classification", {"num_labels": 2}, 500)
  run_params = export.restore_params(str(tmp_path / "run"))[0]
  for x, y in zip(jax.tree.leaves(nnx.to_pure_dict(nnx.state(clf, nnx.Param))["bert"]["encoder"]),
                  jax.tree.leaves(run_params["bert"]["encoder"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert clf(ids).logits.shape == (2, 2)

  # Warm start of a masked_lm run from a pretraining model: its pooler and NSP are dropped.
  setup = pretraining.build(config, sharding.create_mesh(2, 2, 2), 500, "none")
  donor = create_model(setup.bert_config, seed=42)
  save_pretrained(donor, tmp_path / "donor", format="hf")
  state = trainer.warm_start(setup, str(tmp_path / "donor"), 0)
  expected = nnx.to_pure_dict(nnx.state(donor, nnx.Param))
  del expected["nsp"], expected["bert"]["pooler"]
  assert jax.tree.structure(state.params) == jax.tree.structure(expected)
  for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
