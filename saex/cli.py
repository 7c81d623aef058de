"""`saex`: the command line of sae-explorer.

Each subcommand is one arrow of the pipeline (text -> tokens -> activations -> ...),
can be rerun alone, and skips work already done.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

from sae.errors import SaexError
from saex.flags import add_dataclass_flags, dataclass_from_args


def _cmd_fetch(ns: argparse.Namespace) -> None:
    from sae.data.models import DEFAULT_MODEL, fetch_builtin_model
    from sae.data.sources import BUILTIN_SOURCE_NAMES, builtin_documents

    t = time.perf_counter()
    path = fetch_builtin_model(DEFAULT_MODEL)
    print(f"model {DEFAULT_MODEL}: {path}")
    for name in BUILTIN_SOURCE_NAMES:
        docs = builtin_documents(name)
        print(f"corpus {name}: {len(docs):,} documents, {sum(len(d.text) for d in docs):,} characters")
    print(f"fetched in {time.perf_counter() - t:.0f} s")


def _cmd_harvest(ns: argparse.Namespace) -> None:
    from sae.data.harvest import HarvestConfig, harvest
    from sae.data.store import LAYERS_FILE, MANIFEST_FILE, PLAN_FILE, store_summary

    cfg = dataclass_from_args(HarvestConfig, ns)
    out = harvest(cfg)
    if (out / MANIFEST_FILE).exists() or (out / LAYERS_FILE).exists():
        print(store_summary(out))
    else:
        one = out if (out / PLAN_FILE).exists() else sorted(out.glob("layer-*"))[-1]  # multi-layer: the deepest
        done = len(list((one / "shards").glob("*.json")))
        total = json.loads((one / PLAN_FILE).read_text())["n_shards"]
        print(f"this process's shards are done; {done} of {total} shards complete. The store is "
              "finished by whichever process completes the last shard (or rerun without --shard).")


def _cmd_train(ns: argparse.Namespace) -> None:
    from sae.runs.files import RUN_FILE
    from training.config import TrainConfig, load_config
    from training.train import train

    names = [f for f in TrainConfig.__dataclass_fields__]
    overrides = {k: getattr(ns, k) for k in names if getattr(ns, k, None) is not None}
    cfg = load_config(ns.config, **overrides) if ns.config else TrainConfig(**overrides)
    out = train(cfg)
    run = json.loads((out / RUN_FILE).read_text())
    print(f"SAE written to {out} ({run['vectors']:,} vectors, {run['vectors_per_s']:,.0f} vectors/s)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, gloo's C++ threads can abort a rank during interpreter shutdown even after
        # destroy_process_group ("terminate called without an active exception"; seen in about 1 run
        # in 6 on 2 busy cores), and torchrun then fails the whole run. Everything is written and
        # the group is gone, so end the process here without the interpreter's teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _cmd_eval(ns: argparse.Namespace) -> None:
    from sae.runs.evaluate import EvalConfig, format_table, run_eval

    cfg = dataclass_from_args(EvalConfig, ns)
    result = run_eval(cfg)
    print(format_table(result))
    print(f"\n{result.answer.verdict}")
    print(f"written to {result.path} ({result['seconds']:.0f} s)")


def _cmd_index(ns: argparse.Namespace) -> None:
    from sae.index.build import IndexConfig, build_index
    from sae.index.reader import FeatureIndex

    index = FeatureIndex(build_index(dataclass_from_args(IndexConfig, ns)))
    m, out = index.manifest, index.path
    alive = int((index.array("fires") > 0).sum())
    print(f"index of {m['d_sae']:,} features ({alive:,} fired) over {m['tokens_indexed']:,} tokens written to {out} "
          f"({sum(m['seconds'].values()):.0f} s; streaming {m['stream_tokens_per_s']:,.0f} tokens/s)")


def _cmd_label(ns: argparse.Namespace) -> None:
    from sae.labels.auto import LabelConfig, label_features

    report = label_features(dataclass_from_args(LabelConfig, ns))
    print(report.answer.text())
    print(f"written to {report.path.parent / 'labels.jsonl'}")


def _cmd_explore(ns: argparse.Namespace) -> None:
    import os

    import explorer
    from sae.runs.catalogue import read_run
    from sae.runs.load import resolve_run

    if ns.run:
        ns.run = str(resolve_run(ns.run))  # a release/sae_id or sparsify folder: our run folder
        read_run(ns.run)  # a clear error now rather than a blank page later
    app = Path(explorer.__file__).with_name("app.py")
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", ns.host, "--server.port",
           str(ns.port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    if ns.run:
        cmd += ["--", "--run", ns.run]
    env = dict(os.environ)
    if ns.root:
        env["SAEX_CHECKPOINTS"] = ns.root
    print(f"explorer on http://{ns.host}:{ns.port} (Ctrl-C stops it)", flush=True)
    # Become the server rather than wrap it: a signal to this process then reaches
    # Streamlit itself, and no orphaned server outlives a killed `saex explore`.
    os.execve(sys.executable, cmd, env)


def _cmd_lookahead(ns: argparse.Namespace) -> None:
    from sae.lookahead.article import LookaheadConfig, run_lookahead
    from sae.lookahead.article.answer import format_summary
    from sae.runs.files import LOOKAHEAD_DIR
    from sae.runs.load import resolve_run

    cfg = dataclass_from_args(LookaheadConfig, ns)
    cfg.run = str(resolve_run(cfg.run))  # a release/sae_id or sparsify folder: our run folder
    report = run_lookahead(cfg)
    out = Path(cfg.out) if cfg.out else Path(cfg.run) / LOOKAHEAD_DIR
    print(format_summary(report, out))
    print(f"done in {report['seconds']['total']:.0f} s")


def _default_run() -> str:
    """The demo's SAE when there is one, else the first finished run under checkpoints/."""
    from sae.errors import SaexError
    from sae.runs.catalogue import checkpoints_root, find_runs
    from sae.runs.files import is_finished

    demo = checkpoints_root() / "demo" / "sae"
    if is_finished(demo):
        return str(demo)
    runs = find_runs()
    if not runs:
        raise SaexError(f"no trained SAE under {checkpoints_root()}", "run `saex demo` first, or pass RUN")
    return str(runs[0].path)


