"""Lookahead across depth: at which layer, if any, is the upcoming article (a/an) or the
noun itself readable from the residual stream before the article, in directions an SAE
may or may not isolate, and does removing that direction change the choice?

Per swept layer L (the residual stream after block L, `blocks.L.hook_resid_post`):

- logit lens: logit(" an") - logit(" a") read through the final norm and unembedding at
  the last prompt position (offset -1, whose output chooses the article), mean per group
  (an-noun vs a-noun riddles) and the gap with a bootstrap interval;
- article probe: L2 logistic regression (plain torch, standardised features, the L2
  strength chosen by cross-validation on the training side only) on the residual at
  offsets -K..-1, trained on riddles of one half of the nouns (`split_of_noun`) and tested
  on riddles of the OTHER half (no noun on both sides), against a shuffled-label control
  (the same pipeline with the training labels permuted);
- noun-identity probe (offset -1): which of the candidate nouns the prompt leads to. Every
  noun appears in several frames (WordNet gloss riddle, the riddle after a dictionary line
  naming the noun, the explicit "article for 'noun'" prompt, a question and a dialogue
  frame); each frame in turn is held out, the probe trained on the others and tested on it,
  so the nouns are seen in training but never in the tested frame (identity over held-out
  nouns cannot be learnt);
- causal test: at offset -1 of the held-out riddles the component along the article
  probe's direction is set to its training mean (mean-centred projection), the rest of
  the model runs on, and the change in the an-vs-a gap of logit(an) - logit(a) at the
  output is compared with the same projection along random unit directions (z score,
  permutation p);
- where an SAE of that layer is given: its top features by separation (an- vs a-noun
  riddles at -1, training half) ablated at -1 with the SAE's error term kept, against
  random sets of as many features that fire on those prompts; and where that SAE loses the
  signal (`coverage.py`): the probe direction's an-vs-a separation split exactly between the
  SAE's reconstruction and its error term, probes retrained on each alone, and the gap
  removed when the error term (or every latent) is set to its mean at -1.

One forward pass with hooks on the swept blocks gives every layer's residual; the causal
edits rerun only the last prompt token from a cached prefix (the edit cannot change
earlier positions), batched over directions. fp32 throughout.
"""

from sae.lookahead.depth.answer import depth_answer, format_summary, layer_table
from sae.lookahead.depth.causal import compare_to_random, sae_edits
from sae.lookahead.depth.config import (
    ALPHA,
    FRAMES,
    IMPLIED,
    LAMBDAS,
    NAMED,
    PLOT_FILE,
    REPORT_FORMAT,
    DepthConfig,
)
from sae.lookahead.depth.coverage import probe_split, sae_coverage
from sae.lookahead.depth.plots import plot_depth
from sae.lookahead.depth.probes import Probe, article_probe, binomial_p, fit_probes, identity_probe
from sae.lookahead.depth.prompts import DepthPrompts, depth_prompts, frame_prompts
from sae.lookahead.depth.reader import LayerReader
from sae.lookahead.depth.run import default_out, read_depth_report, run_depth, sweep_layers
from sae.runs.files import DEPTH_DIR, REPORT_FILE

__all__ = ["ALPHA", "DEPTH_DIR", "FRAMES", "IMPLIED", "LAMBDAS", "NAMED", "PLOT_FILE", "REPORT_FILE", "REPORT_FORMAT",
           "DepthConfig", "DepthPrompts", "LayerReader", "Probe", "article_probe", "binomial_p", "compare_to_random",
           "default_out", "depth_answer", "depth_prompts", "fit_probes", "format_summary", "frame_prompts",
           "identity_probe", "layer_table", "plot_depth", "probe_split", "read_depth_report", "run_depth",
           "sae_coverage", "sae_edits", "sweep_layers"]
