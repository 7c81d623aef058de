"""An optional LLM explainer and detection scorer for features, talking to any OpenAI-compatible
chat-completions endpoint (vLLM, llama.cpp's llama-server, ollama, ...).

    explainer = OpenAIExplainer.from_spec("openai:http://localhost:8000/v1/Qwen/Qwen2.5-7B-Instruct")
    text = explainer.explain([Example(tokens, activations), ...])    # "the word cat"
    hits = explainer.detect(text, [window_tokens, ...])              # [True, False, ...]

Nothing here touches the network until a method is called on an explainer built from a URL the
user gave. HTTP is urllib from the standard library; each call is one POST {url}/chat/completions
with a system and a user message, and the reply is choices[0].message.content.

The prompts follow EleutherAI's delphi (github.com/EleutherAI/delphi, read at commit 3c2e139):

- EXPLAIN_SYSTEM / EXPLAIN_ONE_SHOT adapt the default explainer's prompt
  (delphi/explainers/default/prompts.py: SYSTEM and EXAMPLE_1 / EXAMPLE_1_ACTIVATIONS /
  EXAMPLE_1_EXPLANATION; the highlighting is delphi/explainers/explainer.py `_highlight`, the
  activation line `_join_activations`, the reply parsing `parse_explanation`). Firing tokens are
  marked <<like this>>, a run of consecutive firing tokens in one pair; with show_activations each
  example is followed by its firing tokens' activations on delphi's 0-10 scale. Changes: a token
  is marked when it fires at all (activation > 0; delphi marks those above 0.3 x the maximum), the
  one few-shot example is kept (of three) and sits in the system message, and there is no
  chain-of-thought variant.
- DETECT_SYSTEM / DETECT_ONE_SHOT / DETECT_USER adapt the detection scorer's prompt
  (delphi/scorers/classifier/prompts/detection_prompt.py: DSCORER_SYSTEM_PROMPT,
  DSCORER_EXAMPLE_ONE / DSCORER_RESPONSE_ONE, GENERATION_PROMPT; examples numbered from 0 as in
  delphi/scorers/classifier/classifier.py `_build_prompt`). Changes: the answer is asked for as
  "1 if the example has the feature", one example (rewritten as plain text) instead of three.

A reply that cannot be parsed is answered once more with the bad reply and a short correction
(EXPLAIN_CORRECTION / DETECT_CORRECTION), up to max_retries times, then ExplainerReplyError.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sae.errors import SaexError

T = TypeVar("T")

SPEC_PREFIX = "openai:"
SPEC_FORM = ('"openai:URL/MODEL", e.g. "openai:http://localhost:8000/v1/Qwen/Qwen2.5-7B-Instruct" '
             'or "openai:http://127.0.0.1:11434/v1/llama3.1"')
API_KEY_ENV = "OPENAI_API_KEY"
MAX_SHOWN_ACTIVATIONS = 10  # per example, as delphi's _join_activations (long runs drown the text)
ACTIVATION_SCALE = 10  # delphi shows activations as integers 0..10 of the maximum

EXPLAIN_SYSTEM = """You are a meticulous AI researcher conducting an important investigation into patterns found \
in language. Your task is to analyze text and provide an explanation that thoroughly encapsulates possible patterns \
found in it.
Guidelines:

You will be given a list of text examples on which special words are selected and between delimiters like <<this>>. \
If a sequence of consecutive tokens all are important, the entire sequence of tokens will be contained between \
delimiters <<just like this>>.{values_note}

- Try to produce a concise final description. Simply describe the text latents that are common in the examples, \
and what patterns you found.
- If the examples are uninformative, you don't need to mention them. Don't focus on giving examples of important \
tokens, but try to summarize the patterns found in the examples.
- Do not mention the marker tokens (<< >>) in your explanation.
- Do not make lists of possible explanations. Keep your explanations short and concise.
- The last line of your response must be the formatted explanation, using [EXPLANATION]:

Here is an example of the examples you will see, and of a response:

{one_shot}"""

EXPLAIN_VALUES_NOTE = (" How important each token is for the behavior is listed after each example, "
                       "on a scale of 0 to 10.")

EXPLAIN_ONE_SHOT = """Example 1:  and he was <<over the moon>> to find
Example 2:  we'll be laughing <<till the cows come home>>! Pro
Example 3:  thought Scotland was boring, but really there's more <<than meets the eye>>! I'd

