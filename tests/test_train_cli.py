"""`python -m bert_jax.train` start-up errors: one line on stderr naming the flag and the fix,
exit status 2, nothing written."""

import os

import pytest

from helpers import REPO, run_cli

TINY = f"--config={REPO / 'configs' / 'tiny.py'}"
SYNTH = "--config.data.source=synthetic"
CASES = [
    ([TINY, "--config.train.bogus=1"],
     "error: --config.train.bogus: 'bogus' is not a config key; every key is listed with its "
     "meaning in configs/default.py"),
    ([TINY, "--config.train.batch_size=abc"],
     "error: flag --config.train.batch_size=abc: invalid literal for int() with base 10: 'abc'"),
    (["--config=configs/nope.py"],
     "error: --config=configs/nope.py: cannot load the config file ([Errno 2] No such file or "
     "directory: 'configs/nope.py'); pass a file such as configs/tiny.py"),
    ([TINY, SYNTH, "--config.train.batch_size=12"],
     "error: --config.train.batch_size=12 is not divisible by the data-parallel size 8 "
     "(mesh.data × mesh.fsdp); use a multiple of 8"),
    ([TINY, SYNTH, "--config.mesh.data=3"],
     "error: --config.mesh.*: data×fsdp×tensor = 3×1×1 = 3 but there are 8 devices; make the "
     "product 8 (or set one size to -1)"),
    ([TINY, SYNTH, "--config.data.seq_len=1024"],
     "error: --config.data.seq_len=1024 exceeds model.max_position_embeddings=512; prepare "
     "shorter sequences or raise max_position_embeddings"),
    ([TINY, SYNTH, "--config.data.pack=True"],
     "error: --config.data.pack=True packs a prepared dataset's sequences; it needs "
     "data.source=tfds (synthetic batches are full rows)"),
    ([TINY, SYNTH, "--config.optimizer.name=sgd"],
     "error: --config.optimizer.name='sgd' is not one of bert_adam, adamw, lamb, stable_adamw"),
    ([TINY, SYNTH, "--config.model.attention_impl=splash",
      "--config.model.attention_probs_dropout_prob=0"],
     "error: --config.model.attention_impl: attention_impl='splash' needs a TPU; this backend is "
     "cpu: use attention_impl='auto' or 'xla'"),
    ([TINY, SYNTH, "--config.model.preset=modernbert_tiny"],
     "error: --config.model.preset=modernbert_tiny has no sentence-pair head for objective nsp; "
     "prepare the data with --objective=none (ModernBERT pretrains on masked-LM alone)"),
    ([TINY], "error: --config.data.data_dir is empty: point it at the directory written by "
     "`python -m bert_jax.prepare --data_dir=...`"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", CASES, ids=[c[1][7:40] for c in CASES])
def test_startup_errors_are_one_line(args, message, tmp_path):
  workdir = tmp_path / "w"
  proc = run_cli([f"--workdir={workdir}", *args], timeout=300)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == [message], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert proc.returncode == 2
  # Nothing is written but (for errors found after flag parsing) the empty workdir itself.
  assert not workdir.exists() or os.listdir(workdir) == []


@pytest.mark.slow
def test_vocab_size_must_match_the_dataset(sample_data, tmp_path):
  _, data_dir = sample_data
  proc = run_cli([f"--workdir={tmp_path}", TINY, f"--config.data.data_dir={data_dir}",
                  "--config.data.seq_len=64", "--config.model.vocab_size=30522"])
  assert ("error: --config.model.vocab_size=30522 but the dataset's vocabulary has 2000 tokens;"
          " set it to 2000 or -1 (from the data)") in proc.stderr
  proc = run_cli([f"--workdir={tmp_path}", TINY, f"--config.data.data_dir={data_dir}"])
  assert (f"error: --config.data.seq_len=128 but the dataset in {data_dir} was prepared with "
          "max_seq_length=64; set seq_len to match or prepare another dataset") in proc.stderr


@pytest.mark.slow
def test_wrong_dataset_version(sample_data, tmp_path):
  _, data_dir = sample_data
  proc = run_cli([f"--workdir={tmp_path / 'w'}", TINY, f"--config.data.data_dir={data_dir}",
                  "--config.data.seq_len=64", "--config.data.dataset=bert_pretraining:2.0.0"])
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: no prepared dataset bert_pretraining:2.0.0 in {data_dir}: run python -m "
      f"bert_jax.prepare --data_dir={data_dir} first")
  assert proc.returncode == 2 and os.listdir(tmp_path / "w") == []
