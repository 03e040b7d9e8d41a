"""Fault injection at the server's unit of work: ``MetaEOL.run_rows``, which the batcher calls
with the prompt rows of one or several requests."""

from __future__ import annotations


def row_texts(parts) -> list[str]:
    """The (prepared) input text of every row ``run_rows`` is asked to compute, in order."""
    return [rows.sentences[rows.sentence_of(i)] for rows, indices in parts for i in indices]
