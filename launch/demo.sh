#!/usr/bin/env bash
# The whole pipeline on the bundled sample corpus, on this machine's CPU (about 5 minutes on
# 2 cores, plus a few minutes of first-time setup):
#   vocab -> prepare (TFDS dataset) -> pretrain BERT-tiny (masked LM) -> evaluate -> export (HF
#   safetensors) -> fill-mask on sentences the model never saw
# The model visibly learns: the final eval's MLM accuracy is well above the unigram baseline
# (always guessing the most frequent token), and the fill-mask predictions fit their context.
# Usage: launch/demo.sh [OUTPUT_DIR] [STEPS]      (defaults: demo_output, 1500)
# Re-running starts over in OUTPUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-demo_output}"
steps="${2:-1500}"
launch/setup_venv.sh
py=.venv/bin/python
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2 TOKENIZERS_PARALLELISM=false
corpus=$("$py" -c "from bert_jax.data import SAMPLE_CORPUS; print(SAMPLE_CORPUS)")
rm -rf "$out"
mkdir -p "$out"

echo "== 1/5 vocabulary (WordPiece, uncased) from $corpus"
"$py" -m bert_jax.vocab --input="$corpus" --output_dir="$out/vocab" --vocab_size=5000 \
  --kind=wordpiece --lower_case

echo "== 2/5 pretraining examples (masked LM without NSP, dynamic masking) as a TFDS dataset"
"$py" -m bert_jax.prepare --input="$corpus" --vocab="$out/vocab/vocab.txt" \
  --data_dir="$out/data" --max_seq_length=128 --max_predictions_per_seq=20 \
  --validation_fraction=0.1 --objective=none

# Masked LM alone (RoBERTa's choice: NSP teaches a model this small nothing) with AdamW at a
# peak rate of 3e-3, which a 2-layer model takes and which leaves the unigram plateau early.
echo "== 3/5 pretrain BERT-tiny for $steps steps on CPU (eval every 500 steps and at the end)"
"$py" -m bert_jax.train --config=configs/tiny.py --workdir="$out/run" \
  --config.data.data_dir="$out/data" --config.train.num_steps="$steps" \
  --config.checkpoint.every_steps=500 --config.eval.every_steps=500 \
  --config.optimizer.name=adamw --config.optimizer.learning_rate=3e-3 \
  --config.optimizer.warmup_steps=100

echo "== 4/5 export the final checkpoint for fine-tuning (HF safetensors + config + vocab)"
"$py" -m bert_jax.export --workdir="$out/run" --format=hf --output_dir="$out/export"

# Sentences that are not in the sample corpus (python-docs-sample.txt), one masked word each.
echo "== 5/5 fill-mask on sentences the model never saw"
"$py" -m bert_jax.fill_mask --model="$out/export" --top_k=3 \
  --text="the [MASK] function returns a new list with the items in sorted order." \
  --text="if the file does not exist, an [MASK] is raised." \
  --text="this module provides a way to read and write [MASK] files."

echo
"$py" - "$out/run/metrics.jsonl" <<'PY'
import json, sys
last = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "eval"][-1]
print(f"final eval at step {last['step']}: MLM accuracy {last['mlm_accuracy']:.3f} vs "
      f"{last['unigram_accuracy']:.3f} for always guessing the most frequent token "
      f"({last['mlm_accuracy'] / last['unigram_accuracy']:.1f}x)")
PY
echo
echo "Done. Where everything went:"
echo "  vocabulary        $out/vocab/vocab.txt"
datasets=("$out"/data/bert_pretraining/*/)  # the version directory prepare wrote
echo "  dataset (TFDS)    ${datasets[-1]%/}"
echo "  run               $out/run  (config.json, metrics.jsonl, checkpoints/, TensorBoard: train/ eval/)"
echo "  export (HF)       $out/export  (transformers.BertForMaskedLM.from_pretrained('$out/export'))"
echo "  last eval         $(grep '"kind": "eval"' "$out/run/metrics.jsonl" | tail -1)"
