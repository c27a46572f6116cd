"""BERT models (Flax NNX)."""
from bert_jax.models.bert import (
    BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, BertModel, BertOutput, PreTrainingOutput,
    QuestionAnsweringOutput, SequenceClassifierOutput, TASKS, TokenClassifierOutput,
    create_model)
from bert_jax.models.config import PRESETS, BertConfig, get_config
