"""melo serve: completions reflect edits, revocations and rollbacks; auth and limits; completions stay
answered while an edit trains; every acknowledged op survives kill -9 (journal + checkpoints)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import (
    CHAT_TEMPLATE,
    EDIT_PROMPTS,
    MODEL_FACTORIES,
    UNRELATED,
    WORDS,
    free_port,
    make_bert_classifier,
    make_gpt2,
    make_word_tokenizer,
    melo_config,
)
from fastapi.testclient import TestClient

import melo
from melo.cli import main
from melo.serve import EditService, Limits, create_app
from melo.serve.journal import CHECKPOINTS_DIR, JOURNAL_FILE

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # servers


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 and its word tokenizer, saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    make_gpt2().save_pretrained(folder)
    make_word_tokenizer().save_pretrained(folder)
    return folder


def save_empty_adapter(folder: Path, **overrides) -> Path:
    """An adapter with no edits: its config gives the service router, targets and training settings."""
    model = melo.get_melo_model(make_gpt2(), melo_config("gpt2", **overrides), tokenizer=make_word_tokenizer())
    model.save_pretrained(folder)
    return folder


def open_service(state_dir=None, tokenizer=None, limits=Limits(), checkpoint_every=20, **overrides) -> EditService:
    tokenizer = tokenizer or make_word_tokenizer()
    if state_dir is None:
        model = melo.get_melo_model(make_gpt2(), melo_config("gpt2", **overrides), tokenizer=tokenizer)
        return EditService(model, "tiny-gpt2", limits=limits)
    return EditService.open(make_gpt2(), tokenizer, "tiny-gpt2", state_dir, checkpoint_every=checkpoint_every,
                            limits=limits)


def answer(client, prompt: str, **body) -> str:
    r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def first_word(text: str) -> str:
    return text.split()[0] if text.split() else ""


# ---- endpoint behaviour ------------------------------------------------------------------------------
def test_edits_change_completions_and_revoke_and_rollback_restore_them():
    prompt, other, unrelated = EDIT_PROMPTS[0], EDIT_PROMPTS[1], UNRELATED[0]
    with TestClient(create_app(open_service())) as client:
        assert client.get("/health").json() == {"status": "ok"}
        base = {p: answer(client, p) for p in (prompt, other, unrelated)}
        assert first_word(base[prompt]) != "rome" and first_word(base[other]) != "tolstoy"

        r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2, "n": 2})
        body = r.json()
        assert body["object"] == "text_completion" and body["model"] == "tiny-gpt2"
        assert [c["index"] for c in body["choices"]] == [0, 1] and body["usage"]["prompt_tokens"] == 10

        r = client.post("/v1/edits", json={"edits": [{"prompt": prompt, "target": "rome"}]})
        assert r.status_code == 200, r.text
        assert r.json() == {"ids": [0], "block": 0, "added": 1, "expanded": 0, "conflicts": 0, "forgotten": []}
        assert first_word(answer(client, prompt)) == "rome"
        assert answer(client, unrelated) == base[unrelated]

        r = client.post("/v1/edits", json={"edits": [{"prompt": other, "target": "tolstoy"}]})
        assert r.json()["ids"] == [1] and r.json()["block"] == 1
        assert first_word(answer(client, other)) == "tolstoy"
        rows = client.get("/v1/edits").json()["edits"]
        assert [(e["id"], e["prompt"], e["target"], e["block"], e["status"]) for e in rows] == [
            (0, prompt, "rome", 0, "live"), (1, other, "tolstoy", 1, "live")]

        assert client.delete("/v1/edits/0").json() == {"revoked": [0]}
        assert answer(client, prompt) == base[prompt]
        assert first_word(answer(client, other)) == "tolstoy"
        assert [e["status"] for e in client.get("/v1/edits").json()["edits"]] == ["revoked", "live"]
        assert client.delete("/v1/edits/7").status_code == 404

        assert client.post("/v1/rollback", json={"n_blocks": 1}).json() == {"blocks": 1}
        assert answer(client, other) == base[other]
        assert [e["id"] for e in client.get("/v1/edits").json()["edits"]] == [0]
        assert client.post("/v1/rollback", json={"n_blocks": 5}).status_code == 400
        stats = client.get("/v1/stats").json()
        assert stats["blocks"] == 1 and stats["edits"] == 1 and stats["revoked_edits"] == 1
        assert stats["durable"] is False and stats["journal_seq"] == 4


def test_stop_sequences_cut_the_text():
    with TestClient(create_app(open_service())) as client:
        full = answer(client, UNRELATED[1], max_tokens=4)
        words = full.split()
        assert len(words) >= 2
        r = client.post("/v1/completions", json={"prompt": UNRELATED[1], "max_tokens": 4, "stop": [words[1]]})
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop" and words[1] not in choice["text"].split()


def sse_events(client, path: str, body: dict) -> list:
    """The JSON events of a streamed response, checking the ``data: [DONE]`` end."""
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]


def joined(events: list, n: int, field: str = "text") -> list[tuple[str, str]]:
    """(text, finish reason) of each choice index, from the chunks of a stream."""
    texts, reasons = [""] * n, [None] * n
    for event in events:
        for c in event["choices"]:
            part = c[field] if field == "text" else c["delta"].get("content", "")
            texts[c["index"]] += part
            if c["finish_reason"] is not None:
                assert reasons[c["index"]] is None, "two finish reasons"
                reasons[c["index"]] = c["finish_reason"]
    return list(zip(texts, reasons))


def test_streamed_and_whole_answers_are_identical_and_cut_where_generate_text_would_be():
    """Greedy: the joined chunks equal the whole answer, which is generate_text's text cut at the first stop."""
    service = open_service()
    with TestClient(create_app(service)) as client:
        for prompt in [*EDIT_PROMPTS, *UNRELATED]:
            full = service.model.generate_text([prompt], max_new_tokens=10)[0]
            words = full.split()
            stop_sets = [[], [words[2]], [words[1][:2], "zzz"], [full[3:9]], [words[-1] + " never"]]
            for stops in stop_sets:
                body = {"prompt": prompt, "max_tokens": 10, "n": 2, "stop": stops}
                whole = client.post("/v1/completions", json=body).json()
                answers = [(c["text"], c["finish_reason"]) for c in whole["choices"]]
                cut = min((i for i in (full.find(x) for x in stops) if i >= 0), default=-1)
                expected = (full[:cut], "stop") if cut >= 0 else (full, "length")
                assert answers == [expected] * 2, (prompt, stops)
                events = sse_events(client, "/v1/completions", body)
                assert joined(events, 2) == answers, (prompt, stops)
                assert {e["object"] for e in events} == {"text_completion"} and len({e["id"] for e in events}) == 1
    ended = open_service()  # EOS ends a row: after an edit to "rome", the target's EOS is generated
    with TestClient(create_app(ended)) as client:
        assert client.post("/v1/edits", json={"edits": [{"prompt": EDIT_PROMPTS[0], "target": "rome"}]}).is_success
        body = {"prompt": EDIT_PROMPTS[0], "max_tokens": 6}
        whole = client.post("/v1/completions", json=body).json()
        assert (whole["choices"][0]["text"], whole["choices"][0]["finish_reason"]) == ("rome", "stop")
        assert whole["usage"]["completion_tokens"] == 2  # rome, EOS
        assert joined(sse_events(client, "/v1/completions", body), 1) == [("rome", "stop")]


