"""sae.labels.llm against a local fake chat-completions server (tests/fake_llm.py: no network
beyond 127.0.0.1; the `server` fixture comes from conftest)."""

from __future__ import annotations

import re
import socket

import pytest

from sae.errors import SaexError
from sae.labels.llm import Example, ExplainerReplyError, OpenAIExplainer, parse_detection, parse_explanation

MODEL = "org/fake-model-7B"


def example(text: str, firing: set[str], value: float = 2.0) -> Example:
    tokens = [" " + w for w in text.split()]
    return Example(tokens, [value if t.strip() in firing else 0.0 for t in tokens])


def user_prompt(request: dict) -> str:
    return request["body"]["messages"][1]["content"]


CAT_EXAMPLES = [example("the cat sat on the mat", {"cat"}), example("a black cat ran", {"cat"}),
                example("my cat and your cat", {"cat"})]


def test_explain_names_the_firing_token_and_sends_a_chat_request(server):
    explainer = OpenAIExplainer(server.url, MODEL, temperature=0.3, max_tokens=123)
    assert explainer.explain(CAT_EXAMPLES) == "the word cat"
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions"
    body = req["body"]
    assert body["model"] == MODEL and body["temperature"] == 0.3 and body["max_tokens"] == 123
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "[EXPLANATION]:" in body["messages"][0]["content"]
    assert "Example 3:" in user_prompt(req)
    assert "Authorization" not in req["headers"]
    assert explainer.name == f"openai:{server.url}/{MODEL}"


def test_api_key_argument_then_environment_sets_the_bearer_header(server, monkeypatch):
    OpenAIExplainer(server.url, MODEL, api_key="sk-arg").explain(CAT_EXAMPLES)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    OpenAIExplainer(server.url, MODEL).explain(CAT_EXAMPLES)
    OpenAIExplainer(server.url, MODEL, api_key="sk-wins").explain(CAT_EXAMPLES)
    assert [r["headers"].get("Authorization") for r in server.requests] == \
        ["Bearer sk-arg", "Bearer sk-env", "Bearer sk-wins"]


def test_consecutive_firing_tokens_share_one_marker_pair(server):
    ex = Example([" the", " New", " York", " Times", " said", " New", " things"], [0, 1.0, 3.0, 2.0, 0, 1.5, 0])
    OpenAIExplainer(server.url, MODEL).explain([ex])
    prompt = user_prompt(server.requests[0])
    assert "Example 1:  the<< New York Times>> said<< New>> things" in prompt
    assert prompt.count("<<") == 2 and prompt.count(">>") == 2
    # activations on delphi's 0..10 scale of the maximum (3.0), firing tokens only
    assert 'Activations: (" New", 3), (" York", 10), (" Times", 7), (" New", 5)' in prompt


def test_activation_values_can_be_left_out(server):
    OpenAIExplainer(server.url, MODEL, show_activations=False).explain(CAT_EXAMPLES)
    req = server.requests[0]
    assert "Activations:" not in user_prompt(req) and "Activations:" not in req["body"]["messages"][0]["content"]
    assert "<< cat>>" in user_prompt(req)


def test_detect_answers_in_order_in_batches(server):
    texts = ["the cat sat", "a dog ran", "cat and dog", "no animals here", "one more cat", "birds fly", "cat"]
    windows = [[" " + w for w in t.split()] for t in texts]
    hits = OpenAIExplainer(server.url, MODEL).detect("the word cat", windows, batch_size=3)
    assert hits == [True, False, True, False, True, False, True]
    assert len(server.requests) == 3
    shown = [re.findall(r"^Example (\d+): (.*)$", user_prompt(r), re.M) for r in server.requests]
    assert [[i for i, _ in batch] for batch in shown] == [["0", "1", "2"], ["0", "1", "2"], ["0"]]
    assert [text.strip() for batch in shown for _, text in batch] == texts  # unmarked, in order
    assert all("Latent explanation: the word cat" in user_prompt(r) for r in server.requests)