[EXPLANATION]: Common idioms in text conveying positive sentiment."""

EXPLAIN_ONE_SHOT_VALUES = """Example 1:  and he was <<over the moon>> to find
Activations: (" over", 5), (" the", 6), (" moon", 9)
Example 2:  we'll be laughing <<till the cows come home>>! Pro
Activations: (" till", 5), (" the", 5), (" cows", 8), (" come", 8), (" home", 8)
Example 3:  thought Scotland was boring, but really there's more <<than meets the eye>>! I'd
Activations: (" than", 5), (" meets", 7), (" the", 6), (" eye", 8)

[EXPLANATION]: Common idioms in text conveying positive sentiment."""

EXPLAIN_CORRECTION = ("I could not find your explanation. Reply again; the last line must be the explanation, "
                      "in the form\n[EXPLANATION]: <a short description>")

DETECT_SYSTEM = """You are an intelligent and meticulous linguistics researcher.

You will be given a certain latent of text, such as "male pronouns" or "text with negative sentiment".

You will then be given several text examples. Your task is to determine which examples possess the latent.

For each example in turn, return 1 if the example possesses the latent or 0 if it does not. You must return your \
response in a valid Python list. Do not return anything else besides a Python list.

Here is an example:

{one_shot}"""

DETECT_ONE_SHOT = """Latent explanation: Words related to American football positions, specifically the tight end \
position.

Text examples:

Example 0: Getty Images Patriots tight end Rob Gronkowski had his boss's
Example 1: names of months used in The Lord of the Rings: "the
Example 2: Media Day 2015 LSU defensive end Isaiah Washington (94) speaks to the
Example 3: shown, is generally not eligible for ads. For example, videos about recent tragedies,
Example 4: line, with the left side - namely tackle Byron Bell at tackle and guard Amini

Response: [1,0,0,0,1]"""

DETECT_USER = """Latent explanation: {explanation}

Text examples:

{examples}
"""

DETECT_CORRECTION = ("Reply again with only a Python list of {n} entries, one per example in order, each 1 if the "
                     "example possesses the latent and 0 if not, e.g. {sample}.")


@dataclass
class Example:
    tokens: list[str]  # token strings of one text window, as decoded, with leading spaces
    activations: list[float]  # the feature's activation per token (0.0 where it does not fire)


class ExplainerReplyError(SaexError):
    """The model's reply could not be parsed after retries."""


# ---------------------------------------------------------------- prompts


def _one_line(text: str) -> str:
    # One example per line, so the model can tell where each ends and count them.
    return text.replace("\r", "\\r").replace("\n", "\\n")


def highlight(tokens: list[str], activations: list[float]) -> str:
    """The text with each run of firing tokens (activation > 0) inside one <<...>> pair."""
    parts: list[str] = []
    in_run = False
    for token, act in zip(tokens, activations, strict=True):
        fires = act > 0
        if fires != in_run:
            parts.append("<<" if fires else ">>")
            in_run = fires
        parts.append(token)
    if in_run:
        parts.append(">>")
    return _one_line("".join(parts))


def activation_line(tokens: list[str], activations: list[float], top: float) -> str:
    """'Activations: ("tok", 7), ...' for the first firing tokens, on a 0..10 scale of `top`."""
    shown = [(tok, _scaled(act, top)) for tok, act in zip(tokens, activations, strict=True) if act > 0]
    return "Activations: " + ", ".join(f"({json.dumps(tok)}, {v})" for tok, v in shown[:MAX_SHOWN_ACTIVATIONS])


def _scaled(act: float, top: float) -> int:
    # A token that fires at all is never shown as 0, which the prompt reads as "not important".
    return max(1, round(ACTIVATION_SCALE * act / top))


def explain_messages(examples: list[Example], show_activations: bool = True) -> tuple[str, str]:
    """(system, user) messages asking for an explanation of the feature that fires on `examples`."""
    top = max((a for ex in examples for a in ex.activations), default=0.0)
    lines: list[str] = []
    for i, ex in enumerate(examples, 1):
        lines.append(f"Example {i}: {highlight(ex.tokens, ex.activations)}")
        if show_activations and top > 0 and any(a > 0 for a in ex.activations):
            lines.append(activation_line(ex.tokens, ex.activations, top))
    system = EXPLAIN_SYSTEM.format(
        values_note=EXPLAIN_VALUES_NOTE if show_activations else "",
        one_shot=EXPLAIN_ONE_SHOT_VALUES if show_activations else EXPLAIN_ONE_SHOT)
    return system, "\n".join(lines) + "\n"


def detect_messages(explanation: str, windows: list[list[str]]) -> tuple[str, str]:
    """(system, user) messages asking which of `windows` (numbered from 0) fit `explanation`."""
    examples = "\n".join(f"Example {i}: {_one_line(''.join(w))}" for i, w in enumerate(windows))
    return DETECT_SYSTEM.format(one_shot=DETECT_ONE_SHOT), DETECT_USER.format(explanation=explanation,
                                                                                examples=examples)