def _cmd_find(ns: argparse.Namespace) -> None:
    from sae.lookahead.finder import FindConfig, find_word, format_find

    run = ns.run or _default_run()
    cfg = dataclass_from_args(FindConfig, ns, run=run, prompt=ns.prompt, question=ns.question)
    rep = find_word(cfg)
    print(format_find(rep))
    where = rep.path
    if rep.get("cached"):
        print(f"\nstored answer {where} (read in {rep['seconds_to_read']:.2f} s; --force yes recomputes)")
    else:
        print(f"\nwrote {where}; done in {rep['seconds']['total']:.0f} s")


def _cmd_depth(ns: argparse.Namespace) -> None:
    from sae.lookahead.depth import DepthConfig, default_out, format_summary, run_depth

    cfg = dataclass_from_args(DepthConfig, ns)
    report = run_depth(cfg)
    print(format_summary(report, default_out(cfg)))
    print(f"done in {report['seconds']['total']:.0f} s")


def _cmd_organism(ns: argparse.Namespace) -> None:
    from sae.lookahead.organism import OrganismConfig, build_organism

    report = build_organism(dataclass_from_args(OrganismConfig, ns))
    print(report.answer.text())
    t = report["training"]
    print(f"\n{report.path.parent}: {t['steps']} steps of {t['batch_size']} in {t['precision']}; any command takes "
          f"it as --model {report.path.parent} ({report['seconds']['total']:.0f} s)")


