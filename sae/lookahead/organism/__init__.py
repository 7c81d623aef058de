"""A model organism of a/an planning: the default model fine-tuned to choose " an" or " a" from the noun it is
about to write, so that the instrument can be shown to find planning where it exists (a positive control),
and the same fine-tune with the articles shuffled among the nouns (a negative control: what fine-tuning alone
leaves behind).

`build_organism(OrganismConfig(out=..., articles="noun"|"shuffled"))` draws the training prompts from one half
of the nouns (`data`), measures the base model's article choice on nouns it never saw (`behaviour`), fine-tunes
(`finetune`), measures again, and writes an HF model folder with `organism.json` (data, split, seed, settings,
behaviour before and after): every command takes that folder as `--model`.
"""

from sae.lookahead.organism.answer import organism_answer
from sae.lookahead.organism.behaviour import article_choices, measure, summarise
from sae.lookahead.organism.config import ARTICLE_MODES, MANIFEST_FILE, PARTIAL_DIR, OrganismConfig
from sae.lookahead.organism.data import OrganismData, eval_sets, organism_data, shuffle_articles
from sae.lookahead.organism.finetune import batch_loss, finetune, lr_factor, make_batch
from sae.lookahead.organism.run import build_organism, read_manifest

__all__ = ["ARTICLE_MODES", "MANIFEST_FILE", "PARTIAL_DIR", "OrganismConfig", "OrganismData", "article_choices",
           "batch_loss", "build_organism", "eval_sets", "finetune", "lr_factor", "make_batch", "measure",
           "organism_answer", "organism_data", "read_manifest", "shuffle_articles", "summarise"]
