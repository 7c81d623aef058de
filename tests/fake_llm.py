"""A local fake OpenAI-compatible chat-completions server for the LLM explainer's tests
(127.0.0.1 only). The fake "model" reads its prompts the way a real one should: asked for an
explanation, it names the token most often marked <<...>>; asked to detect, it answers 1 for
each numbered example that contains the explanation's last word. Tests may replace
`fake_model` (monkeypatch) or script `replies`."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def fake_model(messages: list[dict]) -> str:
    user = messages[1]["content"]
    explanation = re.search(r"^Latent explanation: (.*)$", user, re.M)
    if explanation:
        word = explanation.group(1).split()[-1]
        examples = re.findall(r"^Example \d+: (.*)$", user, re.M)
        return "Sure.\n" + str([int(word in ex.split()) for ex in examples])
    marked = Counter(m.strip() for m in re.findall(r"<<(.*?)>>", user))
    return f"The marked tokens are similar.\n[EXPLANATION]: the word {marked.most_common(1)[0][0]}"


class FakeServer:
    """Records every request; answers with `replies` (in turn) while any are left, else the fake model."""

    def __init__(self):
        self.requests: list[dict] = []
        self.replies: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.url = ""

    def answer(self, path: str, headers: dict, body: dict) -> tuple[int, dict]:
        self.requests.append({"path": path, "headers": headers, "body": body})
        time.sleep(self.delay)
        if self.status != 200:
            return self.status, {"error": {"message": f"The model `{body['model']}` does not exist."}}
        content = self.replies.pop(0) if self.replies else fake_model(body["messages"])
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # urllib would send 127.0.0.1 through them
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, reply = fake.answer(self.path, dict(self.headers), body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield fake
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