def test_detect_retries_a_bad_reply_then_succeeds(server):
    server.replies = ["I think the first one.", "[1, 0, 1]"]  # garbage, then the wrong length
    windows = [[" cat"], [" dog"]]
    assert OpenAIExplainer(server.url, MODEL, max_retries=2).detect("the word cat", windows) == [True, False]
    assert len(server.requests) == 3
    retry = server.requests[1]["body"]["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2]["content"] == "I think the first one."


def test_detect_gives_up_after_max_retries(server):
    server.replies = ["[1, 2]", "[yes, no]", "nothing", "[1, 0]"]
    with pytest.raises(ExplainerReplyError, match="3 tries"):
        OpenAIExplainer(server.url, MODEL, max_retries=2).detect("the word cat", [[" cat"], [" dog"]])
    assert len(server.requests) == 3


def test_explain_gives_up_on_empty_replies(server):
    server.replies = ["", "   \n", "[EXPLANATION]:"]
    with pytest.raises(ExplainerReplyError):
        OpenAIExplainer(server.url, MODEL, max_retries=2).explain(CAT_EXAMPLES)
    assert len(server.requests) == 3


@pytest.mark.parametrize("reply, expected", [
    ("thinking...\n[EXPLANATION]:  The token  \"er\" at the end.\n", 'The token "er" at the end.'),
    ("[EXPLANATION]:\n**Names of inventors**\n", "Names of inventors"),
    ("<think>[EXPLANATION]: draft</think>\nCommon idioms.\n\n", "Common idioms."),
    ("[EXPLANATION]: a\n[EXPLANATION]: 'the word cat'", "the word cat"),
    ("<think>never finished", None),
])
def test_parse_explanation(reply, expected):
    assert parse_explanation(reply) == expected


@pytest.mark.parametrize("reply, n, expected", [
    ("Example 0 fits [maybe].\n```python\n[1, 0,1]\n```", 3, [True, False, True]),
    ("[1, 0] then [0, 0, 1]", 3, [False, False, True]),
    ("[1, 0]", 3, None),
    ("[1, 0.5, 0]", 3, None),
    ("[]", 0, []),
])
def test_parse_detection(reply, n, expected):
    assert parse_detection(reply, n) == expected


@pytest.mark.parametrize("spec, url, model", [
    ("openai:http://localhost:8000/v1/Qwen/Qwen2.5-7B", "http://localhost:8000/v1", "Qwen/Qwen2.5-7B"),
    ("openai:http://127.0.0.1:11434/v1/llama3.1", "http://127.0.0.1:11434/v1", "llama3.1"),
    ("openai:https://example.org/api/v1/org/model/", "https://example.org/api/v1", "org/model"),
    ("openai:http://localhost:8080/llama", "http://localhost:8080", "llama"),
    ("openai:http://localhost:8080/serve/gemma-2b", "http://localhost:8080/serve", "gemma-2b"),
])
def test_from_spec(spec, url, model):
    explainer = OpenAIExplainer.from_spec(spec, timeout=5.0)
    assert (explainer.url, explainer.model, explainer.timeout) == (url, model, 5.0)
    assert explainer.name == f"openai:{url}/{model}"


@pytest.mark.parametrize("spec", [
    "http://localhost:8000/v1/model", "openai:localhost:8000/v1/model", "openai:http://localhost:8000/v1",
    "openai:http://localhost:8000/v1/", "openai:http://localhost:8000", "openai:ftp://host/v1/m", "openai:",
    "openai:http://localhost:8000/v1/model?x=1",
])
def test_from_spec_rejects_malformed(spec):
    with pytest.raises(SaexError, match="openai:URL/MODEL"):
        OpenAIExplainer.from_spec(spec)


def test_closed_port_is_a_saex_error_naming_the_url(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(SaexError) as info:
        OpenAIExplainer(url, MODEL, timeout=5).explain(CAT_EXAMPLES)
    assert type(info.value) is SaexError
    assert f"{url}/chat/completions" in info.value.problem
    assert "start the server" in info.value.fix


def test_timeout_is_a_saex_error(server):
    server.delay = 1.0
    with pytest.raises(SaexError, match="did not answer within 0.2s"):
        OpenAIExplainer(server.url, MODEL, timeout=0.2).detect("the word cat", [[" cat"]])


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_status_is_a_saex_error(server, status):
    server.status = status
    with pytest.raises(SaexError) as info:
        OpenAIExplainer(server.url, MODEL).explain(CAT_EXAMPLES)
    assert type(info.value) is SaexError
    assert f"HTTP {status}" in info.value.problem and server.url in info.value.problem
    assert f"The model `{MODEL}` does not exist" in info.value.problem  # the server's own message
    assert (MODEL in info.value.fix) == (status == 404)


def test_nothing_is_sent_for_nothing_to_score(server):
    explainer = OpenAIExplainer(server.url, MODEL)
    assert explainer.detect("the word cat", []) == []
    with pytest.raises(SaexError):
        explainer.explain([])
    with pytest.raises(SaexError):
        explainer.explain([Example([" a", " b"], [1.0])])
    assert server.requests == []
