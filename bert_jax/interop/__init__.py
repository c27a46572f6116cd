"""Checkpoint interop: HF transformers, google-research/bert (TF1) and bert_jax exports."""
from bert_jax.interop.pretrained import (  # noqa: F401
    FORMATS, CheckpointError, detect_format, load_pretrained, named_tensors, save_pretrained)
