"""Pretrained SAEs from sae-lens's directory (`pretrained_saes.yaml`), by `release/sae_id`.

`load_sae("pythia-70m-deduped-res-sm/blocks.1.hook_resid_post")` (and every command taking
RUN) resolves the spec with sae-lens's own `SAE.from_pretrained`, which reads the HF hub or
its local cache (offline too, when the cache holds the files), and writes a run folder of
ours, `checkpoints/pretrained/<release>/<sae_id>` (`/` in the id becomes `__`;
`$SAEX_CHECKPOINTS` moves the root): `cfg.json` + `sae_weights.safetensors` as sae-lens
saves them, `sparsity.safetensors` when the release has one, and `run.json` recording where
the SAE came from (`pretrained`), the HF model it reads (`model.spec`) and its hook point
(`hook`). The index, evaluation and annotations go there, never into the HF cache; a folder
already written is reused without asking sae-lens or the hub again.

What is refused, before the weights are downloaded, and why: sae-explorer reads the
residual stream after a block of a plain HF model, so

- the hook must be `blocks.L.hook_resid_post`; `blocks.L.hook_resid_pre` is the same vector
  as `blocks.{L-1}.hook_resid_post` and is read there (L > 0; block 0's input is the token
  embedding, which is not read); attention and MLP outputs, `hook_z`, `resid_mid`, single
  heads and transcoders are refused;
- the SAE must not expect TransformerLens weight processing that changes the residual
  stream: `center_writing_weights=True` (in the config's `model_from_pretrained_kwargs`,
  sae-lens's per-release overrides included, e.g. gpt2-small-res-jb) removes each vector's
  mean over d_model, which a plain HF model does not. `fold_ln`, `fold_value_biases` and
  `center_unembed` leave the residual stream unchanged and are accepted;
- input normalisation sae-lens cannot fold into the weights (`expected_average_only_in`
  without a known scaling factor) is refused: at inference sae-lens would skip the scaling.

The config is checked after sae-lens's own defaulting of old (pre-6.0) configs and its
per-release overrides (`load_sae_config_from_huggingface`). `apply_b_dec_to_input` needs
nothing: sae-lens's `encode` (and our fast encoders) honour it.

sae-lens names models as TransformerLens does (`gpt2-small`, `pythia-70m-deduped`); `MODELS`
maps them to HF ids for `load_model`; names that already look like HF ids (`org/name`) pass
through; any other name leaves the model unknown (`model.spec` null: pass `--model`).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from sae.errors import SaexError
from sae.fsutil import write_json_atomic
from sae.runs.catalogue import checkpoints_root
from sae.runs.files import CFG_FILE, RUN_FILE, SPARSITY_FILE, WEIGHTS_FILE, is_finished

PRETRAINED_DIR = "pretrained"
"""Under the checkpoints root: where run folders of pretrained SAEs are written."""

# TransformerLens model names used in sae-lens's directory -> HF hub ids.
MODELS = {
    "gpt2-small": "gpt2",
    "gpt2": "gpt2",
    "gpt2-medium": "gpt2-medium",
    "pythia-70m-deduped": "EleutherAI/pythia-70m-deduped",
    "pythia-70m": "EleutherAI/pythia-70m",
    "pythia-160m-deduped": "EleutherAI/pythia-160m-deduped",
    "pythia-410m-deduped": "EleutherAI/pythia-410m-deduped",
    "gemma-2b": "google/gemma-2b",
    "gemma-2b-it": "google/gemma-2b-it",
    "gemma-2-2b": "google/gemma-2-2b",
    "gemma-2-2b-it": "google/gemma-2-2b-it",
    "gemma-2-9b": "google/gemma-2-9b",
    "gemma-2-9b-it": "google/gemma-2-9b-it",
    "gemma-2-27b": "google/gemma-2-27b",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "mistral-7b-instruct": "mistralai/Mistral-7B-Instruct-v0.1",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-14b": "Qwen/Qwen3-14B",
}

# Architectures that only transcode (module input -> module output): never an SAE of the stream.
_TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder", "temporal")
# TransformerLens processing flags that change the residual stream itself.
_STREAM_CHANGING = ("center_writing_weights",)


def hf_model_id(name: str | None) -> str | None:
    """The HF hub id of a sae-lens (TransformerLens) model name, or None when unknown."""
    if not name:
        return None
    if name in MODELS:
        return MODELS[name]
    if name.lower() in MODELS:
        return MODELS[name.lower()]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):  # already an HF id
        return name
    return None


def _directory() -> dict:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def _maybe_listed(release: str) -> bool:
    """A cheap first look (no sae-lens import, no YAML parse): does sae-lens's
    pretrained_saes.yaml have a top-level key `release`? A missing folder then fails fast."""
    found = importlib.util.find_spec("sae_lens")
    if found is None or not found.submodule_search_locations:
        return False
    try:
        text = (Path(list(found.submodule_search_locations)[0]) / "pretrained_saes.yaml").read_text()
    except OSError:
        return True  # let sae-lens's own reader decide
    return text.startswith(f"{release}:") or f"\n{release}:" in text


def parse_spec(spec: str | os.PathLike) -> tuple[str, str] | None:
    """(release, sae_id) when `spec` is `release/sae_id` of sae-lens's directory and not an
    existing path; else None. The id may itself hold `/` (gemma-scope's do)."""
    s = str(spec)
    if "/" not in s or s.startswith(("/", ".", "~")) or Path(s).expanduser().exists():
        return None
    release, sae_id = s.split("/", 1)
    if not release or not sae_id:
        return None
    if not _maybe_listed(release):
        return None
    try:
        directory = _directory()
    except Exception:  # sae-lens's yaml unreadable: not a spec we can resolve
        return None
    return (release, sae_id) if release in directory else None


def run_dir(release: str, sae_id: str, root: str | Path | None = None) -> Path:
    """Where the run folder of release/sae_id lives (whether written or not)."""
    root = Path(root) if root is not None else checkpoints_root()
    return root / PRETRAINED_DIR / release / sae_id.replace("/", "__")


# --------------------------------------------------------------------------- checks


def _get(cfg: dict, key: str):
    """A metadata key of a sae-lens config: a top-level value (sae-lens's per-release
    overrides land there) wins over `metadata`."""
    if key in cfg:
        return cfg[key]
    return (cfg.get("metadata") or {}).get(key)


def resid_hook(hook_name: str | None, where: str) -> tuple[str, int, str | None]:
    """(our hook name, layer, note) for a sae-lens hook name, or a SaexError: only the
    residual stream after a block is read (resid_pre of block L > 0 is resid_post of L-1)."""
    fix = "choose an SAE of the residual stream (blocks.L.hook_resid_post) from this release or another"
    if not hook_name:
        raise SaexError(f"{where} names no hook point", fix)
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", hook_name)
    if m:
        return hook_name, int(m.group(1)), None
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", hook_name)
    if m:
        layer = int(m.group(1))
        if layer == 0:
            raise SaexError(f"{where} reads blocks.0.hook_resid_pre, the token embeddings: sae-explorer reads the "
                            "residual stream after a block, not the embeddings", fix)
        name = f"blocks.{layer - 1}.hook_resid_post"
        return name, layer - 1, f"{hook_name} (the input of block {layer}) is read as {name}, the same vector"
    m = re.fullmatch(r"(?:model\.|gpt_neox\.|transformer\.)?(?:layers|h)\.(\d+)", hook_name)
    if m:  # an HF module path: a decoder block's output is resid_post
        layer = int(m.group(1))
        name = f"blocks.{layer}.hook_resid_post"
        return name, layer, f"{hook_name} (an HF block's output) is read as {name}"
    raise SaexError(f"{where} reads {hook_name}, which is not the residual stream after a block: sae-explorer "
                    "reads only blocks.L.hook_resid_post (and hook_resid_pre, the same vector), not attention or MLP "
                    "outputs, hook_z or resid_mid", fix)


def check_config(cfg: dict, where: str, architectures: tuple[str, ...] | None = None,
                 scaling_known: bool = False) -> tuple[str, int, str | None]:
    """Refuse an SAE config sae-explorer cannot read (see the module docstring); return
    resid_hook's (hook name, layer, note). `cfg`: a sae-lens config, defaults filled."""
    arch = cfg.get("architecture")
    if arch in _TRANSCODERS or "transcoder" in str(arch):
        raise SaexError(f"{where} is a {arch}, which maps a module's input to its output and does not reconstruct "
                        "the residual stream", "choose an SAE (a *-res-* release) instead of a transcoder")
    if architectures is not None and arch not in architectures:
        raise SaexError(f"{where} has architecture {arch!r}, which sae-explorer does not read",
                        f"choose an SAE of one of: {', '.join(architectures)}")
    if _get(cfg, "hook_head_index") is not None:
        raise SaexError(f"{where} reads a single attention head (hook_head_index {_get(cfg, 'hook_head_index')})",
                        "choose an SAE of the residual stream")
    if cfg.get("reshape_activations", "none") not in (None, "none"):
        raise SaexError(f"{where} reshapes its input ({cfg['reshape_activations']}): it reads attention heads",
                        "choose an SAE of the residual stream")
    kwargs = _get(cfg, "model_from_pretrained_kwargs") or {}
    processed = [k for k in _STREAM_CHANGING if kwargs.get(k)]
    if processed:
        flags = ", ".join(f"{k}=True" for k in processed)
        raise SaexError(f"{where} was trained on TransformerLens activations with {flags} (each residual vector "
                        "minus its mean over d_model): a plain HF model's residual stream, which sae-explorer reads, "
                        "does not match it",
                        "choose an SAE trained without weight processing (sae-lens's from_pretrained_no_processing; "
                        "most releases since 2024 are)")
    hook = resid_hook(_get(cfg, "hook_name"), where)
    norm = cfg.get("normalize_activations") or "none"
    if norm in ("expected_average_only_in", "covariance_whitening") and not scaling_known:
        raise SaexError(f"{where} expects its input normalised ({norm}) with a factor sae-lens does not know, so "
                        "it would read unscaled activations", "choose an SAE with normalize_activations none")
    return hook


# --------------------------------------------------------------------------- resolving


def _complete(out: Path, release: str, sae_id: str) -> bool:
    if not (is_finished(out) and (out / RUN_FILE).is_file()):
        return False
    try:
        got = json.loads((out / RUN_FILE).read_text()).get("pretrained") or {}
    except (OSError, ValueError):
        return False
    return got.get("release") == release and got.get("sae_id") == sae_id


def _hub_error(release: str, sae_id: str, e: Exception) -> SaexError:
    offline = "offline" in str(e).lower() or type(e).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled")
    fix = ("it is not in the local HF cache ($HF_HOME/hub) and the hub is not reachable: go online once (unset "
           "HF_HUB_OFFLINE) or copy the files into the cache" if offline else
           "check the network and that the release and id exist in sae-lens's pretrained_saes.yaml")
    return SaexError(f"sae-lens could not fetch {release}/{sae_id} ({type(e).__name__}: {e})", fix)


def materialize(release: str, sae_id: str, architectures: tuple[str, ...] | None = None,
                root: str | Path | None = None) -> Path:
    """The run folder of release/sae_id (see the module docstring), written on first use."""
    out = run_dir(release, sae_id, root)
    if _complete(out, release, sae_id):
        return out
    directory = _directory()
    lookup = directory.get(release)
    if lookup is None:
        raise SaexError(f"{release} is not a release in sae-lens's pretrained_saes.yaml",
                        "see https://decoderesearch.github.io/SAELens/latest/pretrained_saes/ for the releases")
    if sae_id not in lookup.saes_map:
        ids = list(lookup.saes_map)
        near = difflib.get_close_matches(sae_id, ids, n=3, cutoff=0.5) or ids[:3]
        raise SaexError(f"release {release} has no SAE {sae_id!r} ({len(ids)} ids)",
                        f"give one of its ids, e.g. {', '.join(f'{release}/{i}' for i in near)}")
    where = f"the pretrained SAE {release}/{sae_id}"

    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface
    from sae_lens.loading.pretrained_saes_directory import get_norm_scaling_factor

    try:  # the config first (small): refuse before downloading the weights
        cfg = load_sae_config_from_huggingface(release, sae_id, device="cpu")
    except Exception as e:
        raise _hub_error(release, sae_id, e) from None
    scaling_known = get_norm_scaling_factor(release, sae_id) is not None
    hook_name, layer, note = check_config(cfg, where, architectures, scaling_known=scaling_known)
    try:
        with warnings.catch_warnings():  # "load the model with from_pretrained_no_processing": checked above
            warnings.filterwarnings("ignore", message=".*model_from_pretrained_kwargs")
            sae, _, log_sparsity = SAE.from_pretrained_with_cfg_and_sparsity(release, sae_id, device="cpu",
                                                                             dtype="float32")
    except Exception as e:
        raise _hub_error(release, sae_id, e) from None
    check_config(sae.cfg.to_dict() | {"model_from_pretrained_kwargs": _get(cfg, "model_from_pretrained_kwargs")},
                 where, architectures)  # the SAE as loaded: normalisation folded or not

    tl_model = lookup.model or _get(cfg, "model_name")
    spec = hf_model_id(tl_model)
    model = {"spec": spec, "saelens_name": tl_model}
    if spec is None:
        model["note"] = f"no HF id known for sae-lens's model name {tl_model!r}: pass --model"
    hook = {"name": hook_name, "layer": layer, "saelens_name": _get(cfg, "hook_name")}
    if note:
        hook["note"] = note
    record = {"pretrained": {"release": release, "sae_id": sae_id, "repo_id": lookup.repo_id,
                             "path": lookup.saes_map[sae_id], "neuronpedia_id": lookup.neuronpedia_id.get(sae_id),
                             "conversion_func": lookup.conversion_func, "sae_lens_version": _sae_lens_version()},
              "model": model, "hook": hook, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_run_folder(out, sae, record, log_sparsity)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return out


def _sae_lens_version() -> str | None:
    try:
        import sae_lens

        return sae_lens.__version__
    except Exception:
        return None


def write_run_folder(out: Path, sae, record: dict, log_sparsity=None) -> Path:
    """Write a sae-lens SAE module into `out` as sae-lens saves it (`save_model`), plus
    run.json (and sparsity.safetensors), each file renamed into place, cfg.json last (its
    presence marks the folder complete, as for trained runs). Used by sae.runs.sparsify too."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / CFG_FILE).unlink(missing_ok=True)  # replacing a stale import: incomplete until the new cfg.json lands
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".import.pid{os.getpid()}."))
    try:
        sae.save_model(tmp)
        os.replace(tmp / WEIGHTS_FILE, out / WEIGHTS_FILE)
        if log_sparsity is not None:
            save_file({"sparsity": log_sparsity.detach().float().cpu().contiguous()}, str(tmp / SPARSITY_FILE))
            os.replace(tmp / SPARSITY_FILE, out / SPARSITY_FILE)
        write_json_atomic(out / RUN_FILE, record)
        os.replace(tmp / CFG_FILE, out / CFG_FILE)  # last: marks the folder complete
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
