"""Evaluate an SAE on held-out text: reconstruction from the stored activations, and
what splicing it into the model does to the next-token loss.

Two passes, both over the same held-out activation store:

1. Reconstruction (every stored vector, streamed shard by shard): MSE, explained
   variance, L0, dead and dense latents. Special positions (BOS ...) are always left
   out; the main figures also leave out the norm outliers (massive activations), and
   the `*_with_outliers` figures keep them, because a handful of outlier vectors carry
   most of the variance and would otherwise decide the "all tokens" EV alone.
2. Splice (the first `ce_windows` windows of the store's own token ids): the residual
   stream after the hooked block is replaced by the SAE's reconstruction, or by zeros,
   and the model runs on. CE loss and KL(clean || patched) are compared as sae-lens's
   `sae_lens.evals.get_recons_loss` defines them (same masks, same scores; tested).
   BOS/special positions are never spliced; the zero-ablation baseline zeroes every
   position, BOS included, as sae-lens's run_evals does, so that CE-loss scores compare
   with sae-lens's (`ablate_special=False` spares BOS: CE_zero rises, e.g. 10.8 -> 15.1 on
   SmolLM2 layer 15, and every score with it). Outlier positions pass through untouched
   by default.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from sae.data.forward import ResidualReader, UpperForward
from sae.data.models import LoadedModel, load_model, resolve_device
from sae.data.store import FLAG_OUTLIER, FLAG_SPECIAL, ActivationStore
from sae.errors import SaexError
from sae.fsutil import write_json_atomic
from sae.options import ModelOptions, at_least, check_fields
from sae.precision import resolve
from sae.report import Answer, Report
from sae.runs.files import EVAL_FILE
from sae.runs.load import LoadedSAE, load_sae, resolve_run
from sae.runs.stores import check_model, check_store, default_heldout_store
from sae.statistics import pct

EVAL_FORMAT = 1
DENSE_THRESHOLD = 0.1  # a latent firing on more than this fraction of tokens counts as dense
SPLICE_KEYS = ("ce_clean", "ce_spliced", "ce_zero_ablated", "ce_delta", "ce_loss_score", "kl_spliced",
               "kl_zero_ablated", "kl_score")
CHUNK_VECTORS = 8192  # vectors encoded at once in the reconstruction pass (bounds memory)


@dataclass
class EvalConfig(ModelOptions):
    """Evaluate an SAE run on a held-out activation store."""

    run: str = ""
    """Run folder of the SAE (cfg.json + sae_weights.safetensors), a sae-lens release/sae_id, or a sparsify
    hookpoint folder (see docs/formats.md, SAEs from elsewhere)."""
    store: str | None = None
    """Held-out activation store; default: the run's training store with -train in its name replaced by -heldout."""
    model: str | None = field(default=None, kw_only=True)
    """Model for the CE/KL splice; default: the model the store was harvested from."""
    ce_windows: int | str = 256
    """Windows of the store's text for CE loss and KL (the first N); all = every window; 0 = skip the splice."""
    batch_size: int = at_least(1, 8)
    """Windows per forward pass in the splice."""
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    """Matmul precision of the splice's forwards: fp32, bf16 (autocast), or auto (bf16 where it is fast here,
    `sae.precision`; the CE-loss score moves by about 0.001, well inside its interval)."""
    bootstrap: int = at_least(0, 1000)
    """Resamples of the windows for the intervals of the CE-loss and KL scores (0: none)."""
    splice_outliers: bool = False
    """Splice the SAE in at outlier positions too (by default they keep their clean activation)."""
    ablate_special: bool = True
    """Zero-ablate BOS/special positions too in the CE_zero baseline, as sae-lens's run_evals does
    (false: spare them, which raises CE_zero and every CE-loss score)."""

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex eval RUN")
        self.ce_windows = parse_ce_windows(self.ce_windows)
        check_fields(self)


