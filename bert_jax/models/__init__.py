"""Encoder models (Flax NNX): the BERT and ModernBERT families."""
from bert_jax.models.bert import (
    BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, BertModel, BertOutput, MaskedLMOutput, PreTrainingOutput,
    QuestionAnsweringOutput, SequenceClassifierOutput, TASKS, TokenClassifierOutput)
from bert_jax.models.config import (PRESETS, BertConfig, ModernBertConfig, config_from_dict,
                                    config_from_json_file, get_config)
from bert_jax.models.families import create_model, task_of
from bert_jax.models.modernbert import (
    ModernBertForMaskedLM, ModernBertForQuestionAnswering, ModernBertForSequenceClassification,
    ModernBertForTokenClassification, ModernBertModel)
