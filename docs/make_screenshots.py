"""Screenshots of every explorer page on the demo run, for the README (docs/img/*.png).

Needs `make demo` (with its index and lookahead report) and Debian's chromium +
chromium-driver, as the browser test does:

    python docs/make_screenshots.py [--run checkpoints/demo/sae] [--feature N]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = [("overview", "", "Training curves"), ("feature", "&feature={feature}", "Top activations"),
         ("search", "", "find features by"), ("finder", "&word=island", "every test run"),
         ("prompt_lab", "", "Prompt lab"), ("lookahead", "", "Behaviour by prompt set"), ("depth", "", "Against depth"),
         ("compare", "&word=astronomer", "where the article and the noun become readable"),
         ("annotations", "", "Export / import")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="checkpoints/demo/sae")
    ap.add_argument("--feature", type=int, default=None, help="feature to show (default: the densest)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--port", type=int, default=8599)
    ap.add_argument("--pages", default=None, help="comma-separated page names to retake (default: all)")
    args = ap.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    feature = args.feature
    if feature is None:
        from sae.index.reader import FeatureIndex

        feature = int(FeatureIndex(args.run).array("density").argmax())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "saex", "explore", args.run, "--port", str(args.port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", args.port)) == 0:
                    break
            time.sleep(0.3)
        opts = Options()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"):
            opts.add_argument(a)
        opts.binary_location = "/usr/bin/chromium"
        d = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
        for name, extra, marker in PAGES:
            if not (ROOT / "explorer" / "views" / f"{name}.py").exists():
                continue
            if args.pages and name not in args.pages.split(","):
                continue
            d.get(f"http://127.0.0.1:{args.port}/{'' if name == 'overview' else name}?run={args.run}"
                  + extra.format(feature=feature))
            WebDriverWait(d, 300).until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), marker))
            time.sleep(3)  # let charts finish drawing
            d.save_screenshot(str(out / f"{name}.png"))
            print(f"wrote {out / f'{name}.png'}")
        d.quit()
    finally:
        server.terminate()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
