"""Training-free boosters that stack with any prompt set, on both engine paths.

* :class:`TokenPrepending` (Fu et al., ACL 2025): a placeholder token before the sentence
  whose state, in early layers, is the previous layer's last-token state.

See docs/boosters.md for the definitions and where they deviate from the official code.
"""

from metaeol.boosters.token_prepending import TokenPrepending

__all__ = ["TokenPrepending"]
