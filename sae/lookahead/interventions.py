"""Causal tests on SAE features: ablate, clamp or steer latents at chosen positions and
read what the model then says about the article, plus gradient x activation attribution
to logit(" an") - logit(" a").

The SAE's error term is kept: at an edited position the residual stream becomes
    h' = h + decode(edited latents) - decode(latents),
so only the edit's own change enters the model. With no edit h' is h exactly and the
model's output is the clean output, however imperfect the SAE's reconstruction.

Positions are named by their offset from the article token (0): the position whose
output chooses the article is -1, earlier prompt tokens are -2, -3, ... BOS/special
tokens and attention-sink positions (massive activations: residual norm above the
harvest's outlier threshold) are left alone unless asked for, because editing them
moves every logit at once; `positions="sinks"` edits only them, to report their effect
separately.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch

from sae.data.forward import ResidualReader, UpperForward
from sae.data.harvest import OUTLIER_FACTOR
from sae.data.models import LoadedModel
from sae.data.prompts import Prompt, article_text
from sae.data.store import MANIFEST_FILE
from sae.errors import SaexError
from sae.runs.load import LoadedSAE

Op = Literal["ablate", "clamp", "steer", "scale"]
OPS: tuple[str, ...] = get_args(Op)
NAMED_POSITIONS = ("prompt", "last", "before", "article", "all", "sinks")
SINK_FACTOR = OUTLIER_FACTOR  # the harvest's outlier rule, used when the SAE's training store records no threshold


def article_ids(tokenizer, form: str = " a") -> tuple[int, int]:
    """Token ids of the article written as `form` (" a" -> " a", " an"; "A" -> "A", "An"):
    each must be one token."""
    out = []
    for text in (article_text("a", form), article_text("an", form)):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise SaexError(f"the tokenizer splits {text!r} into {len(ids)} tokens",
                            f"the a/an analysis needs a model whose tokenizer has {text!r} as a single token")
        out.append(ids[0])
    return out[0], out[1]


# --------------------------------------------------------------------------- tokenised prompts


@dataclass
class Encoded:
    """A prompt as token ids: BOS + prompt + article token (+ the completion, for profiles)."""

    prompt: Prompt
    ids: list[int]
    article_pos: int  # index of the article token in ids
    noun_id: int  # first token of " noun": P(noun | prompt, article) is read at article_pos
    a_id: int = -1  # the two articles as this prompt writes them (Prompt.form)
    an_id: int = -1


def encode_prompts(tokenizer, prompts: Sequence[Prompt], completion: bool = False,
                   suffix: str | Sequence[str] = ".") -> list[Encoded]:
    """Prompt pieces are tokenised apart and joined, so the article's index is known
    exactly (byte-level BPE splits before a space anyway). With `completion`, " noun" and
    `suffix` (one for all, or one per prompt) follow the article, for activation
    profiles after it."""
    suffixes = [suffix] * len(prompts) if isinstance(suffix, str) else list(suffix)
    forms: dict[str, tuple[int, int]] = {}
    bos = getattr(tokenizer, "bos_token_id", None)
    out = []
    for p, tail in zip(prompts, suffixes):
        if p.article not in ("a", "an"):
            raise SaexError(f"prompt {p.prompt!r} has article {p.article!r}", "use 'a' or 'an'")
        if p.form not in forms:
            forms[p.form] = article_ids(tokenizer, p.form)
        a_id, an_id = forms[p.form]
        body = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        if not body:
            raise SaexError(f"prompt for {p.noun!r} is empty", "give a non-empty prompt")
        # A chat-template text starts with its own BOS-like token; a second one would be unseen input.
        head = [bos] if bos is not None and body[0] != bos else []
        noun = tokenizer(" " + p.noun, add_special_tokens=False)["input_ids"]
        ids = head + body + [an_id if p.article == "an" else a_id]
        if completion:
            ids += noun + (tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else [])
        out.append(Encoded(p, ids, len(head) + len(body), noun[0], a_id, an_id))
    return out


# --------------------------------------------------------------------------- the split model


# --------------------------------------------------------------------------- edits


@dataclass(frozen=True)
class Edit:
    """A change to SAE latents. op: ablate (set to 0), clamp (set to value), steer (add
    value: value x the decoder direction enters the residual), scale (multiply by value).
    value: one number, or one per feature. positions: prompt (every prompt token, offsets
    <= -1), last (-1, where the article is chosen), before (<= -2), article (0), all
    (<= 0), sinks (BOS/special and sink positions only), or offsets "-3:-1" / "-1,-4".
    BOS, special and sink positions are skipped unless include_sinks (or "sinks")."""

    features: tuple[int, ...]
    op: Op = "ablate"
    value: float | tuple[float, ...] = 0.0
    positions: str = "prompt"
    include_sinks: bool = False

    def __post_init__(self):
        if self.op not in OPS:
            raise SaexError(f"unknown edit {self.op!r}", f"use one of {', '.join(OPS)}")
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        if isinstance(self.value, (list, tuple)):
            if len(self.value) != len(self.features):
                raise SaexError(f"{len(self.value)} values for {len(self.features)} features",
                                "give one value, or one per feature")
            object.__setattr__(self, "value", tuple(float(v) for v in self.value))
        parse_positions(self.positions)


def parse_positions(spec: str) -> str | list[int]:
    """A named position set, or a list of offsets from "a:b" (inclusive) / "a,b,c"."""
    spec = str(spec).strip()
    if spec in NAMED_POSITIONS:
        return spec
    m = re.fullmatch(r"(-?\d+):(-?\d+)", spec)
    if m and int(m[1]) <= int(m[2]):
        return list(range(int(m[1]), int(m[2]) + 1))
    if re.fullmatch(r"-?\d+(\s*,\s*-?\d+)*", spec):
        return [int(x) for x in spec.split(",")]
    raise SaexError(f"bad positions {spec!r}",
                    f"use {', '.join(NAMED_POSITIONS)}, a range of offsets from the article such as -3:-1, "
                    "or a list such as -1,-2")


@dataclass
class Batch:
    """Prompts of one forward pass, right-padded (causal attention: padding after a
    sequence cannot change it), with their residual and SAE latents at the hook."""

    items: list[Encoded]
    ids: torch.Tensor  # "b p"
    offsets: torch.Tensor  # "b p": position - article position
    valid: torch.Tensor  # "b p": not padding
    special: torch.Tensor  # "b p": BOS/special tokens
    sink: torch.Tensor  # "b p": massive-activation positions (norm above the threshold), not special
    h: torch.Tensor  # "b p d_model"
    acts: torch.Tensor  # "b p d_sae"

    @property
    def article_pos(self) -> torch.Tensor:
        return torch.tensor([e.article_pos for e in self.items], device=self.ids.device)

    @property
    def ordinary(self) -> torch.Tensor:
        return self.valid & ~self.special & ~self.sink

    def article_logit_diff(self, logits: torch.Tensor) -> torch.Tensor:
        """ "b vocab" logits at the article's choice -> logit(an) - logit(a), each prompt's
        articles written its own way (" an"/" a", or "An"/"A" in a chat answer)."""
        an = torch.tensor([e.an_id for e in self.items], device=logits.device)
        a = torch.tensor([e.a_id for e in self.items], device=logits.device)
        return logits.gather(-1, an[:, None]).squeeze(-1) - logits.gather(-1, a[:, None]).squeeze(-1)

    def article_ids(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """ "b" ids of each prompt's " a" and " an" (in its form)."""
        return (torch.tensor([e.a_id for e in self.items], device=device),
                torch.tensor([e.an_id for e in self.items], device=device))