def parse_ce_windows(value: int | str | None) -> int | None:
    """An int >= 0, or None for every window ('all')."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise SaexError(f"bad --ce-windows {value!r}", "give a number of windows, 0 to skip, or all") from None
    if n < 0:
        raise SaexError(f"--ce-windows must be >= 0, got {n}", "give a number of windows, 0 to skip, or all")
    return n


# --------------------------------------------------------------------------- pass 1: stored activations


class _Reconstruction:
    """Running sums for MSE and explained variance over a stream of vectors.

    EV = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2. The second sum is merged
    batch by batch with Chan et al.'s update in float64, so a large mean (SmolLM2's
    residual has mean norm ~130) does not cancel catastrophically."""

    def __init__(self, d_sae: int, device: torch.device):
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.sst = 0.0  # sum of squared deviations from the running mean
        self.sse = 0.0  # sum of squared reconstruction errors
        self.l0 = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.long, device=device)

    def _absorb(self, n: int, mean: torch.Tensor, sst: float) -> None:
        if n == 0:
            return
        if self.n == 0:
            self.mean, self.sst = mean, sst
        else:
            delta = mean - self.mean
            total = self.n + n
            self.sst += sst + float(delta.pow(2).sum()) * self.n * n / total
            self.mean = self.mean + delta * (n / total)
        self.n += n

    def add(self, x: torch.Tensor, recon: torch.Tensor, acts: torch.Tensor) -> None:
        if len(x) == 0:
            return
        x64 = x.double()
        mean = x64.mean(0)
        self._absorb(len(x), mean, float((x64 - mean).pow(2).sum()))
        self.sse += float((x64 - recon.double()).pow(2).sum())
        active = acts != 0  # != 0, not > 0: signed architectures (AbsTopK) count too
        self.l0 += float(active.sum())
        self.fired += active.sum(0)

    def merged(self, other: _Reconstruction) -> _Reconstruction:
        """The accumulator of both sets of vectors."""
        out = copy.copy(self)
        out._absorb(other.n, other.mean, other.sst)
        out.sse, out.l0, out.fired = self.sse + other.sse, self.l0 + other.l0, self.fired + other.fired
        return out

    def figures(self) -> dict:
        if self.n == 0:
            return {"mse": None, "explained_variance": None, "l0": None}
        return {"mse": self.sse / self.n,
                "explained_variance": 1 - self.sse / self.sst if self.sst > 0 else None,
                "l0": self.l0 / self.n}


def _density_histogram(density: torch.Tensor) -> dict:
    """Latents per log10(density) bin of width 0.5 (for a plot), plus those that never fired."""
    alive = density[density > 0]
    edges = [x / 2 for x in range(-20, 1)]  # 1e-10 .. 1
    logd = torch.log10(alive.double()).clamp(min=edges[0], max=edges[-1] - 1e-9)
    counts = torch.histc(logd, bins=len(edges) - 1, min=edges[0], max=edges[-1]) if len(alive) else \
        torch.zeros(len(edges) - 1)
    return {"log10_density_edges": edges, "counts": [int(c) for c in counts], "never_fired": int((density == 0).sum())}


@torch.no_grad()
def reconstruction_metrics(sae: LoadedSAE, store: ActivationStore, progress: bool = True) -> dict:
    """Pass 1: MSE, EV, L0 (outliers excluded, and included), dead and dense latents."""
    from tqdm.auto import tqdm

    main = _Reconstruction(sae.d_sae, sae.device)  # ordinary tokens
    extra = _Reconstruction(sae.d_sae, sae.device)  # outlier tokens, merged into "with outliers" below
    n_special = 0
    bar = tqdm(total=store.n_windows * store.context_size, unit="tok", unit_scale=True,
               desc="reconstruction", disable=not progress)
    for k in range(store.n_shards):
        acts = store.acts(k).reshape(-1, store.d_model)
        flags = store.flags(k).reshape(-1)
        for i in range(0, len(acts), CHUNK_VECTORS):
            f = flags[i:i + CHUNK_VECTORS]
            keep = (f & FLAG_SPECIAL) == 0
            n_special += int((~keep).sum())
            x = acts[i:i + CHUNK_VECTORS][keep].to(sae.device, torch.float32)
            if not torch.isfinite(x).all():
                raise SaexError(f"NaN/inf activations in shard {k} of {store.path}",
                                "harvest the store again (with --precision fp32 if it persists)")
            outlier = ((f[keep] & FLAG_OUTLIER) != 0).to(sae.device)
            latents = sae.encode(x)
            recon = sae.decode(latents)
            main.add(x[~outlier], recon[~outlier], latents[~outlier])
            extra.add(x[outlier], recon[outlier], latents[outlier])
            bar.update(len(f))
    bar.close()
    both = main.merged(extra)
    if main.n == 0:
        raise SaexError(f"the store {store.path} holds no ordinary (non-special, non-outlier) tokens",
                        "use a store with real text")
    density = main.fired.double().cpu() / main.n
    dead = int((main.fired == 0).sum())
    dense = int((density > DENSE_THRESHOLD).sum())
    fig, fig_all = main.figures(), both.figures()
    return {
        "explained_variance": fig["explained_variance"], "mse": fig["mse"], "l0": fig["l0"],
        "explained_variance_with_outliers": fig_all["explained_variance"], "mse_with_outliers": fig_all["mse"],
        "l0_with_outliers": fig_all["l0"],
        "dead_fraction": dead / sae.d_sae, "dead_latents": dead,
        "dense_fraction": dense / sae.d_sae, "dense_latents": dense, "dense_threshold": DENSE_THRESHOLD,
        "tokens": {"total": store.n_windows * store.context_size, "evaluated": main.n,
                   "outliers": extra.n, "special_excluded": n_special},
        "density_histogram": _density_histogram(density),
    }


# --------------------------------------------------------------------------- pass 2: splice into the model


class Splicer:
    """Logits of the model when the residual stream after block `layer` is `h`.

    The blocks up to the hook run once per batch (`residual`, sae.data.forward.ResidualReader);
    the rest once per variant (clean, spliced, zero-ablated; sae.data.forward.UpperForward,
    checked against a plain forward on the first windows)."""

    def __init__(self, lm: LoadedModel, layer: int, probe_ids: torch.Tensor, precision: str = "fp32"):
        self.lm = lm
        hook = lm.hook_point(layer)
        self.reader = ResidualReader(lm, hook, precision=precision, calibration_ids=probe_ids)
        # the upper blocks follow the reader's choice (auto may have fallen back to fp32)
        self.precision = self.reader.precision
        probe_ids = probe_ids[:2].to(lm.device)
        # the fast path is checked against the model's own fp32 logits, so on an fp32 residual
        exact = self.reader if self.precision == "fp32" else ResidualReader(lm, hook, precision="fp32")
        with torch.inference_mode():
            try:
                self.upper = UpperForward(lm, hook.layer, probe_ids, exact(probe_ids).to(lm.device))
            except SaexError as e:
                raise SaexError(e.problem, f"{e.fix}, or --ce-windows 0 to skip the splice") from None
        self.path = self.upper.path

    def residual(self, ids: torch.Tensor) -> torch.Tensor:
        """ "batch pos" -> "batch pos d_model" fp32 on the model's device."""
        return self.reader(ids).to(self.lm.device)

    def logits(self, ids: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        low = (torch.autocast(self.lm.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
               else nullcontext())
        with low:
            return self.upper.logits_at(ids.to(self.lm.device), h).float()


class _Sums:
    """Per-window sums and counts, so the means can be resampled by window."""

    def __init__(self):
        self.totals: list[float] = []
        self.counts: list[int] = []

    def add(self, per_token: torch.Tensor, mask: torch.Tensor) -> None:
        """per_token, mask: "window pos"."""
        self.totals += (per_token.double() * mask).sum(-1).tolist()
        self.counts += mask.sum(-1).tolist()

    @property
    def n(self) -> int:
        return int(sum(self.counts))

    @property
    def mean(self) -> float | None:
        return sum(self.totals) / self.n if self.n else None


def _score_intervals(ce: dict[str, _Sums], kl: dict[str, _Sums], n_boot: int, seed: int = 0) -> dict:
    """95% percentile intervals of the CE-loss and KL scores, resampling windows (the text's unit of
    dependence: tokens of one window share their context)."""
    windows = len(ce["clean"].totals)
    if n_boot <= 0 or windows < 2:
        return {"ce_loss_score": None, "kl_score": None}
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(windows, (n_boot, windows), generator=g)
    sums = {f"ce_{k}": torch.tensor(v.totals, dtype=torch.float64)[idx].sum(1) for k, v in ce.items()}
    sums |= {f"kl_{k}": torch.tensor(v.totals, dtype=torch.float64)[idx].sum(1) for k, v in kl.items()}
    n_kl = torch.tensor(kl["spliced"].counts, dtype=torch.float64)[idx].sum(1)
    ce_den = sums["ce_zero"] - sums["ce_clean"]  # the CE token counts cancel in the ratio
    ce_score = ((sums["ce_zero"] - sums["ce_spliced"]) / ce_den)[ce_den != 0]
    kl_ok = (sums["kl_zero"] != 0) & (n_kl > 0)
    kl_score = (1 - sums["kl_spliced"] / sums["kl_zero"])[kl_ok]

    def ci(x: torch.Tensor) -> list[float] | None:
        return [float(x.quantile(0.025)), float(x.quantile(0.975))] if len(x) else None

    return {"ce_loss_score": ci(ce_score), "kl_score": ci(kl_score), "resamples": n_boot, "unit": "window"}


def _ce_per_token(logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """ "batch pos vocab" log-probs -> "batch pos-1": -log p(next token)."""
    return -logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def _kl_per_token(logp_clean: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(clean || patched) per position, summed over the vocabulary (as sae-lens's `_kl`)."""
    return F.kl_div(logp, logp_clean, reduction="none", log_target=True).sum(-1)


@torch.inference_mode()
def splice_metrics(sae: LoadedSAE, store: ActivationStore, lm: LoadedModel, n_windows: int | None,
                   batch_size: int = 8, splice_outliers: bool = False, ablate_special: bool = True,
                   progress: bool = True, precision: str = "fp32", bootstrap: int = 1000) -> dict:
    """Pass 2: CE loss clean / spliced / zero-ablated, KL, and their scores."""
    from tqdm.auto import tqdm

    layer = int(store.manifest["hook"]["layer"])
    total = store.n_windows if n_windows is None else min(n_windows, store.n_windows)
    probe = torch.cat([ids for ids, _ in _windows(store, min(total, 2))]).long()
    splicer = Splicer(lm, layer, probe, resolve(precision, lm.device)[0])
    ce = {v: _Sums() for v in ("clean", "spliced", "zero")}
    kl = {v: _Sums() for v in ("spliced", "zero")}
    n_spliced = n_outliers_kept = 0
    bar = tqdm(total=total, unit="window", desc="CE/KL splice", disable=not progress)
    for ids, flags in _batched(_windows(store, total), batch_size):
        ids = ids.long().to(lm.device)
        flags = flags.to(lm.device)
        special = (flags & FLAG_SPECIAL) != 0
        outlier = ((flags & FLAG_OUTLIER) != 0) & ~special
        splice = ~special if splice_outliers else ~special & ~outlier
        ablate = torch.ones_like(special) if ablate_special else ~special
        n_spliced += int(splice.sum())
        n_outliers_kept += 0 if splice_outliers else int(outlier.sum())
        h = splicer.residual(ids)
        recon = sae.reconstruct(h).to(h.device)
        logp_clean = splicer.logits(ids, h).log_softmax(-1)
        ce_mask, kl_mask = ~special[:, :-1], ~special  # sae-lens: positions whose *input* token is special
        ce["clean"].add(_ce_per_token(logp_clean, ids), ce_mask)
        for name, patched in (("spliced", torch.where(splice.unsqueeze(-1), recon, h)),
                              ("zero", torch.where(ablate.unsqueeze(-1), torch.zeros_like(h), h))):
            logp = splicer.logits(ids, patched).log_softmax(-1)
            ce[name].add(_ce_per_token(logp, ids), ce_mask)
            kl[name].add(_kl_per_token(logp_clean, logp), kl_mask)
            del logp
        bar.update(len(ids))
    bar.close()
    c_clean, c_sae, c_zero = ce["clean"].mean, ce["spliced"].mean, ce["zero"].mean
    k_sae, k_zero = kl["spliced"].mean, kl["zero"].mean
    return {
        "ce_clean": c_clean, "ce_spliced": c_sae, "ce_zero_ablated": c_zero,
        "ce_delta": c_sae - c_clean,
        "ce_loss_score": (c_zero - c_sae) / (c_zero - c_clean) if c_zero != c_clean else None,
        "kl_spliced": k_sae, "kl_zero_ablated": k_zero,
        "kl_score": 1 - k_sae / k_zero if k_zero else None,
        "splice": {
            "windows": total, "context_size": store.context_size,
            "ce_tokens": ce["clean"].n, "kl_tokens": kl["spliced"].n,
            "positions_spliced": n_spliced, "outlier_positions_left_clean": n_outliers_kept,
            "special_positions": "never spliced; left out of CE (as inputs) and KL, as sae-lens does",
            "zero_ablation": ("every position, special ones included (as sae-lens)" if ablate_special
                              else "every non-special position (BOS/special keep their clean activation)"),
            "outliers": "spliced" if splice_outliers else "left clean (their stored flag)",
            "forward": splicer.path, "precision": splicer.precision, "model": lm.spec,
        },
        "intervals": _score_intervals(ce, kl, bootstrap),
    }


def _windows(store: ActivationStore, n: int):
    """(token ids, flags), one "pos" row each, for the store's first n windows."""
    seen = 0
    for k in range(store.n_shards):
        toks, flags = store.tokens(k), store.flags(k)
        for i in range(len(toks)):
            if seen >= n:
                return
            yield toks[i:i + 1], flags[i:i + 1]
            seen += 1


def _batched(rows, batch_size: int):
    ids, flags = [], []
    for t, f in rows:
        ids.append(t)
        flags.append(f)
        if len(ids) == batch_size:
            yield torch.cat(ids), torch.cat(flags)
            ids, flags = [], []
    if ids:
        yield torch.cat(ids), torch.cat(flags)


# --------------------------------------------------------------------------- both passes, the report


def evaluate(run: str | Path | EvalConfig, store: str | Path | ActivationStore | None = None,
             model: str | LoadedModel | None = None, **settings) -> Report:
    """Evaluate the SAE in `run` on a held-out store; returns what eval.json holds (a `Report`, not yet
    written: `write_eval`, or `run_eval`, writes it). `run` is a run folder with `settings` named as
    `EvalConfig`'s fields (its defaults otherwise), or an `EvalConfig` itself. A loaded model or store
    passed beside it is reused.

    ce_windows: windows for the CE/KL splice (None or "all": every window; 0: skip it,
    and no model is loaded)."""
    if isinstance(run, EvalConfig):
        if settings:
            raise TypeError(f"evaluate() takes an EvalConfig or keyword settings, not both ({', '.join(settings)})")
        c = run
    else:
        unknown = sorted(set(settings) - {f.name for f in fields(EvalConfig)})
        if unknown:
            raise TypeError(f"evaluate() got unknown settings {', '.join(unknown)}: use EvalConfig's field names")
        c = EvalConfig(run=str(run), **settings)
    store = store if store is not None else c.store
    model = model if model is not None else c.model
    started = time.perf_counter()
    ce_windows = parse_ce_windows(c.ce_windows)
    dev = resolve_device(c.device)
    sae = load_sae(c.run, device=dev)
    if store is None:
        store = default_heldout_store(sae)
    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    warnings = check_store(sae, store)
    result = {"format": EVAL_FORMAT, "sae": sae.describe(),
              "store": {"path": str(store.path), "split": store.manifest["corpus"].get("split"),
                        "model": store.manifest["model"]["spec"],
                        "model_weights_sha256": store.manifest["model"].get("weights_sha256"),
                        "hook": store.hook_name, "n_tokens": store.n_windows * store.context_size,
                        "dtype": store.manifest["dtype"], "outlier_threshold": store.manifest.get("outlier_threshold")}}
    result |= reconstruction_metrics(sae, store, progress=c.progress)
    if ce_windows != 0:
        if isinstance(model, LoadedModel):
            lm = model
        else:
            lm = load_model(model or store.manifest["model"]["spec"], device=dev)
        check_model(lm, store)
        result |= splice_metrics(sae, store, lm, ce_windows, batch_size=c.batch_size,
                                 splice_outliers=c.splice_outliers, ablate_special=c.ablate_special,
                                 progress=c.progress, precision=c.precision, bootstrap=c.bootstrap)
    else:  # same keys either way, so readers of eval.json need no special case
        result |= dict.fromkeys(SPLICE_KEYS) | {"splice": None, "intervals": None}
    result["warnings"] = warnings
    result["answer"] = eval_answer(result)
    result["seconds"] = time.perf_counter() - started
    return Report("eval", result)


def eval_answer(r: dict) -> dict:
    """What the evaluation says (an `Answer`, as stored): reconstruction, sparsity, and what splicing costs."""
    ev, ev_all = r["explained_variance"], r["explained_variance_with_outliers"]
    verdict = (f"On {r['tokens']['evaluated']:,} held-out tokens the SAE explains {_pct(ev)} of the variance "
               f"({_pct(ev_all)} with the {r['tokens']['outliers']:,} norm outliers) with {_fmt(r['l0'], '.1f')} "
               f"latents a token")
    lines = [f"Dead latents: {r['dead_fraction']:.2%} ({r['dead_latents']:,} never fired); dense (firing on more "
             f"than {r['dense_threshold']:.0%} of tokens): {r['dense_fraction']:.2%}."]
    if r.get("ce_loss_score") is not None:
        ci = (r.get("intervals") or {}).get("ce_loss_score")
        verdict += (f"; spliced into the model it keeps {_pct(r['ce_loss_score'])} of the loss it would lose by "
                    "zeroing the layer" + (f" (95% CI {_pct(ci[0])} to {_pct(ci[1])})" if ci else ""))
        kci = (r.get("intervals") or {}).get("kl_score")
        lines.append(f"CE loss clean {_fmt(r['ce_clean'])}, spliced {_fmt(r['ce_spliced'])}, zero-ablated "
                     f"{_fmt(r['ce_zero_ablated'])}; KL score {_fmt(r['kl_score'])}"
                     + (f" (95% CI {_fmt(kci[0])} to {_fmt(kci[1])})" if kci else "")
                     + f", on {r['splice']['windows']:,} windows in {r['splice']['precision']}.")
    else:
        lines.append("The splice was skipped (--ce-windows 0): no CE loss or KL.")
    return Answer(verdict + ".", lines).to_dict()


def _pct(x) -> str:
    return pct(x, 1)


def write_eval(run_path: str | Path, result: dict) -> Path:
    """Write eval.json into the run folder atomically (an old one stays until the rename)."""
    path = resolve_run(run_path) / EVAL_FILE
    write_json_atomic(path, result)
    return path


def _fmt(x, fmt: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _interval(r: dict, key: str) -> str:
    ci = (r.get("intervals") or {}).get(key)
    return f"  (95% CI {ci[0]:.4f} to {ci[1]:.4f}, windows resampled)" if ci else ""


def format_table(r: dict) -> str:
    """The report as a small text table."""
    s, t = r["sae"], r["tokens"]
    rows = [
        ("SAE", f"{s['path']} ({s['architecture']}, {s['d_in']} -> {s['d_sae']}, sha256 {s['content_hash'][:12]})"),
        ("store", f"{r['store']['path']} ({r['store']['split']}, {r['store']['hook']})"),
        ("tokens", f"{t['evaluated']:,} evaluated; excluded: {t['special_excluded']:,} special, "
                   f"{t['outliers']:,} outliers"),
        ("explained variance", f"{_fmt(r['explained_variance'])}  "
                               f"(with outliers: {_fmt(r['explained_variance_with_outliers'])})"),
        ("MSE", f"{_fmt(r['mse'], '.4g')}  (with outliers: {_fmt(r['mse_with_outliers'], '.4g')})"),
        ("L0", _fmt(r["l0"], ".1f")),
        ("dead latents", f"{r['dead_fraction']:.2%} ({r['dead_latents']:,} of {s['d_sae']:,} never fired)"),
        ("dense latents", f"{r['dense_fraction']:.2%} (density > {r['dense_threshold']:.0%})"),
    ]
    sp = r.get("splice")
    if sp:
        rows += [
            ("CE clean / spliced / zero", f"{_fmt(r['ce_clean'])} / {_fmt(r['ce_spliced'])} / "
                                          f"{_fmt(r['ce_zero_ablated'])}"
                                          f"  ({sp['windows']:,} windows, {sp['ce_tokens']:,} tokens)"),
            ("CE-loss score", _fmt(r["ce_loss_score"]) + _interval(r, "ce_loss_score")),
            ("KL spliced / zero", f"{_fmt(r['kl_spliced'])} / {_fmt(r['kl_zero_ablated'])}"),
            ("KL score", _fmt(r["kl_score"]) + _interval(r, "kl_score")),
            ("splice", f"{sp['positions_spliced']:,} positions in {sp.get('precision', 'fp32')}; "
                       f"outliers {sp['outliers']}; "
                       f"zero-ablation at {sp['zero_ablation'].split(' (')[0]}"),
        ]
    else:
        rows.append(("CE / KL", "skipped (--ce-windows 0)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"warning: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)


def run_eval(cfg: EvalConfig) -> Report:
    """`saex eval`: evaluate, write RUN/eval.json, return the result."""
    cfg = replace(cfg, run=str(resolve_run(cfg.run)))  # a release/sae_id or sparsify folder: our run folder
    result = evaluate(cfg)
    result["config"] = asdict(cfg)
    try:
        write_eval(cfg.run, result)
    except OSError as e:
        raise SaexError(f"could not write {Path(cfg.run) / EVAL_FILE}: {e.strerror or e}",
                        "fix the run folder's permissions or free disk space") from None
    return Report("eval", result, Path(cfg.run) / EVAL_FILE)