# ---------------------------------------------------------------- replies


def _without_thinking(reply: str) -> str:
    # Reasoning models (Qwen3, DeepSeek-R1) may put a <think> block first, which can hold draft answers.
    return re.sub(r"<think>.*?(</think>|$)", "", reply, flags=re.DOTALL)


def parse_explanation(reply: str) -> str | None:
    """The text after the last "[EXPLANATION]:" (else the last non-empty line), as one line; None if empty."""
    text = _without_thinking(reply)
    marker = text.rfind("[EXPLANATION]:")
    if marker >= 0:
        lines = [ln for ln in text[marker + len("[EXPLANATION]:"):].splitlines() if ln.strip()]
        candidate = lines[0] if lines else ""
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        candidate = lines[-1] if lines else ""
    return _unwrapped(" ".join(candidate.split())) or None


def _unwrapped(text: str) -> str:
    # Models often bold or quote the whole answer; a quote that closes inside the text is kept.
    text = text.strip().strip("*").strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'`" and text.count(text[0]) == 2:
        text = text[1:-1].strip()
    return text


def parse_detection(reply: str, n: int) -> list[bool] | None:
    """The last bracketed list in `reply` as booleans, or None unless it has n entries, each 0 or 1."""
    lists = re.findall(r"\[([^\[\]]*)\]", _without_thinking(reply))
    if not lists:
        return None
    entries = [e.strip().strip("'\"") for e in lists[-1].split(",")] if lists[-1].strip() else []
    if len(entries) != n or any(e not in ("0", "1") for e in entries):
        return None
    return [e == "1" for e in entries]


# ---------------------------------------------------------------- spec


