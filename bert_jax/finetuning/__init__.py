"""Fine-tuning: tasks (classification, regression, tagging, SQuAD), readers, metrics, the run."""