def position_mask(batch: Batch, positions: str, include_sinks: bool = False) -> torch.Tensor:
    spec = parse_positions(positions)
    off = batch.offsets
    if spec == "sinks":
        return batch.valid & (batch.special | batch.sink)
    named = {"prompt": off <= -1, "last": off == -1, "before": off <= -2, "article": off == 0, "all": off <= 0}
    mask = named[spec] if isinstance(spec, str) else torch.isin(off, torch.tensor(spec, device=off.device))
    return mask & (batch.valid if include_sinks else batch.ordinary)


def edit_latents(acts: torch.Tensor, edit: Edit) -> torch.Tensor:
    """ "n d_sae" -> edited copy."""
    out = acts.clone()
    f = torch.tensor(edit.features, dtype=torch.long, device=acts.device)
    if len(f) and (int(f.min()) < 0 or int(f.max()) >= acts.shape[-1]):
        raise SaexError(f"feature ids {list(edit.features)} out of range for an SAE of {acts.shape[-1]} latents",
                        f"use ids from 0 to {acts.shape[-1] - 1}")
    v = torch.as_tensor(edit.value, dtype=acts.dtype, device=acts.device)
    if edit.op == "ablate":
        out[:, f] = 0
    elif edit.op == "clamp":
        out[:, f] = v.expand(len(f)).expand(len(out), -1)
    elif edit.op == "steer":
        out[:, f] += v
    else:
        out[:, f] *= v
    return out


