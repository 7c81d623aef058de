"""One prompt under the microscope, for the explorer's Prompt lab: which features fire on
which token, how selected features line up around an anchor token, and what ablating or
steering them does to the next token (logit(" an") − logit(" a"), P(an), P(a), the top
next tokens). Built on sae.lookahead.interventions, so edits keep the SAE's error term: with no edit
the model's output is its clean output."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae.data.prompts import Prompt
from sae.errors import SaexError
from sae.lookahead.interventions import Edit, Intervener, Prepared, edit_residual, encode_prompts, position_mask


@dataclass
class PromptView:
    """A prompt as the model read it: `tokens[i]` with SAE activations `acts[i]`."""

    prepared: Prepared
    tokens: list[str]
    acts: torch.Tensor  # "pos d_sae", the prompt's tokens then the article slot
    special: torch.Tensor  # "pos" BOS/special tokens
    sink: torch.Tensor  # "pos" attention-sink (massive-activation) positions
    n_prompt: int  # positions up to and including the last prompt token

    def top_features(self, n: int = 10) -> list[int]:
        """Features with the largest activation on any ordinary prompt token."""
        ordinary = ~(self.special | self.sink)
        ordinary[self.n_prompt:] = False
        if not bool(ordinary.any()):
            return []
        peak = self.acts[ordinary].max(0).values
        order = peak.argsort(descending=True)[:n]
        return [int(f) for f in order if peak[f] > 0]

    def features_at(self, pos: int, n: int = 10) -> list[tuple[int, float]]:
        a = self.acts[pos]
        vals, idx = a.topk(min(n, len(a)))
        return [(int(i), float(v)) for v, i in zip(vals, idx) if v > 0]

    def aligned(self, features: list[int], anchor: int, before: int = 5,
                after: int = 2) -> dict[int, list[float | None]]:
        """Each feature's activation at offsets -before..+after from token `anchor` (None outside the prompt)."""
        out = {}
        for f in features:
            row = []
            for d in range(-before, after + 1):
                p = anchor + d
                row.append(float(self.acts[p, f]) if 0 <= p < self.n_prompt else None)
            out[int(f)] = row
        return out


def read_prompt(iv: Intervener, text: str) -> PromptView:
    """Run `text` (a prompt that ends where the next word would start) through the model up to the SAE."""
    text = text.rstrip()
    if not text:
        raise SaexError("the prompt is empty", "type some text")
    enc = encode_prompts(iv.lm.tokenizer, [Prompt(text, "thing", "a")])
    prepared = iv.prepare(enc)
    b = prepared.batches[0]
    ids = b.ids[0][b.valid[0]].tolist()
    tok = iv.lm.tokenizer
    n_prompt = enc[0].article_pos  # tokens before the article slot
    return PromptView(prepared, [tok.decode([i]) for i in ids[:n_prompt]], b.acts[0][:n_prompt].cpu(),
                      b.special[0][:n_prompt].cpu(), b.sink[0][:n_prompt].cpu(), n_prompt)


@dataclass
class NextToken:
    logit_diff: float  # logit(" an") - logit(" a")
    p_an: float
    p_a: float
    top: list[tuple[str, float]]  # the most likely next tokens with their probabilities


@torch.no_grad()
def next_token(iv: Intervener, view: PromptView, edit: Edit | None = None, top: int = 10) -> NextToken:
    """The model's next-token distribution after the prompt, with `edit` applied to its latents."""
    b = view.prepared.batches[0]
    h = b.h
    if edit is not None:
        h = edit_residual(iv.sae, b.h, b.acts, edit, position_mask(b, edit.positions, edit.include_sinks))
    logits = iv.upper.logits_at(b.ids, h, b.article_pos[:, None] - 1)[0, 0]
    p = logits.softmax(-1)
    vals, idx = p.topk(top)
    tok = iv.lm.tokenizer
    return NextToken(float(logits[iv.an_id] - logits[iv.a_id]), float(p[iv.an_id]), float(p[iv.a_id]),
                     [(tok.decode([int(i)]), float(v)) for v, i in zip(vals, idx)])