def parse_spec(spec: str) -> tuple[str, str]:
    """"openai:URL/MODEL" -> (URL, MODEL). URL runs up to and including the "/v1" path segment
    (the model may contain "/"); without one, the model is the last path segment."""
    def bad(why: str) -> SaexError:
        return SaexError(f"bad LLM spec {spec!r}: {why}", f"give {SPEC_FORM}")

    if not spec.startswith(SPEC_PREFIX):
        raise bad(f"it does not start with {SPEC_PREFIX!r}")
    parts = urllib.parse.urlsplit(spec[len(SPEC_PREFIX):].rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad("no http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise bad("a URL with a query or fragment")
    segments = parts.path.split("/")[1:]  # the path starts with "/"
    cut = segments.index("v1") + 1 if "v1" in segments else len(segments) - 1
    model = "/".join(segments[cut:])
    if cut < 0 or not model or any(not s for s in segments[cut:]):
        raise bad("no model name after the URL")
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/".join(["", *segments[:cut]]), "", ""))
    return base, model


# ---------------------------------------------------------------- client


class OpenAIExplainer:
    """Explains features and scores explanations with a model behind an OpenAI-compatible endpoint."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0,
                 temperature: float = 0.0, max_retries: int = 2, max_tokens: int = 400,
                 show_activations: bool = True):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SaexError(f"the LLM URL {url!r} is not an http(s) URL",
                            "give the server's base URL, e.g. http://localhost:8000/v1")
        if not model:
            raise SaexError("no LLM model name given", f"give {SPEC_FORM}")
        if max_retries < 0 or timeout <= 0 or max_tokens < 1:
            raise SaexError(f"max_retries={max_retries}, timeout={timeout}, max_tokens={max_tokens}",
                            "use max_retries >= 0, timeout > 0 and max_tokens >= 1")
        self.url = url.rstrip("/")
        self.model = model
        self.name = f"{SPEC_PREFIX}{self.url}/{model}"
        self.timeout = timeout
        self.temperature = temperature
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.show_activations = show_activations
        self._api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)

    @classmethod
    def from_spec(cls, spec: str, **kw) -> OpenAIExplainer:
        url, model = parse_spec(spec)
        return cls(url, model, **kw)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIExplainer({self.name!r})"

    # ------------------------------------------------------------ public

    def explain(self, examples: list[Example]) -> str:
        """A one-line explanation of what the feature firing on `examples` detects."""
        if not examples:
            raise SaexError("no examples to explain", "pass at least one Example on which the feature fires")
        for ex in examples:
            if len(ex.tokens) != len(ex.activations):
                raise SaexError(f"an example has {len(ex.tokens)} tokens but {len(ex.activations)} activations",
                                "give one activation per token")
        system, user = explain_messages(examples, self.show_activations)
        return self._ask(system, user, parse_explanation, EXPLAIN_CORRECTION, "an [EXPLANATION]: line")

    def detect(self, explanation: str, windows: list[list[str]], batch_size: int = 10) -> list[bool]:
        """For each window, whether the model judges that it has the feature `explanation` describes."""
        if not explanation.strip():
            raise SaexError("an empty explanation to score", "pass the explanation that explain() returned")
        if batch_size < 1:
            raise SaexError(f"batch_size must be at least 1, got {batch_size}", "pass e.g. batch_size=10")
        out: list[bool] = []
        for start in range(0, len(windows), batch_size):
            out.extend(self._detect_batch(explanation, windows[start:start + batch_size]))
        return out

    # ------------------------------------------------------------ internals

    def _detect_batch(self, explanation: str, windows: list[list[str]]) -> list[bool]:
        n = len(windows)
        system, user = detect_messages(explanation, windows)
        correction = DETECT_CORRECTION.format(n=n, sample=str([1, 0] * (n // 2) + [0] * (n % 2)).replace(" ", ""))
        return self._ask(system, user, lambda reply: parse_detection(reply, n), correction,
                         f"a list of {n} zeros and ones")

    def _ask(self, system: str, user: str, parse: Callable[[str], T | None], correction: str, wanted: str) -> T:
        # Resending the same prompt at temperature 0 gets the same reply, so a retry shows the model
        # its bad reply and says what was wrong.
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        reply = ""
        for _ in range(self.max_retries + 1):
            reply = self._chat(messages)
            result = parse(reply)
            if result is not None:
                return result
            messages = [*messages[:2], {"role": "assistant", "content": reply},
                        {"role": "user", "content": correction}]
        raise ExplainerReplyError(
            f"{self.name} did not give {wanted} in {self.max_retries + 1} tries; its last reply was {reply[:300]!r}",
            "try a larger or instruction-tuned model, more max_retries, or a larger max_tokens "
            "(a reasoning model may spend them all thinking)")

    def _chat(self, messages: list[dict]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        data = self._post(body)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise SaexError(f"{self.url}/chat/completions did not send a chat-completions reply: "
                            f"{json.dumps(data)[:300]}",
                            "check that the URL is an OpenAI-compatible API (it usually ends in /v1)") from None
        return content if isinstance(content, str) else ""

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _post(self, body: dict) -> dict:
        endpoint = f"{self.url}/chat/completions"
        request = urllib.request.Request(endpoint, data=json.dumps(body).encode(), headers=self._headers(),
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:  # before URLError, its base class
            raise self._http_error(endpoint, e) from e
        except urllib.error.URLError as e:
            raise self._unreachable(endpoint, e.reason) from e
        except OSError as e:  # a timeout or a dropped connection while reading
            raise self._unreachable(endpoint, e) from e
        try:
            return json.loads(raw)
        except ValueError:
            raise SaexError(f"{endpoint} did not answer with JSON: {raw[:200]!r}",
                            "check that the URL is an OpenAI-compatible API (it usually ends in /v1)") from None

    def _unreachable(self, endpoint: str, reason: object) -> SaexError:
        if isinstance(reason, TimeoutError):
            return SaexError(f"{endpoint} did not answer within {self.timeout:g}s ({reason})",
                             "pass a longer timeout, or check that the server is not overloaded")
        return SaexError(f"could not reach {endpoint}: {reason}",
                         "start the server (e.g. `vllm serve MODEL`, `ollama serve`, `llama-server -m FILE`) "
                         "or check the URL")

    def _http_error(self, endpoint: str, e: urllib.error.HTTPError) -> SaexError:
        detail = _error_detail(e)
        problem = f"{endpoint} answered HTTP {e.code} {e.reason}" + (f": {detail}" if detail else "")
        if e.code == 404:
            fix = (f"check the model name {self.model!r} (GET {self.url}/models lists the ones the server has) "
                   "and that the URL ends in /v1")
        elif e.code in (401, 403):
            fix = f"pass api_key or set {API_KEY_ENV} to a key the server accepts"
        else:
            fix = "check the server's log, the model name and the URL"
        return SaexError(problem, fix)


def _error_detail(e: urllib.error.HTTPError) -> str:
    # OpenAI-style servers say what went wrong in {"error": {"message": ...}}; others send text.
    try:
        raw = e.read()
    except OSError:
        return ""
    try:
        data = json.loads(raw)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error")
        if message:
            return str(message)[:300]
    except (ValueError, AttributeError, KeyError, TypeError):
        pass
    return raw.decode("utf-8", "replace").strip()[:300]