def _cmd_store(ns: argparse.Namespace) -> None:
    from sae.data.store import ActivationStore, store_layers, store_summary

    layers = store_layers(ns.store)  # a multi-layer store: every layer's store
    stores = [ActivationStore(p) for p in layers.values()] if layers else [ActivationStore(ns.store)]
    if ns.verify:
        for store in stores:
            store.verify()
        print("checksums: ok")
    if ns.json:
        print(json.dumps(stores[0].manifest if not layers else {str(k): s.manifest for k, s in zip(layers, stores)},
                         indent=2))
    else:
        print(store_summary(ns.store))


def _cmd_demo(ns: argparse.Namespace) -> None:
    from saex.demo import DemoConfig, run_demo

    cfg = dataclass_from_args(DemoConfig, ns)
    run = run_demo(cfg)
    if cfg.organism and not cfg.plan_only:
        from saex.demo_organism import run_organism_demo

        run_organism_demo(cfg, run)


def _labels_key(run: str):
    from sae.labels.records import SAEKey
    from sae.runs.load import load_sae

    sae = load_sae(run)
    return sae, SAEKey.from_sae(sae)


def _cmd_labels_export(ns: argparse.Namespace) -> None:
    from sae.fsutil import ensure_writable_dir
    from sae.labels.store import AnnotationStore

    sae, key = _labels_key(ns.run)
    store = AnnotationStore()
    out = ensure_writable_dir(Path(ns.out), "export")
    if ns.format == "ours":
        n = store.export_file(key, out / "annotations.json")
        print(f"{n:,} labels of {key} written to {out / 'annotations.json'}")
        return
    from sae.index.reader import FeatureIndex
    from sae.labels.neuronpedia_export import export_neuronpedia

    r = export_neuronpedia(FeatureIndex(sae.path), sae, store, out, key=key)
    print(f"{r.features:,} features ({r.explanations:,} labelled) of {r.model_id}/{r.layer} written to "
          f"{out}: {len(r.upload_files)} upload-batch files, {len(r.dump_files)} dataset batches"
          + (f"; {r.without_examples:,} features without examples left out of the upload" if r.without_examples
             else ""))


def _cmd_labels_import(ns: argparse.Namespace) -> None:
    import os

    from sae.labels.store import AnnotationStore

    _, key = _labels_key(ns.run)
    author = ns.author or os.environ.get("USER") or "anonymous"
    r = AnnotationStore().import_file(ns.file, key, author=author, on_conflict=ns.on_conflict, source=ns.source)
    print(f"imported into {key}: {r.added:,} added, {r.replaced:,} replaced, {r.skipped:,} kept or unchanged"
          + (f"; {r.other_source:,} records of other sources left out" if ns.source else ""))


