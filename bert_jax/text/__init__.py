"""Text: WordPiece / SentencePiece tokenizers and vocabulary training."""
