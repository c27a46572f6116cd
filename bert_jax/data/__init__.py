"""Data files shipped with bert_jax.

`SAMPLE_CORPUS`: path of a ~300 KB English corpus (Python library docs, PSF License; see
`sample/README.md`) in BERT's input format: one sentence per line, a blank line between documents.
"""

import os

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample")
SAMPLE_CORPUS = os.path.join(SAMPLE_DIR, "python-docs-sample.txt")
