"""The training-free methods beyond MetaEOL's own prompts, each equal to its official code.

A method is prompts + pooling + boosters + post-processing; each module here holds one of them:

* :mod:`~metaeol.methods.demonstrations`: PromptEOL + ICL, a demonstration before each template
  (prompts; the official pool ships as ``scaling_sentemb``), and
  :mod:`~metaeol.methods.selection`, choosing it on STS-B dev;
* :mod:`~metaeol.methods.echo`: echo embeddings, the sentence twice, pooled over its second copy
  (prompts in ``prompt_sets/echo.yaml`` + pooling);
* :mod:`~metaeol.methods.embed_filter`: EmbedFilter, a projection onto the middle singular
  directions of the unembedding matrix (post-processing).

The boosters (token prepending, contrastive prompting) live in :mod:`metaeol.boosters`. See
docs/methods.md for the definitions and the exactness tests against the official code.
"""
