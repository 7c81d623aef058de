"""How a model chooses the article on prompts it was not trained on: the measurements before and after.

Per prompt, at the position that chooses the article: logit(an) - logit(a) (written as the prompt writes it,
" an"/" a" or "An"/"A"), and log P(noun | prompt, right article) summed over the noun's tokens. Per set: sign
accuracy (the right article preferred), an-recall and a-recall (the right one preferred on an-nouns, on
a-nouns), the gap mean(ld | an-noun) - mean(ld | a-noun) with a bootstrap interval, P(right article) and
P(noun | right article). fp32, full forward passes (the prompts are short).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sae.data.prompts import Prompt
from sae.lookahead.interventions import encode_prompts
from sae.statistics import behaviour_summary


def _padded(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


def pad_id(tokenizer) -> int:
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


@torch.no_grad()
def article_choices(model, tokenizer, prompts: Sequence[Prompt], batch_size: int = 32,
                    device: torch.device | str = "cpu", progress: bool = False) -> dict[str, torch.Tensor]:
    """Per prompt: ld, logp_a, logp_an (at the article's position) and logp_noun (the noun's tokens after the
    right article)."""
    from tqdm.auto import tqdm

    encoded = encode_prompts(tokenizer, prompts, completion=True, suffix="")
    pad = pad_id(tokenizer)
    rows = {k: [] for k in ("ld", "logp_a", "logp_an", "logp_noun")}
    was_training = model.training
    model.eval()
    for i in tqdm(range(0, len(encoded), batch_size), desc="behaviour", disable=not progress, leave=False):
        chunk = encoded[i:i + batch_size]
        ids, mask = _padded([e.ids for e in chunk], pad)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for j, e in enumerate(chunk):
            at = logp[j, e.article_pos - 1]
            rows["logp_a"].append(at[e.a_id])
            rows["logp_an"].append(at[e.an_id])
            rows["ld"].append(logits[j, e.article_pos - 1, e.an_id] - logits[j, e.article_pos - 1, e.a_id])
            noun = range(e.article_pos + 1, len(e.ids))
            rows["logp_noun"].append(sum(logp[j, t - 1, e.ids[t]] for t in noun))
    model.train(was_training)
    return {k: torch.stack([torch.as_tensor(v) for v in vals]).cpu().double() for k, vals in rows.items()}


def summarise(choices: dict[str, torch.Tensor], prompts: Sequence[Prompt], n_boot: int = 2000,
              seed: int = 0) -> dict:
    """The lookahead's `behaviour_summary` (gap, right article preferred, P(right article)) under the names a
    fine-tune is judged by, plus P(noun | right article) and the per-prompt values."""
    is_an = torch.tensor([p.article == "an" for p in prompts])
    ld = choices["ld"]
    base = behaviour_summary(ld, choices["logp_a"], choices["logp_an"], is_an, n_boot, seed)
    a_pref_an = base["an_preferred_a_nouns"]
    return {"n": len(prompts), "n_an": int(is_an.sum()), "n_a": int((~is_an).sum()),
            "sign_accuracy": base["right_article_preferred"], "an_recall": base["an_preferred_an_nouns"],
            "a_recall": None if a_pref_an is None else 1.0 - a_pref_an, "gap": base["gap"],
            "p_right_article": base["mean_p_right_article"],
            "p_noun_given_article": float(choices["logp_noun"].exp().mean()),
            "per_prompt": [{"noun": p.noun, "article": p.article, "ld": round(float(d), 4),
                            "logp_noun": round(float(n), 4)} for p, d, n in zip(prompts, ld, choices["logp_noun"])]}


def measure(model, tokenizer, sets: dict[str, list[Prompt]], batch_size: int = 32, device="cpu",
            n_boot: int = 2000, seed: int = 0, progress: bool = False) -> dict[str, dict]:
    return {name: summarise(article_choices(model, tokenizer, prompts, batch_size, device, progress), prompts,
                            n_boot, seed)
            for name, prompts in sets.items()}
