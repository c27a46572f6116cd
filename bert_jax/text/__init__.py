"""Text: WordPiece / SentencePiece / HF tokenizer.json tokenizers and vocabulary training."""
