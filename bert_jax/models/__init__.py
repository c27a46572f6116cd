"""BERT models (Flax NNX)."""
from bert_jax.models.bert import (
    BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, BertModel, BertOutput, MaskedLMOutput, PreTrainingOutput,
    QuestionAnsweringOutput, SequenceClassifierOutput, TASKS, TokenClassifierOutput,
    create_model)
from bert_jax.models.config import PRESETS, BertConfig, get_config