def test_a_stream_is_checked_before_it_starts():
    with TestClient(create_app(open_service(limits=Limits(max_tokens=8)), token="t")) as client:
        body = {"prompt": "the dog", "max_tokens": 9, "stream": True}
        assert client.post("/v1/completions", json=body).status_code == 401
        r = client.post("/v1/completions", json=body, headers={"Authorization": "Bearer t"})
        assert r.status_code == 400 and r.json()["detail"] == "max_tokens 9 is over the limit 8"
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "stream": True},
                        headers={"Authorization": "Bearer t"})
        assert r.status_code == 400 and "chat template" in r.json()["detail"]


def test_chat_endpoints_need_a_chat_template():
    with TestClient(create_app(open_service())) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "who wrote hamlet"}]})
        assert r.status_code == 400 and "chat template" in r.json()["detail"]
        r = client.post("/v1/edits", json={"edits": [{"messages": [{"role": "user", "content": "x"}], "target": "a"}]})
        assert r.status_code == 400

    tokenizer = make_word_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    messages = [{"role": "user", "content": "who wrote hamlet"}]
    with TestClient(create_app(open_service(tokenizer=tokenizer))) as client:
        def chat() -> str:
            r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
            assert r.status_code == 200, r.text
            assert r.json()["object"] == "chat.completion"
            message = r.json()["choices"][0]["message"]
            assert message["role"] == "assistant"
            return message["content"]

        def streamed() -> str:
            events = sse_events(client, "/v1/chat/completions", {"messages": messages, "max_tokens": 2})
            assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            assert {e["object"] for e in events} == {"chat.completion.chunk"}
            [(text, reason)] = joined(events, 1, field="delta")
            assert reason in ("stop", "length")
            return text

        assert first_word(chat()) != "tolstoy" and streamed() == chat()
        r = client.post("/v1/edits", json={"edits": [{"messages": messages, "target": "tolstoy"}]})
        assert r.status_code == 200, r.text
        assert first_word(chat()) == "tolstoy" and streamed() == chat()
        assert client.get("/v1/edits").json()["edits"][0]["prompt"] == messages  # kept as messages