def edit_residual(sae: LoadedSAE, h: torch.Tensor, acts: torch.Tensor, edit: Edit | None,
                  mask: torch.Tensor) -> torch.Tensor:
    """h' = h + decode(edited) - decode(acts) where `mask` is set; h elsewhere (exactly)."""
    if edit is None or not edit.features or not bool(mask.any()):
        return h
    idx = mask.nonzero(as_tuple=True)
    a = acts[idx]
    delta = sae.decode(edit_latents(a, edit)) - sae.decode(a)
    out = h.clone()
    out[idx] += delta.to(h.dtype)
    return out


# --------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """Per prompt, in input order: logit(an) - logit(a) at the article's choice (-1),
    log P of both articles there, and log P(noun's first token | prompt, right article)."""

    ld: torch.Tensor
    logp_a: torch.Tensor
    logp_an: torch.Tensor
    logp_noun: torch.Tensor
    is_an: torch.Tensor  # bool: the noun takes "an"

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("ld", "logp_a", "logp_an", "logp_noun")}


@dataclass
class Attribution:
    """Gradient x activation of every latent for d[logit(an) - logit(a)] at -1.

    attr: "prompt offset d_sae" at ordinary prompt positions, offsets `offsets` (-K..-1);
    sink_attr: "prompt d_sae" summed over BOS/special and sink positions (reported apart);
    grad_sum, grad_count: "offset d_sae" summed gradient per unit of latent at ordinary
    positions, and "offset" how many positions went into it (see `grad_mean`)."""

    offsets: list[int]
    attr: torch.Tensor
    sink_attr: torch.Tensor
    grad_sum: torch.Tensor
    grad_count: torch.Tensor
    ld: torch.Tensor

    def grad_mean(self, offsets: Sequence[int] | None = None) -> torch.Tensor:
        """ "d_sae": mean gradient of logit(an) - logit(a) per unit of each latent over the
        ordinary positions at `offsets` (all by default): its sign says which way a latent
        added there pushes the article."""
        rows = [i for i, o in enumerate(self.offsets) if offsets is None or o in set(offsets)]
        n = float(self.grad_count[rows].sum())
        return (self.grad_sum[rows].sum(0) / max(n, 1.0)).float()


@dataclass
class Prepared:
    batches: list[Batch]
    n: int
    sink_threshold: float
    sink_threshold_source: str
    n_sinks: int = field(default=0)

    @property
    def items(self) -> list[Encoded]:
        return [e for b in self.batches for e in b.items]

    @property
    def is_an(self) -> torch.Tensor:
        return torch.tensor([e.prompt.article == "an" for e in self.items])


