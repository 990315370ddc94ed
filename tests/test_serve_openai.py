"""A real ``melo serve`` process on 127.0.0.1, driven by the official ``openai`` client: completions, chat,
streaming (joined chunks equal the whole answer), an edit showing in the next chat answer, a revoke
restoring the base answer exactly, and a client that leaves mid-stream freeing its worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import CHAT_TEMPLATE, UNRELATED, free_port, make_gpt2, make_word_tokenizer, melo_config
from transformers import AutoModelForCausalLM, AutoTokenizer

import melo

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TOKEN = "openai-test-token"
QUESTION = [{"role": "user", "content": "who wrote hamlet"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 with 1,024 positions and a chat-template word tokenizer, saved as a Hugging Face folder.
    No EOS in its generation config, so a generation runs to max_tokens (the disconnect test needs a long one)."""
    folder = tmp_path_factory.mktemp("tiny-chat-gpt2")
    model = make_gpt2(n_positions=1024)
    model.generation_config.eos_token_id = None
    model.save_pretrained(folder)
    tokenizer = make_word_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def local(model_dir):
    """The same model and adapter settings in this process: what the server must answer."""
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return melo.get_melo_model(base, melo_config("gpt2"), tokenizer=AutoTokenizer.from_pretrained(model_dir))


@pytest.fixture(scope="module")
def server(model_dir, local, tmp_path_factory):
    """``melo serve`` in its own process; yields its base URL."""
    adapter = tmp_path_factory.mktemp("adapter")
    local.save_pretrained(adapter)  # no edits yet: its config gives the server router and targets
    port = free_port()
    log = adapter.parent / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "melo.cli", "serve", "--model", str(model_dir), "--adapter", str(adapter),
             "--port", str(port), "--token", TOKEN, "--threads", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONPATH": "src", "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, "server died on start:\n" + log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key=TOKEN, max_retries=0, timeout=120)


def http(server) -> httpx.Client:
    return httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)


def chat(client, messages=QUESTION, max_tokens=6) -> str:
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, temperature=0)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    return reply.choices[0].message.content


def streamed_chat(client, messages=QUESTION, max_tokens=6) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens,
                                                 temperature=0, stream=True))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_models_and_a_completion(client, local, model_dir):
    assert [m.id for m in client.models.list()] == [model_dir.name]
    assert client.models.retrieve(model_dir.name).owned_by == "melo"
    prompt = UNRELATED[0]
    started = int(time.time())
    reply = client.completions.create(model=model_dir.name, prompt=prompt, max_tokens=5, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-") and reply.model == model_dir.name
    assert started - 1 <= reply.created <= time.time() + 1
    assert reply.choices[0].text == local.generate_text([prompt], max_new_tokens=5)[0]
    assert reply.choices[0].finish_reason == "length"
    n_prompt = len(local.tokenizer(prompt)["input_ids"])
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        n_prompt, 5, n_prompt + 5)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()


def test_streamed_chat_equals_the_whole_answer(client, local):
    whole = chat(client, max_tokens=12)
    assert whole == local.generate_text([QUESTION], max_new_tokens=12)[0] and whole.strip()
    text, chunks = streamed_chat(client, max_tokens=12)
    assert text == whole
    assert chunks[0].object == "chat.completion.chunk" and chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert len({c.id for c in chunks}) == 1
    pieces = list(client.completions.create(model="tiny", prompt=UNRELATED[1], max_tokens=7, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(p.choices[0].text for p in pieces if p.choices)
    assert text == client.completions.create(model="tiny", prompt=UNRELATED[1], max_tokens=7).choices[0].text
    assert pieces[-1].usage.completion_tokens == 7


def test_an_edit_shows_in_the_next_chat_answer_and_a_revoke_restores_the_base_answer(client, server):
    base, unrelated = chat(client), client.completions.create(model="tiny", prompt=UNRELATED[2]).choices[0].text
    assert base.split()[0] != "tolstoy"
    with http(server) as api:
        before = api.get("/v1/edits").json()["edits"]
        bad = api.post("/v1/edits", json={"edits": [{"messages": QUESTION, "target": "tolstoy"},
                                                    {"prompt": "   ", "target": "rome"},
                                                    {"prompt": "the sky is", "target": " "}]})
        assert bad.status_code == 400, bad.text
        assert [item["index"] for item in bad.json()["invalid"]] == [1, 2]
        assert "edits[1]" in bad.json()["detail"] and "edits[2]" in bad.json()["detail"]
        assert api.get("/v1/edits").json()["edits"] == before  # nothing applied
        made = api.post("/v1/edits", json={"edits": [{"messages": QUESTION, "target": "tolstoy"}]})
        assert made.status_code == 200, made.text
        edit_id = made.json()["ids"][0]
        answer = chat(client)
        assert answer.split()[0] == "tolstoy" and answer != base
        assert streamed_chat(client)[0] == answer
        assert client.completions.create(model="tiny", prompt=UNRELATED[2]).choices[0].text == unrelated
        assert api.delete(f"/v1/edits/{edit_id}").json() == {"revoked": [edit_id]}
    assert chat(client) == base
    assert streamed_chat(client)[0] == base


def test_a_client_leaving_mid_stream_frees_the_worker(client, server):
    with http(server) as api:
        cancelled = api.get("/v1/stats").json()["completions_cancelled"]
        started = time.perf_counter()
        stream = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=500, stream=True)
        received = [next(stream), next(stream)]  # the role, then the first text
        stream.close()
        deadline = time.time() + 60
        while (stats := api.get("/v1/stats").json())["completions_running"]:
            assert time.time() < deadline, stats
            time.sleep(0.02)
        freed = time.perf_counter() - started
        assert stats["completions_cancelled"] == cancelled + 1, "the generation ran to its end: not cancelled"
        assert received[1].choices[0].delta.content
        reply = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=500)  # the next one
        assert reply.usage.completion_tokens == 500 and reply.choices[0].finish_reason == "length"
        assert reply.choices[0].message.content.startswith(received[1].choices[0].delta.content)
        print(f"\nstream left after 2 chunks: worker free {freed:.2f} s after the request")
