"""Which activation store belongs to an SAE run, and whether a store or a model matches it:
the held-out store beside the training store, and checks of width, hook point and model
weights before any figure is computed on the wrong data."""

from __future__ import annotations

from pathlib import Path

from sae.data.models import LoadedModel, parse_hook_point
from sae.data.store import MANIFEST_FILE, ActivationStore
from sae.errors import SaexError
from sae.runs.load import LoadedSAE


def default_heldout_store(sae: LoadedSAE) -> Path:
    """The run's training store with `-train` in its name replaced by `-heldout`."""
    trained_on = (sae.run or {}).get("store")
    if not trained_on:
        raise SaexError(f"{sae.path} has no run.json naming the store it was trained on",
                        "pass --store with a held-out activation store of the same model and hook")
    train = Path(trained_on)
    if "-train" not in train.name:
        raise SaexError(f"cannot guess the held-out store of {train}: its name holds no '-train'",
                        "pass --store with a held-out activation store of the same model and hook")
    held = train.with_name("-heldout".join(train.name.rsplit("-train", 1)))
    if not (held / MANIFEST_FILE).exists():
        raise SaexError(f"the held-out store {held} (next to the training store) does not exist or is unfinished",
                        f"harvest it (saex harvest --split heldout --out {held} with the training store's "
                        "model, layer and corpus), or pass --store")
    return held


def _same_hook(name: str, store: ActivationStore) -> bool:
    """`blocks.L.hook_resid_post`, `model.layers.L` (sae-lens's HookedProxyLM names) ...
    all name the store's hook when they parse to its layer."""
    hook = store.manifest["hook"]
    if name in (hook["name"], hook["module_path"]):
        return True
    try:
        layers_path = hook["module_path"].rsplit(".", 1)[0]
        return parse_hook_point(name, int(store.manifest["model"]["n_layers"]), layers_path).layer == hook["layer"]
    except (SaexError, KeyError, ValueError):
        return False


def check_store(sae: LoadedSAE, store: ActivationStore) -> list[str]:
    """Refuse a store the SAE cannot be evaluated on; return warnings for what cannot be checked."""
    m = store.manifest
    if store.d_model != sae.d_in:
        raise SaexError(f"the store {store.path} holds {store.d_model}-dimensional activations, "
                        f"the SAE reads {sae.d_in}", "use a store of the model and hook the SAE was trained on")
    if sae.hook_name is not None and not _same_hook(sae.hook_name, store):
        raise SaexError(f"the SAE was trained at {sae.hook_name}, the store {store.path} is at {store.hook_name}",
                        "use a store harvested at the SAE's hook point")
    store_sha = m["model"].get("weights_sha256")
    if sae.model_weights_sha256 and store_sha and sae.model_weights_sha256 != store_sha:
        raise SaexError(f"the SAE was trained on model weights {sae.model_weights_sha256[:12]}... "
                        f"({sae.model_spec}), the store {store.path} on {store_sha[:12]}... ({m['model']['spec']})",
                        "use a store harvested from the SAE's model")
    warnings = []
    if sae.hook_name is None:
        warnings.append("the SAE records no hook point: the store's was assumed")
    if not sae.model_weights_sha256:
        warnings.append("the SAE records no model weights hash: the store's model was assumed")
    if m["corpus"].get("split") != "heldout":
        warnings.append(f"the store holds {m['corpus'].get('split')!r} text, not held-out text")
    trained_on = (sae.run or {}).get("store")
    if trained_on and Path(trained_on).resolve() == store.path.resolve():
        warnings.append("the store is the one the SAE was trained on: these are training figures")
    return warnings


def check_model(lm: LoadedModel, store: ActivationStore) -> None:
    m = store.manifest
    if lm.weights_sha256 != m["model"]["weights_sha256"]:
        raise SaexError(f"the model {lm.spec} (weights {lm.weights_sha256[:12]}...) is not the one the store "
                        f"{store.path} was harvested from "
                        f"({m['model']['spec']}, {m['model']['weights_sha256'][:12]}...)",
                        "pass --model with the store's model, or leave --model out")
    if lm.d_model != store.d_model:
        raise SaexError(f"the model {lm.spec} has d_model {lm.d_model}, the store {store.d_model}",
                        "pass --model with the store's model")
