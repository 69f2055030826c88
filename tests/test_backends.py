from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from openai_server import Reply, ScriptedOpenAIServer
from tiny_model import ForceTokens, tiny_backend, tiny_model, tiny_tokenizer

from ramp.agent.backends import build_backend
from ramp.agent.backends.base import GenerationRequest, truncate_at_stop
from ramp.agent.backends.hf import HFBackend, _top_p_filter
from ramp.agent.backends.openai import BackendError, OpenAIBackend
from ramp.agent.config import BackendConfig, OpenAIBackendConfig
from ramp.agent.protocol import STOP_STRINGS

MODEL_TEXT = "<think>look it up</think><search>eiffel tower</search> and more"


def _config(server: ScriptedOpenAIServer, **kw) -> OpenAIBackendConfig:
    return OpenAIBackendConfig(base_url=server.base_url, model="m", backoff_s=0.01, **kw)


def test_truncate_at_stop():
    assert truncate_at_stop("a</search>b</answer>", STOP_STRINGS) == ("a</search>", "</search>")
    assert truncate_at_stop("abc", STOP_STRINGS) == ("abc", None)


@pytest.mark.parametrize("vllm_stop_reason", [True, False])
def test_openai_chat_and_completions(vllm_stop_reason, monkeypatch):
    monkeypatch.setenv("RAMP_TEST_KEY", "sekret")
    with ScriptedOpenAIServer(lambda path, body: MODEL_TEXT, vllm_stop_reason=vllm_stop_reason) as server:
        with OpenAIBackend(_config(server, api_key_env="RAMP_TEST_KEY")) as backend:
            chat, completion = backend.generate(
                [
                    GenerationRequest(
                        messages=[{"role": "user", "content": "q"}],
                        max_new_tokens=50,
                        stop=STOP_STRINGS,
                        seed=7,
                        temperature=0.6,
                    ),
                    GenerationRequest(prompt_ids=[1, 2, 3], max_new_tokens=50, stop=STOP_STRINGS),
                ]
            )
        for result in (chat, completion):
            assert result.text == "<think>look it up</think><search>eiffel tower</search>"
            assert (result.finish_reason, result.stop_string) == ("stop", "</search>")
        paths = sorted(r["path"] for r in server.requests)
        assert paths == ["/v1/chat/completions", "/v1/completions"]
        chat_body = next(r["body"] for r in server.requests if r["path"].endswith("chat/completions"))
        assert chat_body["seed"] == 7 and chat_body["temperature"] == 0.6
        assert chat_body["stop"] == list(STOP_STRINGS) and chat_body["max_tokens"] == 50
        completion_body = next(r["body"] for r in server.requests if r["path"] == "/v1/completions")
        assert completion_body["prompt"] == [1, 2, 3]


def test_openai_eos_length_and_logprobs():
    replies = {"eos": Reply("plain answer"), "len": Reply("<think>cut", finish_reason="length")}
    requests = [
        GenerationRequest(messages=[{"role": "user", "content": k}], max_new_tokens=5, stop=STOP_STRINGS)
        for k in ("eos", "len")
    ]
    with ScriptedOpenAIServer(lambda path, body: replies[body["messages"][0]["content"]]) as server:
        backend = OpenAIBackend(_config(server))
        eos, length = backend.generate(requests)
        backend.close()
    assert (eos.text, eos.finish_reason, eos.stop_string) == ("plain answer", "eos", None)
    assert (length.text, length.finish_reason) == ("<think>cut", "length")
    with ScriptedOpenAIServer(lambda path, body: Reply("ab", logprobs=[-0.5, -1.0])) as server:
        with OpenAIBackend(_config(server)) as backend:
            [result] = backend.generate([GenerationRequest(prompt_ids=[1], max_new_tokens=2, logprobs=True)])
        assert server.requests[0]["body"]["logprobs"] == 0
    assert result.logprobs == [-0.5, -1.0]
    with (
        ScriptedOpenAIServer(lambda path, body: Reply("ab")) as server,  # a server that ignores the ask
        OpenAIBackend(_config(server)) as backend,
        pytest.raises(BackendError, match="no log-probs"),
    ):
        backend.generate([GenerationRequest(prompt_ids=[1], max_new_tokens=2, logprobs=True)])


def test_openai_retries_then_succeeds_and_gives_up():
    with ScriptedOpenAIServer(lambda path, body: "<answer>x</answer>") as server:
        server.fail_next(2, status=500)
        with OpenAIBackend(_config(server, max_retries=2)) as backend:
            [result] = backend.generate([GenerationRequest(prompt_ids=[1], max_new_tokens=5)])
            assert result.text == "<answer>x</answer>" and len(server.requests) == 3
            server.fail_next(3, status=503)
            with pytest.raises(BackendError, match="after 3 tries"):
                backend.generate([GenerationRequest(prompt_ids=[1], max_new_tokens=5)])
            server.fail_next(1, status=400)  # client errors are not retried
            before = len(server.requests)
            with pytest.raises(BackendError, match="HTTP 400"):
                backend.generate([GenerationRequest(prompt_ids=[1], max_new_tokens=5)])
            assert len(server.requests) == before + 1


