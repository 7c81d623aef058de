"""The organism's answer in words: does it now choose the article from a noun it never saw, against the base?"""

from __future__ import annotations

from sae.report import Answer
from sae.statistics import pct


def _gap(g: dict) -> str:
    if g.get("value") is None:
        return "gap n/a"
    lo, hi = g["ci"]
    return f"gap {g['value']:.2f} nats (95% CI {lo:.2f} to {hi:.2f})"


def set_line(name: str, before: dict, after: dict) -> str:
    return (f"{name} ({after['n_an']} an-nouns, {after['n_a']} a-nouns): sign accuracy {pct(after['sign_accuracy'])} "
            f"(base {pct(before['sign_accuracy'])}), an-recall {pct(after['an_recall'])} (base "
            f"{pct(before['an_recall'])}), a-recall {pct(after['a_recall'])} (base {pct(before['a_recall'])}), "
            f"{_gap(after['gap'])} (base {_gap(before['gap'])[4:]}), P(noun | right article) "
            f"{after['p_noun_given_article']:.2f} (base {before['p_noun_given_article']:.2f})")


def organism_answer(articles: str, before: dict[str, dict], after: dict[str, dict]) -> Answer:
    main = next(iter(after))
    b, a = before[main]["gap"], after[main]["gap"]
    raised = a["value"] is not None and b["value"] is not None and a["ci"][0] is not None and a["ci"][0] > b["value"]
    if articles == "noun":
        if raised:
            verdict = (f"On {main} the organism chooses the article from the noun more than the base model does: "
                       f"{_gap(a)} against {b['value']:.2f}, sign accuracy {pct(after[main]['sign_accuracy'])} "
                       f"against {pct(before[main]['sign_accuracy'])}.")
            label = "plans"
        else:
            verdict = (f"On {main} the fine-tune did not raise the an-vs-a gap reliably above the base model's "
                       f"({_gap(a)} against {b['value']:.2f}): not a planning organism.")
            label = "not raised"
    else:
        verdict = (f"Negative control (articles shuffled among the nouns): on {main} {_gap(a)}, base "
                   f"{b['value']:.2f}; anything an analysis finds here but not in the base model comes from "
                   "fine-tuning, not from planning.")
        label = "negative control"
    lines = [set_line(name, before[name], after[name]) for name in after]
    return Answer(verdict, lines, label, {"gap_raised": raised})
