"""bert_jax: pretrain and fine-tune encoders (BERT, ModernBERT) in JAX / Flax NNX."""

__version__ = "0.1.0"

from bert_jax.models import (  # noqa: F401
    BertConfig, BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering,
    BertForSequenceClassification, BertForTokenClassification, BertModel, ModernBertConfig,
    ModernBertForMaskedLM, ModernBertForQuestionAnswering, ModernBertForSequenceClassification,
    ModernBertForTokenClassification, ModernBertModel, create_model, get_config)
from bert_jax.interop import load_pretrained, save_pretrained  # noqa: F401,E402