def test_bearer_token_is_required_when_set():
    with TestClient(create_app(open_service(), token="s3cret")) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/v1/stats").status_code == 401
        assert client.get("/v1/edits", headers={"Authorization": "Bearer nope"}).status_code == 401
        r = client.post("/v1/completions", json={"prompt": "the dog is"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/openapi.json").status_code == 404 and client.get("/docs").status_code == 404


def test_serve_refuses_a_public_host_without_a_token(capsys, monkeypatch):
    monkeypatch.delenv("MELO_SERVE_TOKEN", raising=False)
    monkeypatch.setattr("melo.loading.load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model", "nowhere", "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "token" in err


def test_limits_are_rejected_with_clear_4xx():
    limits = Limits(max_body_bytes=4000, max_tokens=8, max_n=2, max_edits_per_batch=3)
    with TestClient(create_app(open_service(limits=limits))) as client:
        def status(path, body):
            r = client.post(path, json=body)
            return r.status_code, r.json()["detail"]

        code, detail = status("/v1/completions", {"prompt": "the " * 2000})
        assert code == 413 and "4000 bytes" in detail
        assert status("/v1/completions", {"prompt": "the dog", "max_tokens": 9}) == (
            400, "max_tokens 9 is over the limit 8")
        assert status("/v1/completions", {"prompt": "the dog", "n": 3, "max_tokens": 2}) == (
            400, "n 3 is over the limit 2")
        code, detail = status("/v1/completions", {"prompt": "the " * 60, "max_tokens": 8})
        assert code == 400 and "64 positions" in detail
        assert status("/v1/completions", {"prompt": ""})[0] == 422
        assert status("/v1/completions", {"prompt": "the", "temperature": -1})[0] == 422
        code, detail = status("/v1/edits", {"edits": [{"prompt": "the dog", "target": "cat"}] * 4})
        assert code == 413 and "limit is 3" in detail
        assert status("/v1/edits", {"edits": [{"prompt": "the dog"}]})[0] == 422
        assert status("/v1/edits", {"edits": [{"prompt": "the dog", "target": "cat",
                                               "messages": [{"role": "user", "content": "x"}]}]})[0] == 422
        assert status("/v1/edits", {"edits": []})[0] == 422
        assert status("/v1/rollback", {"n_blocks": -1})[0] == 422
        code, detail = status("/v1/edits", {"edits": [{"prompt": "the " * 70, "target": "cat"}]})
        assert code == 400, detail
        r = client.post("/v1/edits", json={"edits": [{"prompt": "the dog", "target": "cat"},
                                                      {"prompt": "the " * 70, "target": "cat"},
                                                      {"prompt": "the cat", "target": "  "}]})
        assert r.status_code == 400 and r.json()["detail"].startswith("2 of 3 edits are invalid, nothing was applied")
        assert r.json()["invalid"] == [
            {"index": 1, "reason": "edit 1: prompt + target is 72 tokens, longer than the model's 64 positions; "
                                   "shorten it"},
            {"index": 2, "reason": "targets[2] is '  ': causal_lm targets must be non-empty strings"}]
        assert client.get("/v1/edits").json() == {"edits": []}


def test_completions_are_answered_while_an_edit_trains():
    limits = Limits(max_queued_ops=1)
    with TestClient(create_app(open_service(limits=limits, num_iter=400, lr_step=300))) as client:
        before = answer(client, UNRELATED[2])
        result = {}
        edit = threading.Thread(target=lambda: result.update(r=client.post(
            "/v1/edits", json={"edits": [{"prompt": EDIT_PROMPTS[0], "target": "rome"}]})))
        edit.start()
        deadline = time.time() + 30
        while client.get("/v1/stats").json()["queued_ops"] == 0 and edit.is_alive():
            assert time.time() < deadline
            time.sleep(0.01)
        answered = [answer(client, UNRELATED[2]) for _ in range(3)]
        queued = client.post("/v1/edits", json={"edits": [{"prompt": EDIT_PROMPTS[1], "target": "tolstoy"}]})
        still_training = edit.is_alive()
        edit.join()
        assert still_training, "the edit finished before the completions: make it longer"
        assert answered == [before] * 3
        assert queued.status_code == 429 and "retry later" in queued.json()["detail"]
        assert result["r"].status_code == 200
        assert first_word(answer(client, EDIT_PROMPTS[0])) == "rome"


# ---- durability in process -----------------------------------------------------------------------------
def rows_of(client) -> list[tuple]:
    return [(e["id"], e["prompt"], e["target"], e["block"], e["status"], e["created"])
            for e in client.get("/v1/edits").json()["edits"]]


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def crash(service: EditService) -> None:
    """Stop the worker without the clean shutdown's checkpoint, as a kill -9 would."""
    service._queue.put(None)
    service._worker.join()
    service.journal.close()


def test_journal_replays_on_top_of_the_last_checkpoint(tmp_path):
    state = save_empty_adapter(tmp_path / "adapter", num_iter=10)
    probes = EDIT_PROMPTS + UNRELATED[:2]
    service = open_service(state, checkpoint_every=2)
    service.start()
    client = TestClient(create_app(service))  # no lifespan: the test starts and crashes the service
    for prompt in probes[:3]:
        assert client.post("/v1/edits", json={"edits": [{"prompt": prompt, "target": "red"}]}).status_code == 200
    assert client.delete("/v1/edits/1").status_code == 200
    wait_for(lambda: service.checkpoint_seq == 4)  # checkpoints follow the acknowledgement
    assert sorted(os.listdir(state / CHECKPOINTS_DIR)) == ["4"]  # seq 2's checkpoint replaced by seq 4's
    assert client.post("/v1/edits", json={"edits": [{"prompt": probes[3], "target": "blue"}]}).status_code == 200
    expected, answers = rows_of(client), [answer(client, p) for p in probes]
    crash(service)
    assert [json.loads(line)["seq"] for line in (state / JOURNAL_FILE).read_text().splitlines()] == [5]

    service = open_service(state)
    assert (service.checkpoint_seq, service.replayed, service.seq) == (4, 1, 5)
    with TestClient(create_app(service)) as client:
        assert rows_of(client) == expected
        assert [answer(client, p) for p in probes] == answers
    assert sorted(os.listdir(state / CHECKPOINTS_DIR)) == ["5"]  # the clean shutdown's checkpoint
    assert (state / JOURNAL_FILE).read_bytes() == b""  # checkpointed entries leave the journal

    with open(state / JOURNAL_FILE, "ab") as f:
        f.write(b'{"seq": 6, "op": "edit", "args": {"prom')  # torn append: never acknowledged
    service = open_service(state)
    assert (service.replayed, service.seq) == (0, 5)
    assert (state / JOURNAL_FILE).read_bytes() == b""
    with TestClient(create_app(service)) as client:
        assert rows_of(client) == expected
        assert [answer(client, p) for p in probes] == answers


def test_replay_without_checkpoint_retrains_the_same_blocks(tmp_path):
    state = save_empty_adapter(tmp_path / "adapter", num_iter=10)
    service = open_service(state, checkpoint_every=100)
    service.start()
    for prompt in EDIT_PROMPTS:
        service.submit("edit", {"prompts": [prompt], "targets": ["paris"]}).result()
    service.submit("rollback", {"n_blocks": 1}).result()
    service.submit("edit", {"prompts": [UNRELATED[0]], "targets": ["paris"]}).result()
    expected = service.model.edits()
    blocks = {name: layer.blocks_state() for name, layer in service.model.lora.items()}
    crash(service)

    again = open_service(state)
    assert (again.replayed, again.seq) == (4, 4) and not (state / CHECKPOINTS_DIR).exists()
    assert again.model.edits() == expected
    for name, layer in again.model.lora.items():
        for part, value in layer.blocks_state().items():
            assert value.equal(blocks[name][part]), (name, part)


def test_service_needs_an_adapter_or_preset_and_a_causal_lm(tmp_path):
    with pytest.raises(melo.MeloConfigError, match="no saved adapter"):
        EditService.open(make_gpt2(), make_word_tokenizer(), "x", tmp_path / "empty")
    config = melo_config("bert")
    model = melo.get_melo_model(make_bert_classifier(), config, tokenizer=make_word_tokenizer())
    with pytest.raises(melo.MeloConfigError, match="causal language models"):
        EditService(model, "bert")


def test_a_new_adapter_of_preset_auto_has_the_layers_auto_config_chooses(tmp_path, capsys):
    tok = make_word_tokenizer()
    service = EditService.open(MODEL_FACTORIES["phi3"](), tok, "x", tmp_path / "state", preset="auto")
    chosen = melo.auto_config(MODEL_FACTORIES["phi3"]())
    assert service.model.melo_config == chosen and chosen.target_modules[0] == "model.layers.2.mlp.down_proj"
    assert f"melo auto_config: {melo.auto.describe(chosen)}" in capsys.readouterr().out


def test_a_corrupt_journal_line_stops_the_start(tmp_path):
    state = save_empty_adapter(tmp_path / "adapter")
    (state / JOURNAL_FILE).write_text('{"seq": 1, "op": "revoke", "args": {"ids": [0]}}\nnot json\n')
    with pytest.raises(melo.MeloLoadError, match="line 2 is not JSON"):
        open_service(state)


# ---- kill -9 ----------------------------------------------------------------------------------------
# Importing torch + transformers takes ~10 s here, so a zygote imports once and forks each server; the
# forked child is a separate process, loads the model and state from disk and is SIGKILLed like any.
ZYGOTE = r"""
import json, os, signal, sys, traceback
import fastapi, torch, uvicorn
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
import melo.cli, melo.serve
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
print("ready", flush=True)
for line in sys.stdin:
    argv, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        code = 0
        try:
            melo.cli.main(argv)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
"""


class Servers:
    """Starts ``melo serve`` processes (forked by the zygote) on one 127.0.0.1 port."""

    def __init__(self, argv: list[str], log: Path):
        self.argv, self.log = argv, log
        self.zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": "src"},
                                       cwd=Path(__file__).resolve().parents[1])
        assert self.zygote.stdout.readline().strip() == "ready"
        self.pid: int | None = None

    def start(self, url: str) -> None:
        self.zygote.stdin.write(json.dumps([self.argv, str(self.log)]) + "\n")
        self.zygote.stdin.flush()
        self.pid = int(self.zygote.stdout.readline())
        deadline = time.time() + 120
        while True:
            assert time.time() < deadline, self.log.read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                assert self.alive(), "server died on start:\n" + self.log.read_text()[-3000:]
                time.sleep(0.05)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, sig: int) -> None:
        os.kill(self.pid, sig)
        deadline = time.time() + 60
        while self.alive():
            assert time.time() < deadline, f"server {self.pid} did not exit on signal {sig}"
            time.sleep(0.02)

    def close(self) -> None:
        if self.pid is not None and self.alive():
            self.stop(signal.SIGKILL)
        self.zygote.stdin.close()
        self.zygote.wait(timeout=30)


class ClientModel:
    """What the server must hold: every acknowledged op applied to a list of edit rows."""

    def __init__(self):
        self.rows: list[dict] = []  # id, prompt, target, block, revoked
        self.n_blocks = 0

    def edit(self, prompts, target, ack):
        assert ack["ids"] == list(range(len(self.rows), len(self.rows) + len(prompts)))
        assert ack["block"] == self.n_blocks
        self.rows += [{"id": i, "prompt": p, "target": target, "block": ack["block"], "revoked": False}
                      for i, p in zip(ack["ids"], prompts)]
        self.n_blocks += 1

    def revoke(self, edit_id):
        self.rows[edit_id]["revoked"] = True

    def rollback(self, n_blocks):
        self.rows = [r for r in self.rows if r["block"] < n_blocks]
        self.n_blocks = n_blocks


def server_rows(url: str, headers: dict) -> list[dict]:
    rows = httpx.get(url + "/v1/edits", headers=headers, timeout=30).json()["edits"]
    return [{"id": r["id"], "prompt": r["prompt"], "target": r["target"], "block": r["block"],
             "revoked": r["status"] == "revoked"} for r in rows]


def test_every_acknowledged_op_survives_kill_9(tmp_path, model_dir):
    rng = random.Random(0)
    state = save_empty_adapter(tmp_path / "adapter", num_iter=30, lr_step=20)
    port, token = free_port(), "kill-test-token"
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    servers = Servers(["serve", "--model", str(model_dir), "--adapter", str(state), "--port", str(port),
                       "--token", token, "--checkpoint-every", "3", "--threads", "1"], tmp_path / "server.log")
    expected, counts = ClientModel(), {"kills": 0, "acked": 0, "in_flight_applied": 0, "in_flight_lost": 0,
                                       "killed_mid_op": 0}
    prompts = iter(dict.fromkeys(" ".join(rng.choice(WORDS[:120]) for _ in range(5)) for _ in range(500)))

    def random_op() -> tuple[str, object]:
        live = [r["id"] for r in expected.rows if not r["revoked"]]
        roll = rng.random()
        if live and roll < 0.3:
            return "revoke", rng.choice(live)
        if expected.n_blocks and roll < 0.4:
            return "rollback", rng.randrange(expected.n_blocks)
        return "edit", [next(prompts) for _ in range(rng.choice((1, 2)))]

    def send(op, arg) -> httpx.Response:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            if op == "edit":
                return client.post("/v1/edits", json={"edits": [{"prompt": p, "target": "blue"} for p in arg]})
            if op == "revoke":
                return client.delete(f"/v1/edits/{arg}")
            return client.post("/v1/rollback", json={"n_blocks": arg})

    def acknowledge(op, arg, response) -> None:
        assert response.status_code == 200, response.text
        counts["acked"] += 1
        if op == "edit":
            expected.edit(arg, "blue", response.json())
        else:
            getattr(expected, op)(arg)

    def settle(op, arg, got: list[dict]) -> None:
        """An op without answer at the kill: applied or not, as long as it is all or nothing."""
        before = len(expected.rows)
        if op == "edit":
            applied = [r["prompt"] for r in got[before:]] == arg
            if applied:
                expected.edit(arg, "blue", {"ids": [r["id"] for r in got[before:]], "block": expected.n_blocks})
        elif op == "revoke":
            applied = got[arg]["revoked"]
            if applied:
                expected.revoke(arg)
        else:
            applied = len(got) < before  # every block holds rows, so a rollback always drops some
            if applied:
                expected.rollback(arg)
        counts["in_flight_applied" if applied else "in_flight_lost"] += 1

    try:
        in_flight = None
        for round_ in range(22):
            servers.start(url)
            got = server_rows(url, headers)
            if in_flight is not None:
                settle(*in_flight, got)
                in_flight = None
            assert got == expected.rows, f"round {round_}"
            assert httpx.get(url + "/v1/stats", headers=headers).json()["blocks"] == expected.n_blocks
            for _ in range(rng.randrange(0, 3)):  # acknowledged ops before the kill
                op, arg = random_op()
                acknowledge(op, arg, send(op, arg))
            op, arg = random_op()
            box: dict = {}

            def last_op():
                try:
                    box["response"] = send(op, arg)
                except httpx.TransportError as err:  # the kill cut the connection: no acknowledgement
                    box["error"] = err

            thread = threading.Thread(target=last_op)
            thread.start()
            if rng.random() < 0.6:  # kill during the op (training, journaling or checkpointing)
                time.sleep(rng.uniform(0, 0.25))
            else:  # or after it, now or a little later
                thread.join()
                time.sleep(rng.choice((0, rng.uniform(0, 0.2))))
            counts["killed_mid_op"] += thread.is_alive()
            servers.stop(signal.SIGKILL)
            counts["kills"] += 1
            thread.join()
            if "response" in box:
                acknowledge(op, arg, box["response"])
            else:
                in_flight = (op, arg)

        servers.start(url)  # the last in-flight op, then a clean shutdown (SIGTERM) and a last check
        got = server_rows(url, headers)
        if in_flight is not None:
            settle(*in_flight, got)
        assert got == expected.rows
        seq = httpx.get(url + "/v1/stats", headers=headers).json()["journal_seq"]
        servers.stop(signal.SIGTERM)
        assert os.listdir(state / CHECKPOINTS_DIR) == [str(seq)]
        assert (state / JOURNAL_FILE).read_bytes() == b""
        servers.start(url)
        assert server_rows(url, headers) == expected.rows
        assert "replayed\": 0" in (tmp_path / "server.log").read_text().splitlines()[-1]
    finally:
        servers.close()
    print(f"\nkill -9 test: {counts}, final edits {len(expected.rows)}, blocks {expected.n_blocks}")
    assert counts["kills"] >= 20 and counts["acked"] >= 20
