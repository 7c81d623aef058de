"""Explorer latency on the demo run: a feature page warm from the index, and a 64-token
prompt analysed (model up to the SAE, SAE encode, next-token view). Figures are medians.

    python bench/app.py [--run checkpoints/demo/sae] [--pages 10]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="checkpoints/demo/sae")
    ap.add_argument("--pages", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from streamlit.testing.v1 import AppTest

    from bench.harvest import cpu_name
    from sae.data.models import load_model
    from sae.index.reader import FeatureIndex
    from sae.lookahead.interventions import Intervener
    from sae.lookahead.prompt_lab import next_token, read_prompt
    from sae.runs.load import load_sae

    rng = random.Random(0)
    index = FeatureIndex(args.run)
    feats = [rng.randrange(index.d_sae) for _ in range(50)]
    it = iter(feats * 100)
    read_ms = _median_ms(lambda: index.feature(next(it)), 50)

    os.environ["SAEX_CHECKPOINTS"] = str(Path(args.run).parent)
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=300)
    at.query_params["run"] = args.run
    at.query_params["feature"] = "0"
    at.switch_page("views/feature.py").run()  # cold: opens the index, loads the SAE
    pages = iter(feats)

    def page():
        at.query_params["feature"] = str(next(pages))
        at.run()
        assert not at.exception, at.exception

    page_ms = _median_ms(page, args.pages)

    sae = load_sae(args.run)
    iv = Intervener(load_model(sae.model_spec, device="cpu"), sae)
    words = ("the astronomer who studies stars and planets at night wrote a long letter to an old friend "
             "about the island where the river meets the sea and every bird sings before the morning light")
    tok = iv.lm.tokenizer
    ids = tok(words * 4, add_special_tokens=False)["input_ids"][:63]
    text = tok.decode(ids)
    view = read_prompt(iv, text)
    n_tokens = len(view.tokens)
    prompt_ms = _median_ms(lambda: next_token(iv, read_prompt(iv, text)), 5)

    print(f"{args.run} on {cpu_name()} ({torch.get_num_threads()} threads)")
    print("| what | median |\n| --- | ---: |")
    print(f"| one feature's record from the index (FeatureIndex.feature) | {read_ms:.1f} ms |")
    print(f"| the whole Feature page, warm (Streamlit script run, {args.pages} features) | {page_ms:.0f} ms |")
    print(f"| a {n_tokens}-token prompt: model to the hook, SAE encode, next-token view | {prompt_ms:.0f} ms |")


if __name__ == "__main__":
    main()