def test_openai_timeout_is_retried_and_concurrency_is_used():
    with ScriptedOpenAIServer(lambda path, body: "ok") as server:
        server.delay_s = 0.5
        with (
            OpenAIBackend(_config(server, timeout_s=0.1, max_retries=1)) as backend,
            pytest.raises(BackendError),
        ):
            backend.generate([GenerationRequest(prompt_ids=[1], max_new_tokens=5)])
        assert len(server.requests) == 2
        server.delay_s, server.max_in_flight = 0.3, 0
        with OpenAIBackend(_config(server, max_concurrency=8)) as backend:
            start = time.perf_counter()
            results = backend.generate(
                [GenerationRequest(prompt_ids=[i], max_new_tokens=5) for i in range(8)]
            )
            elapsed = time.perf_counter() - start
        assert [r.text for r in results] == ["ok"] * 8
        assert server.max_in_flight > 1 and elapsed < 8 * 0.3  # requests overlapped: faster than one by one


def test_build_backend_openai():
    backend = build_backend(BackendConfig(kind="openai"))
    assert isinstance(backend, OpenAIBackend)
    backend.close()


def test_vllm_missing_gives_clear_error():
    code = (
        "import sys; sys.modules['vllm'] = None\n"
        "from ramp.agent.backends import build_backend\n"
        "from ramp.agent.config import BackendConfig\n"
        "try:\n    build_backend(BackendConfig(kind='vllm', vllm={'model': 'x'}))\n"
        "except ImportError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ERR") and "pip install 'ramp[vllm]'" in out


def test_hf_backend_stops_budgets_logprobs_and_seeds():
    backend = tiny_backend()
    tok = backend.tokenizer
    prompt = tok.encode(
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )
    requests = [
        GenerationRequest(prompt_ids=prompt, max_new_tokens=7, temperature=1.0, seed=s) for s in range(3)
    ] + [GenerationRequest(prompt_ids=prompt[:4], max_new_tokens=3)]
    first = backend.generate(requests)
    assert backend.generate(requests) == first  # seeded: identical rerun
    for request, result in zip(requests, first, strict=True):
        assert len(result.token_ids) == len(result.logprobs) <= request.max_new_tokens
        assert all(lp <= 0 for lp in result.logprobs)
        if result.finish_reason == "length":
            assert len(result.token_ids) == request.max_new_tokens
    # greedy, no stop: the same continuation as plain transformers generate

    expected = backend.model.generate(
        torch.tensor([prompt[:4]]), max_new_tokens=3, do_sample=False, eos_token_id=tok.eos_token_id
    )[0, 4:].tolist()
    assert first[3].token_ids == expected[: len(first[3].token_ids)]
    # a stop string found in free text cuts the ids and the text at the token that completes it
    target = first[0]
    text = tok.decode(target.token_ids, skip_special_tokens=False)
    assert target.finish_reason == "length" and len(text) > 3  # fixed seed: a known continuation
    stop = text[1:3]
    # only row 0 gets the stop string, and alone (sampling is seeded per request, not per batch)
    stopped = backend.generate([GenerationRequest(**{**requests[0].__dict__, "stop": (stop,)})])[0]
    assert stopped.finish_reason == "stop" and stopped.text.endswith(stop) and stop not in stopped.text[:-1]
    assert stopped.token_ids == target.token_ids[: len(stopped.token_ids)]


def _continue(backend, requests, results, inserts, extra_requests=()):
    """Next-turn requests: each previous prompt + its generated ids + an inserted block, then extras."""
    tok = backend.tokenizer
    return [
        GenerationRequest(
            prompt_ids=[*r.prompt_ids, *res.token_ids, *tok.encode(text, add_special_tokens=False)],
            max_new_tokens=r.max_new_tokens,
            stop=r.stop,
        )
        for r, res, text in zip(requests, results, inserts, strict=True)
        if text is not None
    ] + list(extra_requests)