class Intervener:
    """The model split at the SAE's hook: blocks 0..L once per prompt set (`prepare`),
    blocks L+1.. once per edit (`run`)."""

    def __init__(self, lm: LoadedModel, sae: LoadedSAE, sink_threshold: float | None = None,
                 sink_threshold_source: str = "", batch_size: int = 16, progress: bool = False):
        self.lm, self.sae = lm, sae
        self.a_id, self.an_id = article_ids(lm.tokenizer)
        if sae.hook_name is None and sae.module_path is None:
            raise SaexError(f"the SAE in {sae.path} records no hook point", "give an SAE trained by saex train, "
                            "or add metadata.hook_name (blocks.L.hook_resid_post) to its cfg.json")
        from sae.runs.load import check_sae_fits

        check_sae_fits(sae, lm)
        hook = lm.hook_point(sae.hook_name or sae.module_path)
        layer = hook.layer
        self.reader = ResidualReader(lm, hook, precision="fp32")
        self.sink_threshold = sink_threshold
        self.sink_threshold_source = sink_threshold_source
        self.batch_size = int(batch_size)
        self.progress = progress
        vocab = lm.model.get_input_embeddings().weight.shape[0]
        probe = (torch.arange(2 * 12).reshape(2, 12) * 7 + 3) % vocab
        self.upper = UpperForward(lm, layer, probe.to(lm.device), self._residual(probe))
        self.pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0

    def _residual(self, ids: torch.Tensor) -> torch.Tensor:
        return self.reader(ids.to(self.lm.device)).to(self.lm.device)

    def prepare(self, encoded: Sequence[Encoded], desc: str = "residual") -> Prepared:
        """Run blocks 0..L and encode with the SAE; find sink positions."""
        from tqdm.auto import tqdm

        if not encoded:
            raise SaexError("an empty prompt set", "give at least one prompt")
        dev = self.lm.device
        special_ids = torch.tensor(self.lm.special_ids or [-1], device=dev)
        batches = []
        for i in tqdm(range(0, len(encoded), self.batch_size), desc=desc, disable=not self.progress, leave=False):
            items = list(encoded[i:i + self.batch_size])
            width = max(len(e.ids) for e in items)
            ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
            for r, e in enumerate(items):
                ids[r, :len(e.ids)] = torch.tensor(e.ids)
            ids = ids.to(dev)
            lengths = torch.tensor([len(e.ids) for e in items], device=dev)
            pos = torch.arange(width, device=dev).expand(len(items), -1)
            valid = pos < lengths[:, None]
            h = self._residual(ids)
            acts = self.sae.encode(h).to(dev)
            if not torch.isfinite(h).all():
                raise SaexError("NaN/inf in the model's residual stream on these prompts", "use --device cpu / fp32")
            art = torch.tensor([e.article_pos for e in items], device=dev)
            batches.append(Batch(items, ids, pos - art[:, None], valid, torch.isin(ids, special_ids) & valid,
                                 torch.zeros_like(valid), h, acts))
        threshold, source = self.sink_threshold, self.sink_threshold_source
        if threshold is None:
            norms = torch.cat([b.h.norm(dim=-1)[b.valid & ~b.special] for b in batches])
            threshold = SINK_FACTOR * float(norms.median())
            source = f"{SINK_FACTOR:g} x the median residual norm of these prompts' ordinary tokens"
        n_sinks = 0
        for b in batches:
            b.sink = (b.h.norm(dim=-1) > threshold) & b.valid & ~b.special
            n_sinks += int(b.sink.sum())
        return Prepared(batches, len(encoded), threshold, source, n_sinks)

    def run(self, prepared: Prepared, edit: Edit | None = None) -> Outcome:
        def residual(b: Batch) -> torch.Tensor:
            if edit is None:
                return b.h
            return edit_residual(self.sae, b.h, b.acts, edit, position_mask(b, edit.positions, edit.include_sinks))

        return self._outcome(prepared, residual)

    @torch.no_grad()
    def error_mean(self, prepared: Prepared, positions: str | list[int] = "prompt") -> torch.Tensor:
        """ "d": the SAE's mean error term, h - decode(latents), over `positions` (ordinary ones)."""
        total, n = torch.zeros(self.lm.d_model, dtype=torch.float64), 0
        for b in prepared.batches:
            mask = position_mask(b, positions)
            err = b.h[mask] - self.sae.decode(b.acts[mask]).to(b.h.dtype)
            total += err.double().sum(0).cpu()
            n += len(err)
        return (total / max(n, 1)).float()

    def run_error_at_mean(self, prepared: Prepared, positions: str | list[int], mean: torch.Tensor) -> Outcome:
        """The outcome with the SAE's error term replaced by `mean` at `positions` (ordinary ones),
        every latent kept: what the model does when only the SAE's latents carry those positions."""
        def residual(b: Batch) -> torch.Tensor:
            mask = position_mask(b, positions)
            out = b.h.clone()
            out[mask] = self.sae.decode(b.acts[mask]).to(b.h.dtype) + mean.to(b.h.device, b.h.dtype)
            return out

        return self._outcome(prepared, residual)

    @torch.no_grad()
    def _outcome(self, prepared: Prepared, residual) -> Outcome:
        rows = {k: [] for k in ("ld", "logp_a", "logp_an", "logp_noun")}
        for b in prepared.batches:
            h = residual(b)
            logits = self._logits(b, h)
            logp = logits.log_softmax(-1)
            noun = torch.tensor([e.noun_id for e in b.items], device=logits.device)
            a_ids, an_ids = b.article_ids(logits.device)
            rows["ld"].append(b.article_logit_diff(logits[:, 0]))
            rows["logp_a"].append(logp[:, 0].gather(-1, a_ids[:, None]).squeeze(-1))
            rows["logp_an"].append(logp[:, 0].gather(-1, an_ids[:, None]).squeeze(-1))
            rows["logp_noun"].append(logp[:, 1].gather(-1, noun[:, None]).squeeze(-1))
        out = {k: torch.cat(v).cpu() for k, v in rows.items()}
        return Outcome(**out, is_an=prepared.is_an)

    def _logits(self, b: Batch, h: torch.Tensor) -> torch.Tensor:
        """ "b 2 vocab": at the article's choice (-1) and at the article (0)."""
        art = b.article_pos
        return self.upper.logits_at(b.ids, h, torch.stack([art - 1, art], 1))

    def attribute(self, prepared: Prepared) -> Attribution:
        """Gradient x activation for logit(an) - logit(a), every latent, every prompt position."""
        k = max(e.article_pos for e in prepared.items)
        offsets = list(range(-k, 0))
        d_sae = self.sae.d_sae
        attr = torch.zeros(prepared.n, k, d_sae)
        sink_attr = torch.zeros(prepared.n, d_sae)
        grad_sum = torch.zeros(k, d_sae, dtype=torch.float64)
        grad_count = torch.zeros(k)
        lds = []
        row = 0
        for b in prepared.batches:
            acts = b.acts.detach()
            ld, grad = self._latent_grad(b, lambda h: b.article_logit_diff(self._logits(b, h)[:, 0]))
            ga = (grad * acts).cpu()
            ordinary = (b.ordinary & (b.offsets <= -1)).cpu()
            sinks = (b.valid & (b.special | b.sink) & (b.offsets <= -1)).cpu()
            for r in range(len(b.items)):
                sel = ordinary[r].nonzero().squeeze(-1)
                attr[row + r, (b.offsets[r].cpu()[sel] + k)] = ga[r, sel]
                sink_attr[row + r] = ga[r][sinks[r]].sum(0)
            g = grad.detach().cpu()
            slot = (b.offsets.cpu() + k)[ordinary]  # offset -K..-1 -> row 0..K-1
            grad_sum.index_add_(0, slot, g[ordinary].double())
            grad_count.index_add_(0, slot, torch.ones(len(slot)))
            lds.append(ld.detach().cpu())
            row += len(b.items)
        return Attribution(offsets, attr, sink_attr, grad_sum, grad_count, torch.cat(lds))

    def _latent_grad(self, b: Batch, target) -> tuple[torch.Tensor, torch.Tensor]:
        """target(h) "b" for the batch's residual h, and its gradient with respect to every
        latent at every position. h is b.h + decode(latents) - decode(b.acts): equal to b.h at
        the clean latents, so the SAE's error term stays and the gradient runs through decode."""
        decode = self.sae.sae.decode
        acts = b.acts.detach()
        leaf = acts.clone().requires_grad_(True)
        with torch.no_grad():
            base = decode(acts)
        with torch.enable_grad():
            value = target(b.h + (decode(leaf) - base))
            (grad,) = torch.autograd.grad(value.sum(), leaf)
        return value.detach(), grad

    def attribute_noun(self, prepared: Prepared) -> torch.Tensor:
        """ "prompt d_sae": gradient x activation of every latent for logit(noun's first token)
        at the article (offset 0), summed over the ordinary positions up to and including the
        article: ablating a latent lowers that logit by about its attribution."""
        out = []
        for b in prepared.batches:
            acts = b.acts.detach()
            noun = torch.tensor([e.noun_id for e in b.items], device=acts.device)

            def noun_logit(h, b=b, noun=noun):
                return self.upper.logits_at(b.ids, h, b.article_pos[:, None])[:, 0].gather(-1, noun[:, None])[:, 0]

            _, grad = self._latent_grad(b, noun_logit)
            keep = (b.ordinary & (b.offsets <= 0)).unsqueeze(-1)
            out.append((grad * acts * keep).sum(1).detach().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def clean_logits(self, prepared: Prepared, edit: Edit | None = None) -> list[torch.Tensor]:
        """Full logits "pos vocab" per prompt (up to its length), with `edit` applied: for tests
        and for checking the splice against the plain model."""
        out = []
        for b in prepared.batches:
            h = b.h if edit is None else edit_residual(self.sae, b.h, b.acts, edit,
                                                       position_mask(b, edit.positions, edit.include_sinks))
            pos = torch.arange(b.ids.shape[1], device=b.ids.device).expand(len(b.items), -1)
            logits = self.upper.logits_at(b.ids, h, pos)
            out += [logits[r, :len(e.ids)].cpu() for r, e in enumerate(b.items)]
        return out


def subset(prepared: Prepared, rows: Sequence[int]) -> Prepared:
    """The prompts `rows` (indices in prepared.items order) of a prepared set, as their own
    set: their residuals and latents are reused, nothing is recomputed."""
    rows = sorted(int(r) for r in rows)
    batches, start = [], 0
    for b in prepared.batches:
        mine = [r - start for r in rows if start <= r < start + len(b.items)]
        start += len(b.items)
        if not mine:
            continue
        idx = torch.tensor(mine, device=b.ids.device)
        width = int(b.valid[idx].sum(1).max())
        batches.append(Batch([b.items[i] for i in mine], b.ids[idx, :width], b.offsets[idx, :width],
                             b.valid[idx, :width], b.special[idx, :width], b.sink[idx, :width],
                             b.h[idx, :width], b.acts[idx, :width]))
    n_sinks = sum(int(b.sink.sum()) for b in batches)
    return Prepared(batches, len(rows), prepared.sink_threshold, prepared.sink_threshold_source, n_sinks)


# --------------------------------------------------------------------------- controls


def decoder_directions(sae: LoadedSAE) -> torch.Tensor:
    """ "d_sae d_in": what one unit of each latent adds to the reconstruction (W_dec for
    most SAEs; divided by the row norm when sae-lens rescales by decoder norm)."""
    base = sae.decode(torch.zeros(1, sae.d_sae, device=sae.device))
    rows = []
    for start in range(0, sae.d_sae, 4096):  # an identity of d_sae rows at once is d_sae^2 floats
        n = min(4096, sae.d_sae - start)
        eye = torch.zeros(n, sae.d_sae, device=sae.device)
        eye[torch.arange(n), torch.arange(start, start + n)] = 1.0
        rows.append(sae.decode(eye) - base)
    return torch.cat(rows)


def typical_activation(prepared: Prepared, features: Sequence[int]) -> torch.Tensor:
    """Mean activation of each feature where it fires at ordinary prompt positions (the
    unit of steering doses); the mean over all firing features where one never fires."""
    f = torch.tensor(list(features), dtype=torch.long)
    total = torch.zeros(len(f), dtype=torch.float64)
    count = torch.zeros(len(f), dtype=torch.float64)
    all_sum, all_n = 0.0, 0
    for b in prepared.batches:
        a = b.acts[(b.ordinary & (b.offsets <= -1))].cpu()
        sub = a[:, f]
        total += sub.clamp_min(0).double().sum(0)
        count += (sub > 0).double().sum(0)
        all_sum += float(a[a > 0].double().sum())
        all_n += int((a > 0).sum())
    fallback = all_sum / all_n if all_n else 1.0
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, fallback)).float()


def sink_threshold(sae) -> tuple[float | None, str]:
    """The outlier threshold of the store the SAE was trained on (the same rule that flagged
    massive activations at harvest time), when it can be read."""
    store = (sae.run or {}).get("store")
    if store:
        try:
            manifest = json.loads((Path(store) / MANIFEST_FILE).read_text())
            if manifest.get("outlier_threshold"):
                return float(manifest["outlier_threshold"]), f"outlier_threshold of {store}"
        except (OSError, json.JSONDecodeError):
            pass
    return None, ""
