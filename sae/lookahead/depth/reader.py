"""The model read at every swept layer in one forward, and rerun from an edited last position."""

from __future__ import annotations

import copy
import inspect
from collections import defaultdict
from collections.abc import Sequence

import torch

from sae.data.models import LoadedModel
from sae.lookahead.interventions import article_ids

# --------------------------------------------------------------------------- the model, read at every layer


def _base_and_norm(lm: LoadedModel):
    norm, head = lm.final_norm_and_unembedding()
    return lm.final_norm()[0], norm, head


class LayerReader:
    """Residuals of the swept layers at the last K prompt positions (one forward pass per
    batch, hooks on the blocks), the logit lens, and last-token reruns from a cached prefix
    with the residual after block L at the last position replaced."""

    def __init__(self, lm: LoadedModel, layers: Sequence[int], batch_size: int = 32, progress: bool = False):
        self.lm, self.layers = lm, list(layers)
        self.base, self.norm, self.head = _base_and_norm(lm)
        self.a_id, self.an_id = article_ids(lm.tokenizer)
        w = self.head.weight[[self.an_id, self.a_id]].detach().float()
        self.w_diff = w[0] - w[1]
        bias = getattr(self.head, "bias", None)
        self.b_diff = float(bias[self.an_id] - bias[self.a_id]) if bias is not None else 0.0
        self.batch_size, self.progress = batch_size, progress
        params = inspect.signature(self.base.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def lens(self, h: torch.Tensor) -> torch.Tensor:
        """ "... d" -> "...": logit(an) - logit(a) if the model stopped here (final norm, unembedding)."""
        with torch.no_grad():
            x = self.norm(h.to(self.lm.device, torch.float32)).float()
        return (x @ self.w_diff.to(x.device)).cpu() + self.b_diff

    def _head_ld(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return (last_hidden.float() @ self.w_diff.to(last_hidden.device)).cpu() + self.b_diff

    def groups(self, ids: list[list[int]]) -> list[list[int]]:
        """Prompt indices batched by length (no padding, so nothing to mask)."""
        by_len = defaultdict(list)
        for i, x in enumerate(ids):
            by_len[len(x)].append(i)
        return [idx[j:j + self.batch_size] for n in sorted(by_len) for idx in [by_len[n]]
                for j in range(0, len(idx), self.batch_size)]

    @torch.no_grad()
    def read(self, ids: list[list[int]], n_offsets: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> feats "prompt layer offset d" (offsets -K..-1; zeros where the prompt is shorter),
        valid "prompt offset" (a prompt token, not BOS), ld "prompt" at the output."""
        from tqdm.auto import tqdm

        n, d, k = len(ids), self.lm.d_model, n_offsets
        feats = torch.zeros(n, len(self.layers), k, d)
        valid = torch.zeros(n, k, dtype=torch.bool)
        ld = torch.zeros(n)
        box: dict[int, torch.Tensor] = {}

        def tap(layer):
            def grab(_m, _i, out):
                box[layer] = (out[0] if isinstance(out, tuple) else out).detach()
            return grab

        handles = [self.lm.layers[L].register_forward_hook(tap(L)) for L in self.layers]
        try:
            for idx in tqdm(self.groups(ids), desc="forward", disable=not self.progress, leave=False):
                x = torch.tensor([ids[i] for i in idx], device=self.lm.device)
                t = x.shape[1]
                out = self.base(input_ids=x, use_cache=False)
                ld[idx] = self._head_ld(out.last_hidden_state[:, -1])
                take = min(k, t)
                for j, L in enumerate(self.layers):
                    feats[idx, j, k - take:] = box[L][:, t - take:].float().cpu()
                first_prompt_token = 1 if self.lm.bos_id is not None and ids[idx[0]][0] == self.lm.bos_id else 0
                valid[idx, k - min(k, t - first_prompt_token):] = True
                box.clear()
        finally:
            for h in handles:
                h.remove()
        return feats, valid, ld

    @torch.no_grad()
    def rerun_last(self, ids: list[list[int]], layer: int, replacement: torch.Tensor, max_rows: int = 256,
                   then: Sequence[int] | None = None, targets: Sequence[int] | None = None):
        """ld "prompt variant" at the output when the residual after block `layer` at the
        last prompt position is replacement "prompt variant d" (earlier positions are as
        clean: a causal model's past cannot see the edit, so their keys and values are cached).
        With `then` (one token per prompt, fed after it: its article) and `targets` (one token
        per prompt: its noun's first), also log P(target | prompt, then) "prompt variant",
        the edit still at the prompt's last position: returns (ld, logp)."""
        from tqdm.auto import tqdm

        n, v, _ = replacement.shape
        out = torch.zeros(n, v)
        logp = torch.zeros(n, v)
        extra = 0 if then is None else 1
        block = self.lm.layers[layer]
        rows: dict[str, torch.Tensor] = {}

        def swap(_m, _i, o):
            h = o[0] if isinstance(o, tuple) else o
            h = h.clone()
            h[:, -1 - extra] = rows["h"].to(h.dtype)
            return (h, *o[1:]) if isinstance(o, tuple) else h

        handle = block.register_forward_hook(swap)
        try:
            for idx in tqdm(self.groups(ids), desc=f"edits at layer {layer}", disable=not self.progress, leave=False):
                x = torch.tensor([ids[i] for i in idx], device=self.lm.device)
                t = x.shape[1]
                handle.remove()  # the clean prefix
                pre = self.base(input_ids=x[:, :-1], use_cache=True)
                handle = block.register_forward_hook(swap)
                cache = getattr(pre, "cache", None)
                if cache is None:
                    cache = getattr(pre, "past_key_values", None)
                step = max(1, max_rows // len(idx))
                for v0 in range(0, v, step):
                    vs = min(step, v - v0)
                    c = copy.deepcopy(cache)
                    c.batch_repeat_interleave(vs)
                    rows["h"] = replacement[idx, v0:v0 + vs].reshape(len(idx) * vs, -1).to(self.lm.device)
                    last = x[:, -1:]
                    if extra:
                        last = torch.cat([last, torch.tensor([[then[i]] for i in idx], device=self.lm.device)], 1)
                    last = last.repeat_interleave(vs, 0)
                    pos = torch.arange(t - 1, t + extra, device=self.lm.device).expand(len(idx) * vs, -1)
                    o = self.base(input_ids=last, position_ids=pos, use_cache=True, **{self._cache_kw: c})
                    hid = o.last_hidden_state
                    out[idx, v0:v0 + vs] = self._head_ld(hid[:, 0]).view(len(idx), vs)
                    if extra:
                        lp = self.head(hid[:, 1]).float().log_softmax(-1)
                        tgt = torch.tensor([targets[i] for i in idx], device=lp.device).repeat_interleave(vs)
                        logp[idx, v0:v0 + vs] = lp.gather(1, tgt[:, None])[:, 0].cpu().view(len(idx), vs)
        finally:
            handle.remove()
        return out if then is None else (out, logp)
