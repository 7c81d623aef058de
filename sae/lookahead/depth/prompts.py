"""The prompts the sweep reads: riddles and the frames each noun appears in."""

from __future__ import annotations

from dataclasses import dataclass

from sae.data.prompts import (
    Prompt,
    explicit_prompt,
    in_context_prompt,
    load_prompt_file,
    riddle_set,
    split_of_noun,
)
from sae.errors import SaexError
from sae.lookahead.depth.config import FRAMES, DepthConfig

# --------------------------------------------------------------------------- prompts


@dataclass
class DepthPrompts:
    train: list[Prompt]  # article probe training: riddles of one half of the nouns
    test: list[Prompt]  # article probe test and causal edits: riddles of the other half
    identity: list[Prompt]  # every candidate noun in every frame (Prompt.condition = frame)
    sources: dict[str, str]


def frame_prompts(riddle: Prompt, gloss: str) -> list[Prompt]:
    """One noun in every frame of the identity probe (`FRAMES`)."""
    g = gloss[0].lower() + gloss[1:]
    q = Prompt(f"Q: What do you call {g}?\nA: It is called", riddle.noun, riddle.article, "question",
               riddle.pair, riddle.source)
    d = Prompt(f"User: What is the word for {g}?\nAssistant: It is called", riddle.noun, riddle.article,
               "dialogue", riddle.pair, riddle.source)
    n = riddle.noun
    nq = Prompt(f"Q: What do you call the {n}?\nA: It is called", n, riddle.article, "named_question",
                riddle.pair, riddle.source)
    nd = Prompt(f"User: What is the word for the {n}?\nAssistant: It is called", n, riddle.article,
                "named_dialogue", riddle.pair, riddle.source)
    return [riddle, q, d, in_context_prompt(riddle, g), explicit_prompt(n, riddle.article), nq, nd]


def depth_prompts(cfg: DepthConfig, tokenizer) -> DepthPrompts:
    if cfg.prompts is not None:
        given = load_prompt_file(cfg.prompts)
        train = [p for p in given if split_of_noun(p.noun) == "select"]
        test = [p for p in given if split_of_noun(p.noun) == "test"]
        seen = {}
        for p in given:
            seen.setdefault(p.noun, p)
        identity = list(given) + [explicit_prompt(n, p.article) for n, p in seen.items()
                                  if not any(q.noun == n and q.condition == "explicit" for q in given)]
        src = {"article": f"{cfg.prompts}, nouns split in halves by name",
               "identity": f"{cfg.prompts} (frames: its conditions) + the explicit prompt"}
    else:
        def short(noun: str) -> bool:
            return len(tokenizer(" " + noun, add_special_tokens=False)["input_ids"]) <= cfg.max_noun_tokens

        tr = riddle_set(cfg.riddles_per_article, "select", cfg.seed, short)
        te = riddle_set(cfg.riddles_per_article, "test", cfg.seed, short)
        train, test = [r.prompt for r in tr], [r.prompt for r in te]
        half = cfg.identity_nouns // 2
        pool = te + tr
        chosen = ([r for r in pool if r.prompt.article == "an"][:half]
                  + [r for r in pool if r.prompt.article == "a"][:cfg.identity_nouns - half])
        identity = [p for r in chosen for p in frame_prompts(r.prompt, r.gloss)]
        src = {"article": "WordNet riddles; training: the 'select' half of the nouns, test: the 'test' half",
               "identity": f"{len(chosen)} nouns of those riddles, each in the frames {', '.join(FRAMES)}"}
    for name, ps in (("training", train), ("test", test)):
        if {p.article for p in ps} != {"a", "an"}:
            raise SaexError(f"the {name} half of the nouns has no prompts of both articles ({len(ps)} prompts)",
                            "give more prompts (--riddles-per-article, or more nouns in --prompts)")
    return DepthPrompts(train, test, identity, src)
