"""The library behind sae-explorer: models, corpora, activation stores (and, as the
project grows, SAEs, feature indexes, lookahead analysis and annotations).

No Streamlit and no argparse in here: `training/` and `explorer/` drive this package.
"""

from sae.errors import SaexError

__all__ = ["SaexError"]