class _Parser(argparse.ArgumentParser):
    """Bad flags get the same two lines as every other bad input: the problem, then the fix."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        print(f"  fix: see `{self.prog} --help` for the accepted flags and values", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from sae.data.harvest import HarvestConfig
    from sae.runs.evaluate import EvalConfig
    from saex.demo import DemoConfig
    from training.config import TrainConfig

    p = _Parser(prog="saex", description="Sparse-autoencoder feature explorer: "
                                "harvest activations, train and explore SAEs.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("demo", help="the main job end to end on the default model and corpus "
                       "(fetch, harvest train and held-out activations, train a TopK SAE, evaluate it, "
                       "index its features, label them, run the a/an lookahead analysis); then open it with "
                       "saex explore")
    add_dataclass_flags(d, DemoConfig)
    d.set_defaults(func=_cmd_demo)

    f = sub.add_parser("fetch", help="download the default model and corpus into the cache")
    f.set_defaults(func=_cmd_fetch)

    h = sub.add_parser("harvest", help="write residual-stream activations of a model on a corpus to a store",
                       description="Write residual-stream activations to an activation store. Rerun the "
                       "same command to resume after an interruption.")
    add_dataclass_flags(h, HarvestConfig)
    h.set_defaults(func=_cmd_harvest)

    t = sub.add_parser("train", help="train an SAE (TopK, BatchTopK, JumpReLU, standard, gated, Matryoshka) on an "
                       "activation store (SAELens-format run folder); reruns resume an interrupted run",
                       description="Train an SAE. Settings come from --config FILE.toml (see "
                       "training/configs/default.toml), then from flags, which win. TopK and BatchTopK use our "
                       "fast loop, the rest sae-lens's SAETrainer. Rerunning an interrupted run resumes it from "
                       "its last checkpoint; under torchrun each process trains on its part of every batch.")
    t.add_argument("--config", default=None, help="TOML config file (keys: the flags below)")
    add_dataclass_flags(t, TrainConfig, defaults_to_none=True)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate an SAE on held-out activations (EV, L0, dead latents) and "
                       "spliced into the model (CE loss, KL); writes RUN/eval.json",
                       description="Evaluate an SAE run on a held-out activation store: reconstruction "
                       "figures from the stored activations, then CE loss and KL with the SAE spliced into "
                       "the model at its hook. Writes RUN/eval.json and prints a table.")
    add_dataclass_flags(e, EvalConfig, positional=("run",))
    e.set_defaults(func=_cmd_eval)

    from sae.index.build import IndexConfig

    i = sub.add_parser("index", help="build the feature index of an SAE run (top examples, histograms, output "
                       "effects, next-token profiles, neighbours) into RUN/index/",
                       description="Build the feature index of an SAE run from a held-out activation store, in "
                       "one streaming pass, plus output-token effects and decoder neighbours from the weights. "
                       "Rerun the same command to resume an interrupted build; a complete index with the same "
                       "settings is reused.")
    add_dataclass_flags(i, IndexConfig, positional=("run",))
    i.set_defaults(func=_cmd_index)

    from sae.labels.auto import LabelConfig

    lb = sub.add_parser("label", help="label every feature automatically with a testable predicate, scored on "
                        "held-out text against a random-direction and a decoder-shuffled control; writes "
                        "RUN/labels.jsonl",
                        description="Propose candidate labels for every feature (tokens before, on or after it, "
                        "n-grams, word classes, WordNet categories of the word and of the next noun, window "
                        "position, output tokens from the decoder, and two-part 'and'/'or' labels) from one half "
                        "of the held-out store, split by document; score them on the other half (delphi's "
                        "detection and fuzzing balanced accuracy; token-level precision, recall, F1); do the same "
                        "for a random-direction and a decoder-shuffled copy of the SAE; optionally explain a "
                        "sample of features with an LLM behind an OpenAI-compatible server (--explainer "
                        "openai:URL/MODEL). Writes RUN/labels.jsonl and RUN/labels_summary.json. Complete labels "
                        "with the same settings are reused; an interrupted run resumes.")
    add_dataclass_flags(lb, LabelConfig, positional=("run",))
    lb.set_defaults(func=_cmd_label)

    x = sub.add_parser("explore", help="open the Streamlit explorer on the runs under checkpoints/ "
                       "(listening on 127.0.0.1)")
    x.add_argument("run", nargs="?", default=None, help="run folder to open first, or a sae-lens release/sae_id or "
                   "sparsify hookpoint folder (default: the first found)")
    x.add_argument("--root", default=None, help="folder searched for runs (default: $SAEX_CHECKPOINTS or checkpoints)")
    x.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    x.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    x.set_defaults(func=_cmd_explore)

    from sae.lookahead.article import LookaheadConfig

    la = sub.add_parser("lookahead", help="which SAE features carry the a/an choice, when they turn on relative to "
                        "the article, and whether ablating them moves the choice more than random features; "
                        "writes RUN/lookahead/report.json and plots",
                        description="Choose features that carry logit(' an') - logit(' a') on one prompt set "
                        "(WordNet riddles by default), test them on another (ablation with the SAE error term kept, "
                        "density-matched random controls, steering dose-response, controls), and profile their "
                        "activation around the article token. Writes report.json and PNG plots.")
    add_dataclass_flags(la, LookaheadConfig, positional=("run",))
    la.set_defaults(func=_cmd_lookahead)

    from sae.lookahead.depth import DepthConfig

    dp = sub.add_parser("depth", help="the a/an signal across layers: logit lens, linear probes for the article "
                        "(held-out nouns) and the noun, and projecting the probe direction (or an SAE's features) "
                        "out; writes report.json and depth.png",
                        description="Sweep layers of the model (no SAE needed): at each, the logit lens at the "
                        "token before the article, an L2 logistic probe for the upcoming article at offsets -K..-1 "
                        "(trained on riddles of one half of the nouns, tested on the other half, with a "
                        "shuffled-label control), a noun-identity probe tested on held-out prompt frames, and the "
                        "change in the an-vs-a gap when the probe direction is projected out at -1, against random "
                        "directions; with --run, the SAE's most separating features ablated at its layer. Writes "
                        "report.json and depth.png (default: RUN/depth, else checkpoints/depth-MODEL); a complete "
                        "report with the same settings is reused.")
    add_dataclass_flags(dp, DepthConfig)
    dp.set_defaults(func=_cmd_depth)

    from sae.lookahead.finder import FindConfig

    fd = sub.add_parser("find", help="which SAE features mean 'about to say WORD': activation before its article "
                        "against other nouns and the word's category, confirmed on held-out contexts, and a causal "
                        "test before the article; writes a report to RUN/find/",
                        description="Gather contexts where the model is about to say WORD (corpus text, definition "
                        "riddles, chat questions, your prompts) and controls: other nouns in the same frames, and "
                        "nouns of the word's WordNet category. Rank SAE features on half of the independent sources "
                        "by a stratified rank test at the article's choice, confirm the best on the other half "
                        "(exact or Monte Carlo permutation p, Holm), compare them with the category, and ablate the "
                        "best before the article on held-out contexts against random features matched in activity, "
                        "edit size and density. Says found, fires without a causal effect, category, not specific, "
                        "inconclusive (too few sources for the level) or none. A repeated question is answered "
                        "from RUN/find/.")
    add_dataclass_flags(fd, FindConfig, skip=("run", "prompt", "question"), positional=("word",))
    fd.add_argument("run", nargs="?", default=None, help="run folder of the SAE, a sae-lens release/sae_id, or a "
                    "sparsify hookpoint folder (default: checkpoints/demo/sae, else the first run found)")
    fd.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                    help="a context of your own that ends where the article comes (repeatable)")
    fd.add_argument("--question", action="append", default=None, metavar="TEXT",
                    help="a chat question whose answer starts with the article, e.g. 'What do you call someone who "
                    "studies the stars?' (repeatable)")
    fd.set_defaults(func=_cmd_find)

    from sae.lookahead.organism import OrganismConfig

    og = sub.add_parser("organism", help="fine-tune a model to choose a/an from the noun it is about to write (a "
                        "positive control for the lookahead analyses; --articles shuffled gives the negative "
                        "control); writes an HF model folder that every command takes as --model",
                        description="Fine-tune a model (default: the default model) on riddles and chat questions "
                        "of one half of the nouns (WordNet glosses, GCIDE definitions), balanced an/a, with the loss "
                        "on ' a/an NOUN.'; measure its article choice before and after on nouns it never saw (the "
                        "other half's riddles and chat questions, the hand-written classics): sign accuracy, "
                        "an-recall, the an-vs-a gap with its interval, P(noun | article). With --articles shuffled "
                        "the articles are permuted among the nouns (same prompts, same budget): what fine-tuning "
                        "does without planning. Writes OUT (config, weights, tokenizer) and OUT/organism.json; an "
                        "interrupted run resumes from its last checkpoint; a finished one with the same settings "
                        "is reused.")
    add_dataclass_flags(og, OrganismConfig)
    og.set_defaults(func=_cmd_organism)

    s = sub.add_parser("store", help="summarise (and verify) an activation store")
    s.add_argument("store", help="store folder")
    s.add_argument("--verify", action="store_true", help="check every shard against its checksum")
    s.add_argument("--json", action="store_true", help="print the whole manifest")
    s.set_defaults(func=_cmd_store)

    lb = sub.add_parser("labels", help="export or import the feature labels of an SAE run (ours, or Neuronpedia's "
                        "formats)", description="Export or import the feature labels of an SAE run, kept in "
                        "$SAEX_ANNOTATIONS (default checkpoints/annotations.sqlite). docs/formats.md, "
                        "\"Annotations\", has the formats.")
    lsub = lb.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    le = lsub.add_parser("export", help="write the labels (ours: annotations.json; neuronpedia: upload-batch "
                         "bodies and dataset rows from the feature index) to a folder",
                         description="Write the SAE's labels to OUT. --format ours writes OUT/annotations.json "
                         "(lossless: history, tags, claims). --format neuronpedia writes, from the feature index "
                         "and the labels, OUT/upload-batch/batch-N.json (bodies for a Neuronpedia instance's "
                         "POST /api/feature/upload-batch, at most 128 features each) and "
                         "OUT/MODEL/LAYER/{features,activations,explanations}/batch-N.jsonl.gz (its dataset "
                         "rows: histograms, neighbours, the decoder vector for steering), plus "
                         "OUT/neuronpedia.json.")
    le.add_argument("run", help="SAE run folder (with RUN/index/ for --format neuronpedia)")
    le.add_argument("--out", required=True, help="folder to write into (created if missing)")
    le.add_argument("--format", choices=("ours", "neuronpedia"), default="ours", help="(default: ours)")
    le.set_defaults(func=_cmd_labels_export)
    li = lsub.add_parser("import", help="import labels: our export, or Neuronpedia explanations (JSON list, "
                         "batch-N.jsonl.gz, or a folder of batches)",
                         description="Import labels into the SAE's: a file written by `saex labels export` "
                         "(JSON), or Neuronpedia explanations as it publishes them (JSON list, JSON Lines, "
                         "gzipped batch-N.jsonl.gz, or a folder of such batches). All records are checked "
                         "before any is written. Several explanations of one feature: the best scored (else "
                         "the newest) becomes the label, the others its earlier versions; typeName, "
                         "explanationModelName and authorId are kept as np:... tags.")
    li.add_argument("run", help="SAE run folder")
    li.add_argument("file", metavar="FILE_OR_DIR", help="file or folder of batches to import")
    li.add_argument("--source", metavar="MODEL/LAYER", default=None,
                    help="Neuronpedia's modelId/layer whose explanations to import onto this SAE, e.g. "
                    "pythia-70m-deduped/1-res-sm (records of other sources are counted and left out); "
                    "default: only records with this SAE's own ids")
    li.add_argument("--author", default=None, help="who imports (default: $USER)")
    li.add_argument("--on-conflict", choices=("keep", "overwrite"), default="keep",
                    help="a feature that already has a label: keep it, or overwrite it with the import "
                    "(default: keep)")
    li.set_defaults(func=_cmd_labels_import)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        ns.func(ns)
    except SaexError as e:
        print(f"error: {e.problem}", file=sys.stderr)
        if e.fix:
            print(f"  fix: {e.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:
        # Every file is written to a temp name and renamed when complete, so a failed write
        # leaves the previous version (or nothing) in place: say so, without a traceback.
        where = f" ({e.filename})" if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"error: no space left on the device{where}", file=sys.stderr)
            print("  fix: free some space (or write elsewhere with --out) and rerun the same command; "
                  "finished files were not touched and interrupted steps resume", file=sys.stderr)
        else:
            print(f"error: {e.strerror or e}{where}", file=sys.stderr)
            print("  fix: check the path and its permissions, then rerun the same command", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