def test_hf_prefix_cache_reuse_equals_fresh_backend():
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    cached = HFBackend(model, tok, batch_size=16, device="cpu")
    fresh = HFBackend(model, tok, batch_size=16, device="cpu", prefix_cache_bytes=0)
    encode = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    prompts = [
        f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
        for q in ("who built the tower", "a river in france", "the first king", "old stone bridges")
    ]
    turn1 = [
        GenerationRequest(prompt_ids=encode(p), max_new_tokens=m, stop=STOP_STRINGS)
        for p, m in zip(prompts, (12, 9, 5, 11), strict=True)
    ]
    # row 0 spells a search and stops early on </search>; row 1 ends with EOS; rows 2, 3 run greedily
    forced = [encode("<search> tower</search>"), encode("done"), None, None]
    force = lambda batch: [ForceTokens(forced, tok.eos_token_id)]  # noqa: E731
    first = cached.generate(turn1, processors_for_batch=force)
    assert first == fresh.generate(turn1, processors_for_batch=force)
    assert [r.finish_reason for r in first] == ["stop", "eos", "length", "length"]
    inserts = [
        "\n<result>\n[1] Eiffel Tower\nA lattice tower in Paris, by Gustave Eiffel.\n</result>\n",
        None,  # ended: not continued
        "\n<result>\nNo results.\n</result>\n",
        "\n<result>\n[1] Bridge\nA structure.\n</result>\n",
    ]
    unrelated = GenerationRequest(prompt_ids=encode(prompts[1] + "<think>"), max_new_tokens=6)
    turn2 = _continue(cached, turn1, first, inserts, [unrelated])
    before = cached.stats.prefilled_tokens
    second = cached.generate(turn2)
    prefilled = cached.stats.prefilled_tokens - before
    expected = fresh.generate(turn2)
    assert sum(len(r.prompt_ids) for r in turn2) - prefilled == cached.stats.reused_tokens > 0
    # only the inserts, the new prompt, and at most the last generated token of each continued row
    inserted = sum(len(encode(text)) + 1 for text in inserts if text is not None)
    assert prefilled <= inserted + len(unrelated.prompt_ids)
    # third turn on top of the reused rows (holes from the padded inserts and the early stops)
    turn3 = _continue(cached, turn2, second, ["\n<result>\nx\n</result>\n", None, "\nmore text here\n", "a"])
    third, third_fresh = cached.generate(turn3), fresh.generate(turn3)
    for got, want in zip([*second, *third], [*expected, *third_fresh], strict=True):
        assert got.token_ids == want.token_ids and got.text == want.text
        assert (got.finish_reason, got.stop_string) == (want.finish_reason, want.stop_string)
        assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(want.logprobs), atol=1e-4)
    assert fresh.stats.reused_tokens == 0
    # an unrelated call drops the store: continuing turn 1 again prefills everything
    reused = cached.stats.reused_tokens
    cached.generate([unrelated])
    cached.generate(turn2[:1])
    assert cached.stats.reused_tokens == reused


def test_hf_top_p_keeps_the_most_likely_token():
    backend = tiny_backend()
    prompt = backend.tokenizer.encode("<|im_start|>user\nrivers<|im_end|>\n", add_special_tokens=False)
    greedy, nucleus, free = backend.generate(
        [
            GenerationRequest(prompt_ids=prompt, max_new_tokens=8),
            GenerationRequest(prompt_ids=prompt, max_new_tokens=8, temperature=0.7, top_p=1e-6, seed=1),
            GenerationRequest(prompt_ids=prompt, max_new_tokens=8, temperature=5.0, seed=1),
        ]
    )
    assert nucleus.token_ids == greedy.token_ids
    assert free.token_ids != greedy.token_ids  # a hot, unfiltered draw wanders off


def test_hf_logprobs_are_the_sampling_distribution_and_update_weights_resets_the_cache():
    backend = tiny_backend()
    tok = backend.tokenizer
    prompt = tok.encode(
        "<|im_start|>user\nold bridges<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )
    request = GenerationRequest(prompt_ids=prompt, max_new_tokens=6, temperature=0.5, top_p=0.9, seed=3)
    [result] = backend.generate([request])
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt + result.token_ids])).logits[0].float()
    for j, token in enumerate(result.token_ids):
        scores = _top_p_filter(logits[None, len(prompt) - 1 + j] / 0.5, 0.9)
        assert result.logprobs[j] == pytest.approx(torch.log_softmax(scores, -1)[0, token].item(), abs=1e-4)
    # new weights: the backend now generates as a backend built on them, and the prefix cache is gone
    other = tiny_model(tok, seed=1)
    greedy = GenerationRequest(prompt_ids=prompt, max_new_tokens=8)
    before = backend.generate([greedy])[0]
    backend.update_weights(other.state_dict())
    reused = backend.stats.reused_tokens
    after = backend.generate([GenerationRequest(prompt_ids=prompt + before.token_ids, max_new_tokens=4)])
    assert backend.stats.reused_tokens == reused  # nothing computed with the old weights was reused
    fresh = HFBackend(other, tok, device="cpu")
    assert after == fresh.generate(
        [GenerationRequest(prompt_ids=prompt + before.token_ids, max_new_tokens=4)]
    )
    assert backend.generate([greedy])[0].logprobs != before.logprobs  # other weights, other distribution
    with pytest.raises(KeyError, match="not parameters"):
        backend.update_weights({"nope.weight": torch.zeros(1)})
