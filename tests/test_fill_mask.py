"""bert_jax.fill_mask / bert_jax.encode (bert_jax/inference.py) and `python -m bert_jax.fill_mask`:
the same probabilities, top-k tokens and pooled hidden states as transformers on an export of
each family (fp32, CPU), a run directory, and the one-line errors."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import bert_jax
from bert_jax import create_model, inference, save_pretrained
from bert_jax.inference import InferenceError
from bert_jax.models.config import ModernBertConfig
from helpers import REPO, sample_vocab, small_config

torch = pytest.importorskip("torch", reason="parity tests need the `hf` extra (torch)")
transformers = pytest.importorskip("transformers", reason="parity tests need the `hf` extra")

SAMPLE_BPE = REPO / "tests" / "fixtures" / "sample_bpe"
PRE_MOVE = REPO / "tests" / "fixtures" / "pre_move"
# Lower-cased (the sample vocabulary is uncased), of different lengths (padding in the batch),
# masks next to punctuation, next to each other and at the end.
BERT_TEXTS = ["the [MASK] is a python function.", "a [MASK] of the list [MASK][MASK] is here, "
              "and then the value is returned.", "return [MASK]"]
BPE_TEXTS = ["The [MASK] is a Python function.", "A [MASK] of the list [MASK][MASK] is here, "
             "and then the value is returned.", "Return [MASK]"]


def _random_model(config, task, seed=0, **head_kwargs):
  """Random parameters, made in numpy: a jitted init compiles for ~10 s on this CPU."""
  model = nnx.eval_shape(lambda: create_model(config, task, **head_kwargs))
  state = nnx.state(model, nnx.Param)
  rng = np.random.default_rng(seed)

  def value(path, x):
    noise = 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    return noise + 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else noise

  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(
      value, nnx.to_pure_dict(state)))
  nnx.update(model, state)
  return model


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """{"bert": an HF BertForPreTraining export with the sample WordPiece vocab.txt,
  "modernbert": an HF ModernBertForMaskedLM export with the sample BPE tokenizer.json}."""
  root = tmp_path_factory.mktemp("exports")
  bert = _random_model(small_config(vocab_size=2000), "pretraining")
  modern = _random_model(ModernBertConfig(
      vocab_size=2000, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
      num_attention_heads=4, local_attention=16, max_position_embeddings=128, pad_token_id=0,
      cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3), "masked_lm", seed=1)
  return {"bert": str(save_pretrained(bert, root / "bert", format="hf", vocab=sample_vocab())),
          "modernbert": str(save_pretrained(modern, root / "modernbert", format="hf",
                                            vocab=SAMPLE_BPE / "tokenizer.json"))}


def _hf_tokenizer(family, path):
  # The export ships tokenizer.json alone; its mask/cls/sep names are in tokenizer_config.json.
  return transformers.AutoTokenizer.from_pretrained(path if family == "bert" else SAMPLE_BPE)


def _texts(family):
  return BERT_TEXTS if family == "bert" else BPE_TEXTS


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_fill_mask_equals_transformers(exports, family):
  path, texts = exports[family], _texts(family)
  predictor = inference.load(path)
  tok = _hf_tokenizer(family, path)
  assert predictor.token_ids(texts) == [tok(t)["input_ids"] for t in texts]

  # Every probability, at every mask, against AutoModelForMaskedLM + softmax (one text at a
  # time: no padding on the HF side, three texts padded into one batch on ours).
  vocab_size = predictor.model.config.vocab_size
  everything = bert_jax.fill_mask(predictor, texts, top_k=vocab_size)
  hf = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
  for text, ours in zip(texts, everything):
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
      probs = torch.softmax(hf(**enc).logits[0], -1).numpy()
    masks = np.flatnonzero(enc["input_ids"][0].numpy() == tok.mask_token_id)
    assert len(ours) == len(masks) > 0
    for at, predictions in zip(masks, ours):
      got = np.zeros(vocab_size)
      got[[p["token"] for p in predictions]] = [p["score"] for p in predictions]
      np.testing.assert_allclose(got, probs[at], rtol=1e-5, atol=0)
      assert [p["score"] for p in predictions] == sorted((p["score"] for p in predictions),
                                                         reverse=True)

  # The top 5, with their strings, against pipeline("fill-mask").
  pipe = transformers.pipeline("fill-mask", model=hf, tokenizer=tok, top_k=5)
  for text, ours in zip(texts, everything):
    theirs = pipe(text)
    theirs = theirs if isinstance(theirs[0], list) else [theirs]  # one mask: not nested
    assert len(ours) == len(theirs)
    for a, b in zip((mask[:5] for mask in ours), theirs):
      assert [p["token"] for p in a] == [p["token"] for p in b]
      assert [p["token_str"] for p in a] == [p["token_str"] for p in b]
      np.testing.assert_allclose([p["score"] for p in a], [p["score"] for p in b], rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_encode_equals_transformers_hidden_states(exports, family):
  path, texts = exports[family], _texts(family) + ["", "one more sentence of text"]
  predictor = inference.load(path)
  tok = _hf_tokenizer(family, path)
  enc = tok(texts, return_tensors="pt", padding=True)
  with torch.no_grad():  # HF's last_hidden_state: ModernBERT's after its final norm
    hidden = transformers.AutoModel.from_pretrained(path).eval()(**enc).last_hidden_state.numpy()
  mask = enc["attention_mask"].numpy()[..., None]
  cls = bert_jax.encode(predictor, texts, pooling="cls", batch_size=3)  # two batches
  mean = bert_jax.encode(predictor, texts, pooling="mean", batch_size=3)
  assert cls.shape == mean.shape == (len(texts), predictor.model.config.hidden_size)
  assert cls.dtype == np.float32
  np.testing.assert_allclose(cls, hidden[:, 0], atol=1e-5, rtol=0)
  np.testing.assert_allclose(mean, (hidden * mask).sum(1) / mask.sum(1), atol=1e-5, rtol=0)
  assert bert_jax.encode(predictor, []).shape == (0, predictor.model.config.hidden_size)


@pytest.fixture
def pre_move(tmp_path):
  """A copy of the pre-move run (BERT-tiny, synthetic data: vocab 64, 32 positions, no
  vocabulary file) and its orbax export, with a 64-token vocab.txt for them."""
  for name in ("run", "export_orbax"):
    shutil.copytree(PRE_MOVE / name, tmp_path / name)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                             [f"w{i}" for i in range(59)]) + "\n")
  return tmp_path


def test_run_directory_and_orbax_export(pre_move):
  text = ["w1 w2 [MASK] w3 [MASK]", "w7 [MASK]"]
  run = bert_jax.fill_mask(str(pre_move / "run"), text, top_k=3, vocab=str(pre_move))
  export = bert_jax.fill_mask(str(pre_move / "export_orbax"), text, top_k=3,
                              vocab=str(pre_move / "vocab.txt"))
  assert [[[p["token"] for p in m] for m in t] for t in run] == \
      [[[p["token"] for p in m] for m in t] for t in export]
  np.testing.assert_allclose([p["score"] for t in run for m in t for p in m],
                             [p["score"] for t in export for m in t for p in m], atol=1e-6)
  assert run[0][0][0]["token_str"].startswith(("w", "["))
  # A run's model as its own step, and its embeddings from the same encoder.
  predictor = inference.load(str(pre_move / "run"), vocab=str(pre_move / "vocab.txt"), step=2)
  assert predictor.where.endswith("(step 2)")
  assert predictor.encode(text, pooling="mean").shape == (2, 128)

  with pytest.raises(InferenceError) as e:
    inference.load(str(pre_move / "run"))
  assert str(e.value) == (
      f"--model={pre_move / 'run'}: no vocabulary found (no vocab.txt, spm.model, "
      "tokenizer.json beside the weights, or a run on synthetic data); pass --vocab=PATH")
  with pytest.raises(bert_jax.errors.UserError) as e:
    inference.load(str(pre_move / "run"), vocab=str(pre_move), step=7)
  assert str(e.value) == f"--step=7: no checkpoint at that step in {pre_move / 'run'}; available: 2"
  with pytest.raises(InferenceError) as e:
    inference.load(str(pre_move / "export_orbax"), vocab=str(pre_move), step=2)
  assert str(e.value) == (
      f"--step=2 picks a checkpoint of a bert_jax.train run directory; --model="
      f"{pre_move / 'export_orbax'} is not one: drop --step")


def test_bad_input_is_one_line(exports, pre_move, tmp_path):
  path = exports["bert"]
  predictor = inference.load(path)
  cases = [
      (lambda: predictor.fill_mask(["the cat sat.", "the [MASK] sat."]),
       '--text="the cat sat." has no [MASK]: put the tokenizer\'s mask token [MASK] where a '
       'token should be predicted, e.g. --text="The capital of France is [MASK]."'),
      (lambda: predictor.fill_mask(["w1 " * 100 + "[MASK]"]),
       f'--text="{"w1 " * 19}..." is 203 '
       "tokens with [CLS] and [SEP], more than the model's max_position_embeddings=64; "
       "shorten it"),
      (lambda: predictor.fill_mask(["the [MASK]"], top_k=0), "--top_k=0: must be at least 1"),
      (lambda: predictor.encode(["a"], pooling="max"),
       "pooling='max' is not one of cls, mean"),
      (lambda: inference.load(str(tmp_path / "nope")),
       f"--model={tmp_path / 'nope'}: no such directory; pass a bert_jax.train run directory "
       "(config.json + checkpoints/), a bert_jax.export output or an HF model directory "
       "(config.json + model.safetensors)"),
      (lambda: inference.load(str(pre_move)),
       f"--model={pre_move} is not a bert_jax.train run directory (config.json + "
       "checkpoints/), a bert_jax.export output or an HF model directory (config.json + "
       "model.safetensors) (found: export_orbax, run, vocab.txt); pass one of those"),
      (lambda: inference.load(path, vocab=str(tmp_path / "v.txt")),
       f"--vocab={tmp_path / 'v.txt'}: no such file; pass the model's vocab.txt, spm.model or "
       "tokenizer.json"),
      (lambda: inference.load(str(pre_move / "export_orbax"), vocab=sample_vocab()),
       f"--vocab={sample_vocab()} has 2000 tokens but the model's vocab_size is 64; pass the "
       "model's own vocabulary"),
  ]
  for call, message in cases:
    with pytest.raises(InferenceError) as e:
      call()
    assert str(e.value) == message

  # A checkpoint without a masked-LM head: fill-mask refuses it, encode takes its encoder.
  clf = save_pretrained(_random_model(small_config(vocab_size=2000), "classification",
                                      num_labels=2), tmp_path / "clf", vocab=sample_vocab())
  with pytest.raises(InferenceError) as e:
    bert_jax.fill_mask(str(clf), ["the [MASK]"])
  assert str(e.value) == (f"--model={clf}: a classification model, without a masked-LM head; "
                          "fill-mask needs a pretraining or masked-LM checkpoint (encode works "
                          "with any)")
  np.testing.assert_allclose(bert_jax.encode(str(clf), ["the cat"]),
                             bert_jax.encode(predictor, ["the cat"]), atol=1e-6)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "bert_jax.fill_mask", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_cli_json_lines(exports):
  path = exports["modernbert"]
  r = _cli(f"--model={path}", f"--text={BPE_TEXTS[0]}", f"--text={BPE_TEXTS[1]}", "--top_k=3",
           "--json")
  assert r.returncode == 0, r.stderr
  lines = [json.loads(line) for line in r.stdout.splitlines()]
  expected = bert_jax.fill_mask(path, BPE_TEXTS[:2], top_k=3)
  assert len(lines) == 3 * (1 + 3)  # text 0 has one mask, text 1 three, 3 predictions each
  ids = inference.load(path).token_ids(BPE_TEXTS[:2])
  for line in lines:
    assert set(line) == {"text_index", "mask_index", "position", "rank", "token", "token_str",
                         "score"}
    want = expected[line["text_index"]][line["mask_index"]][line["rank"]]
    assert (line["token"], line["token_str"]) == (want["token"], want["token_str"])
    assert line["score"] == pytest.approx(want["score"], rel=1e-6)
    assert ids[line["text_index"]][line["position"]] == 4  # [MASK]


def test_cli_errors_are_one_line(exports, tmp_path):
  r = _cli(f"--model={exports['bert']}", "--text=the [MASK] sat.", "--text=no mask here")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      'error: --text="no mask here" has no [MASK]: put the tokenizer\'s mask token [MASK] '
      'where a token should be predicted, e.g. --text="The capital of France is [MASK]."']
  assert r.stdout == ""
  (tmp_path / "notes.txt").write_text("hi")
  r = _cli(f"--model={tmp_path}", "--text=the [MASK]")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
      f"error: --model={tmp_path} is not a bert_jax.train run directory (config.json + "
      "checkpoints/), a bert_jax.export output or an HF model directory (config.json + "
      "model.safetensors) (found: notes.txt); pass one of those")
  r = _cli(f"--model={exports['bert']}")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
      'error: --text is required: pass --text="... [MASK] ..." (repeat it for several texts)')


def test_function_and_module_share_the_name():
  """`bert_jax.fill_mask` is the function, and stays callable once the CLI module is imported."""
  code = (
      "import inspect, bert_jax\n"
      "assert inspect.isfunction(bert_jax.fill_mask), bert_jax.fill_mask\n"
      "import bert_jax.fill_mask\n"
      "assert inspect.ismodule(bert_jax.fill_mask)\n"
      "try:\n"
      "  bert_jax.fill_mask('/nonexistent', ['the [MASK]'])\n"
      "except bert_jax.inference.InferenceError as e:\n"
      "  print(e)\n")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith("--model=/nonexistent: no such directory")
