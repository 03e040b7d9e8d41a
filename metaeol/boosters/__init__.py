"""Training-free boosters that stack with any prompt set, on both engine paths.

* :class:`TokenPrepending` (Fu et al., ACL 2025): a placeholder token before the sentence
  whose state, in early layers, is the previous layer's last-token state.
* :class:`ContrastivePrompting` (Cheng et al., 2025): an auxiliary prompt's attention
  output at one block is subtracted, scaled, from the main prompt's at its last token.

See docs/boosters.md for the definitions and where they deviate from the official code.
"""

from metaeol.boosters.contrastive import ContrastivePrompting
from metaeol.boosters.token_prepending import TokenPrepending

__all__ = ["ContrastivePrompting", "TokenPrepending"]
