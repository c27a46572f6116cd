#!/usr/bin/env bash
# The whole pipeline on the bundled sample corpus, on this machine's CPU (about 4 minutes on
# 2 cores, plus a few minutes of first-time setup):
#   vocab -> prepare (TFDS dataset) -> pretrain BERT-tiny -> evaluate -> export (HF safetensors)
# Usage: launch/demo.sh [OUTPUT_DIR] [STEPS]      (defaults: demo_output, 600)
# Re-running starts over in OUTPUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-demo_output}"
steps="${2:-600}"
launch/setup_venv.sh
py=.venv/bin/python
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2 TOKENIZERS_PARALLELISM=false
corpus=$("$py" -c "from bert_jax.data import SAMPLE_CORPUS; print(SAMPLE_CORPUS)")
rm -rf "$out"
mkdir -p "$out"

echo "== 1/4 vocabulary (WordPiece, uncased) from $corpus"
"$py" -m bert_jax.vocab --input="$corpus" --output_dir="$out/vocab" --vocab_size=5000 \
  --kind=wordpiece --lower_case

echo "== 2/4 pretraining examples (NSP pairs, dynamic masking) as a TFDS dataset"
"$py" -m bert_jax.prepare --input="$corpus" --vocab="$out/vocab/vocab.txt" \
  --data_dir="$out/data" --max_seq_length=128 --max_predictions_per_seq=20 \
  --validation_fraction=0.1

echo "== 3/4 pretrain BERT-tiny for $steps steps on CPU (eval every 200 steps and at the end)"
"$py" -m bert_jax.train --config=configs/tiny.py --workdir="$out/run" \
  --config.data.data_dir="$out/data" --config.train.num_steps="$steps" \
  --config.checkpoint.every_steps=200 --config.eval.every_steps=200 \
  --config.optimizer.warmup_steps=60

echo "== 4/4 export the final checkpoint for fine-tuning (HF safetensors + config + vocab)"
"$py" -m bert_jax.export --workdir="$out/run" --format=hf --output_dir="$out/export"

echo
echo "Done. Where everything went:"
echo "  vocabulary        $out/vocab/vocab.txt"
datasets=("$out"/data/bert_pretraining/*/)  # the version directory prepare wrote
echo "  dataset (TFDS)    ${datasets[-1]%/}"
echo "  run               $out/run  (config.json, metrics.jsonl, checkpoints/, TensorBoard: train/ eval/)"
echo "  export (HF)       $out/export  (transformers.BertForPreTraining.from_pretrained('$out/export'))"
echo "  last eval         $(grep '"kind": "eval"' "$out/run/metrics.jsonl" | tail -1)"
