"""bert_jax: pretrain and fine-tune encoders (BERT, ModernBERT) in JAX / Flax NNX."""

__version__ = "0.1.0"

from bert_jax.models import (  # noqa: F401
    BertConfig, BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering,
    BertForSequenceClassification, BertForTokenClassification, BertModel, ModernBertConfig,
    ModernBertForMaskedLM, ModernBertForQuestionAnswering, ModernBertForSequenceClassification,
    ModernBertForTokenClassification, ModernBertModel, create_model, get_config)
from bert_jax.interop import load_pretrained, save_pretrained  # noqa: F401,E402
# `fill_mask` is the function; `python -m bert_jax.fill_mask` (the command line) still runs,
# and once that module is imported the attribute is the module, which calls the function.
from bert_jax.inference import encode, fill_mask  # noqa: F401,E402
