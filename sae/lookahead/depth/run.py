"""The sweep itself: read every layer, fit, test, write the report."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from sae.data.models import DEFAULT_MODEL, LoadedModel, parse_hook_point, parse_layers
from sae.errors import SaexError
from sae.fsutil import ensure_writable_dir, write_json_atomic
from sae.lookahead.depth.answer import depth_answer
from sae.lookahead.depth.causal import _project_out, _random_units, compare_to_random, sae_edits
from sae.lookahead.depth.config import REPORT_FORMAT, DepthConfig
from sae.lookahead.depth.coverage import sae_coverage
from sae.lookahead.depth.plots import plot_depth
from sae.lookahead.depth.probes import article_probe, identity_probe
from sae.lookahead.depth.prompts import depth_prompts
from sae.lookahead.depth.reader import LayerReader
from sae.lookahead.interventions import encode_prompts
from sae.report import Report
from sae.runs.files import DEPTH_DIR, REPORT_FILE
from sae.statistics import bootstrap_gap, gap_change

# --------------------------------------------------------------------------- the sweep


def _load(cfg: DepthConfig, lm: LoadedModel | None):
    from sae.data.models import load_model, resolve_device
    from sae.runs.load import check_sae_fits, load_sae, resolve_run

    dev = resolve_device(cfg.device)
    saes = [load_sae(resolve_run(r.strip()), device=dev) for r in (cfg.run or "").split(",") if r.strip()]
    spec = cfg.model or next((s.model_spec for s in saes if s.model_spec), None) or DEFAULT_MODEL
    lm = lm or load_model(spec, device=dev)
    by_layer = {}
    for s in saes:
        if s.hook_name is None and s.module_path is None:
            raise SaexError(f"the SAE in {s.path} records no hook point", "give an SAE trained by saex train")
        check_sae_fits(s, lm)
        layer = parse_hook_point(s.hook_name or s.module_path, lm.n_layers, lm.layers_path).layer
        if layer in by_layer:
            raise SaexError(f"two SAEs at layer {layer}: {by_layer[layer].path} and {s.path}", "give one per layer")
        by_layer[layer] = s
    return lm, by_layer


def sweep_layers(spec: str, lm: LoadedModel) -> list[int]:
    hooks = parse_layers(spec, lm.n_layers, lm.layers_path)
    return [h.layer for h in hooks] if hooks else [lm.hook_point(str(spec).strip().strip(",")).layer]


def default_out(cfg: DepthConfig) -> Path:
    if cfg.out:
        return Path(cfg.out).expanduser()
    if cfg.run:
        from sae.runs.load import resolve_run

        return resolve_run(cfg.run.split(",")[0].strip()) / DEPTH_DIR
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(cfg.model or DEFAULT_MODEL).name).strip("-") or "model"
    return Path("checkpoints") / f"depth-{name}"


def read_depth_report(folder: str | Path) -> Report | None:
    """The depth report in `folder` (RUN/depth or checkpoints/depth-MODEL), None when missing, unreadable or
    of another format."""
    from sae.runs.files import read_report_file

    return read_report_file(Path(folder) / REPORT_FILE, "depth", REPORT_FORMAT)


def _noun_identity(reader: LayerReader, lm: LoadedModel, prompts, ids, read, layers, nouns, cfg: DepthConfig,
                   article_directions: dict, identity: dict, probes: dict) -> dict:
    """Onset of the named-to-implied identity probe over offsets and layers (at -1: `identity`'s, with its
    `probes`), and the ablation of its subspace at -1 on the implied-frame prompts (depth/identity.py) at each
    layer where that probe reads the implied noun at -1 above chance; {} without both kinds of frame."""
    from sae.lookahead.depth.config import IMPLIED
    from sae.lookahead.depth.identity import identity_ablation, identity_onset

    feats, valid, _ = read
    frames = [p.condition for p in prompts]
    if len(set(nouns)) < 2:
        return {}
    if not probes:
        return {}
    at_minus1 = {L: identity[str(L)]["named_to_implied"]["frames"] for L in probes}
    onset = identity_onset(feats, valid, nouns, frames, layers, at_minus1, cfg.seed + 500)
    rows = [i for i, f in enumerate(frames) if f in IMPLIED]
    tok = lm.tokenizer
    art = [reader.an_id if prompts[i].article == "an" else reader.a_id for i in rows]
    noun = [tok(" " + prompts[i].noun, add_special_tokens=False)["input_ids"][0] for i in rows]
    is_an = torch.tensor([prompts[i].article == "an" for i in rows])
    ablation = {}
    if is_an.any() and (~is_an).any():
        frame = next(f for f in IMPLIED if f in frames)  # the riddle frame first, as the answer reads it
        for j, L in enumerate(layers):  # only where there is a readable noun to take away
            if L in probes and onset[str(L)]["-1"].get(frame, {}).get("above_chance"):
                ablation[str(L)] = identity_ablation(reader, [ids[i] for i in rows], L, feats[rows, j, -1],
                                                     probes[L].subspace(), is_an, art, noun, cfg, cfg.seed + 700 + L,
                                                     article_directions.get(L))
    return {"onset": onset, "ablation": ablation}


def run_depth(cfg: DepthConfig, lm: LoadedModel | None = None) -> Report:
    """The sweep; writes OUT/report.json and OUT/depth.png and returns the report. A complete
    report made with the same settings is returned as it is."""
    t0 = time.perf_counter()
    out_dir = default_out(cfg)
    old = read_depth_report(out_dir)
    if old is not None and old.get("config_key") == cfg.key() and not cfg.force:
        if cfg.progress:
            print(f"reusing the complete report {out_dir / REPORT_FILE} (same settings)", file=sys.stderr)
        return old
    steps: dict[str, float] = {}
    last = [t0]

    def tick(name: str) -> None:
        now = time.perf_counter()
        steps[name] = round(now - last[0], 1)
        last[0] = now

    lm, saes = _load(cfg, lm)
    layers = sorted(set(sweep_layers(cfg.layers, lm)) | set(saes))
    ensure_writable_dir(out_dir, "depth report")
    tok = lm.tokenizer
    tick("load")
    prompts = depth_prompts(cfg, tok)
    reader = LayerReader(lm, layers, cfg.batch_size, cfg.progress)
    tick("prompts")

    def ids_of(ps):
        return [e.ids[:e.article_pos] for e in encode_prompts(tok, ps)]

    sets = {"train": prompts.train, "test": prompts.test, "identity": prompts.identity}
    ids = {k: ids_of(v) for k, v in sets.items()}
    k_off = cfg.offsets
    read = {k: reader.read(v, k_off) for k, v in ids.items()}
    tick("forward")
    is_an = {k: torch.tensor([p.article == "an" for p in v]) for k, v in sets.items()}
    y = {k: v.long() for k, v in is_an.items()}
    nouns = {k: [p.noun for p in v] for k, v in sets.items()}
    overlap = set(nouns["train"]) & set(nouns["test"])
    if overlap:  # split_of_noun guarantees this; a broken prompt file must not slip through
        raise SaexError(f"nouns on both sides of the probe split: {sorted(overlap)[:5]}", "check the prompt set")

    report: dict = {"format": REPORT_FORMAT, "model": lm.spec, "model_weights_sha256": lm.weights_sha256,
                    "n_layers": lm.n_layers, "layers": layers, "config": asdict(cfg), "config_key": cfg.key(),
                    "hooks": {str(L): lm.hook_point(L).name for L in layers},
                    "prompt_sets": {"sources": prompts.sources,
                                    **{k: {"n": len(v), "n_an": int(is_an[k].sum()), "n_a": int((~is_an[k]).sum())}
                                       for k, v in sets.items()},
                                    "train_nouns": sorted(set(nouns["train"])),
                                    "test_nouns": sorted(set(nouns["test"])),
                                    "identity_nouns": sorted(set(nouns["identity"]))},
                    "offsets": list(range(-k_off, 0)),
                    "saes": {str(L): s.describe() for L, s in saes.items()}}
    # behaviour at the output, and the logit lens
    both_ld = torch.cat([read["train"][2], read["test"][2]])
    both_an = torch.cat([is_an["train"], is_an["test"]])
    report["output"] = bootstrap_gap(both_ld, both_an, cfg.bootstrap, cfg.seed)
    feats_all = torch.cat([read["train"][0], read["test"][0]])
    report["lens"] = {}
    for j, L in enumerate(layers):
        ld = reader.lens(feats_all[:, j, -1])
        report["lens"][str(L)] = bootstrap_gap(ld, both_an, cfg.bootstrap, cfg.seed)
    tick("lens")

    # probes
    report["article_probe"], report["identity_probe"] = {}, {}
    directions, means, transfer_probes = {}, {}, {}
    f_tr, v_tr, _ = read["train"]
    f_te, v_te, _ = read["test"]
    for j, L in enumerate(layers):
        per = {}
        for o in range(k_off):
            tr, te = v_tr[:, o], v_te[:, o]
            if tr.sum() < 4 or te.sum() < 2 or len(set(y["train"][tr].tolist())) < 2:
                continue
            res, probe = article_probe(f_tr[tr, j, o], y["train"][tr], [n for n, k in zip(nouns["train"], tr) if k],
                                       f_te[te, j, o], y["test"][te], cfg, cfg.seed + 100 * L + o)
            per[str(o - k_off)] = res
            if o == k_off - 1:
                directions[L], means[L] = probe.direction(), f_tr[tr, j, o].mean(0)
        report["article_probe"][str(L)] = per
        fi, vi, _ = read["identity"]
        frames = [p.condition for p in sets["identity"]]
        if len(set(frames)) >= 2 and len(set(nouns["identity"])) >= 2:
            report["identity_probe"][str(L)], probe = identity_probe(fi[:, j, -1], nouns["identity"], frames, cfg,
                                                                     cfg.seed + L)
            if probe is not None:
                transfer_probes[L] = probe
    tick("probes")

    # planned or baked in: where the implied noun is readable, and what removing it at -1 does
    report["noun_identity"] = _noun_identity(reader, lm, sets["identity"], ids["identity"], read["identity"], layers,
                                             nouns["identity"], cfg, directions, report["identity_probe"],
                                             transfer_probes)
    tick("noun identity")

    # causal: project the probe direction out at -1 of the held-out riddles; SAE ablations
    report["causal"], report["sae"], report["sae_coverage"] = {}, {}, {}
    d = lm.d_model
    for j, L in enumerate(layers):
        if L not in directions:
            continue
        h = f_te[:, j, -1]
        units = torch.cat([torch.zeros(1, d), directions[L][None], _random_units(cfg.random_directions, d,
                                                                                   cfg.seed + L)])
        repl = _project_out(h, means[L], units)
        repl[:, 0] = h  # the clean row, through the same path
        n_dir = repl.shape[1]
        sae_info = coverage = None
        if L in saes:
            sae_repl, sae_info = sae_edits(saes[L], f_tr[:, j, -1], is_an["train"], h, cfg, cfg.seed + L)
            cover_repl, coverage = sae_coverage(saes[L], f_tr[:, j, -1], y["train"], nouns["train"], h,
                                                y["test"], directions[L], [f["feature"] for f in sae_info["features"]],
                                                cfg, cfg.seed + L)
            repl = torch.cat([repl, cover_repl, sae_repl[:, 1:]], 1)
        ld = reader.rerun_last(ids["test"], L, repl)
        clean = ld[:, 0]
        if not torch.allclose(clean, read["test"][2], atol=1e-3 * max(1.0, float(clean.abs().max()))):
            raise SaexError(f"rerunning the last token of {lm.spec} from a cached prefix does not reproduce its "
                            "output", "use a Llama-like causal LM")
        report["causal"][str(L)] = compare_to_random(clean, ld[:, 1], ld[:, 2:n_dir], is_an["test"], cfg,
                                                     cfg.seed + L)
        if coverage is not None:
            coverage["causal"] = {name: gap_change(clean, ld[:, n_dir + i], is_an["test"], cfg.bootstrap, cfg.seed + L)
                                  for i, name in enumerate(("error_mean_ablated", "latents_mean_ablated"))}
            report["sae_coverage"][str(L)] = coverage
            n_dir += 2
        if sae_info is not None and sae_info["features"]:
            rest = ld[:, n_dir:]
            report["sae"][str(L)] = sae_info | compare_to_random(clean, rest[:, 0], rest[:, 1:], is_an["test"],
                                                                 cfg, cfg.seed + L)
    tick("causal")
    report["answer"] = depth_answer(report)
    report["plot"] = plot_depth(report, out_dir)
    tick("plot")
    report["seconds"] = {"total": round(time.perf_counter() - t0, 1), **steps}
    write_json_atomic(out_dir / REPORT_FILE, report)
    return Report("depth", report, out_dir / REPORT_FILE)
