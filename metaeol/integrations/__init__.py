"""Adapters that plug MetaEOL into other libraries.

* :mod:`metaeol.integrations.mteb`: an MTEB (>= 2) model, a factory and a local STS-B task
  (``pip install "metaeol[mteb]"``).
* :mod:`metaeol.integrations.sentence_transformers`: a sentence-transformers module
  (``pip install "metaeol[sentence-transformers]"``).

Each submodule imports its library only when it is imported itself.
"""
