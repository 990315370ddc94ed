"""FastAPI app of ``melo serve``: OpenAI-shaped completions plus edit management over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..chat import Prompt, render
from ..errors import MeloCapacityError, MeloConfigError, MeloEditError, MeloError
from .generation import Choice, Completion, Counters
from .schema import (
    ChatRequest,
    CompletionRequest,
    EditRow,
    EditsRequest,
    EditsResponse,
    Message,
    RollbackRequest,
    SamplingRequest,
)
from .service import EditService, Limits, QueueFullError, ServiceFailedError

log = logging.getLogger("melo.serve")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


# ---- body size limit -------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before any endpoint reads it."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413)
                return await response(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


# ---- server-sent events ----------------------------------------------------------------------------
class EventStream(StreamingResponse):
    """A ``text/event-stream`` response; ``cancel`` is set however it ends (done, error or the client
    gone: Starlette cancels the stream when it reads the disconnect), which stops the generation."""

    def __init__(self, events: Any, cancel: threading.Event):
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.cancel = cancel

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cancel.set()


# ---- app factory ------------------------------------------------------------------------------------
def create_app(service: EditService, token: str | None = None) -> FastAPI:
    """The app serving ``service``; with ``token`` every /v1 route needs ``Authorization: Bearer <token>``."""
    limits = service.limits

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    def authorized(request: Request) -> None:
        if token is None or request.url.path == "/health":
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    docs = {} if token is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}  # all behind auth
    app = FastAPI(title="melo serve", lifespan=lifespan, dependencies=[Depends(authorized)], **docs)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    counters = Counters()
    started = int(time.time())

    def check_sampling(req: SamplingRequest, prompt: Prompt) -> tuple[int, list[str]]:
        max_tokens = req.limit
        if max_tokens > limits.max_tokens:
            raise HTTPException(400, f"max_tokens {max_tokens} is over the limit {limits.max_tokens}")
        if req.n > limits.max_n:
            raise HTTPException(400, f"n {req.n} is over the limit {limits.max_n}")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > limits.max_stop or not all(stops):
            raise HTTPException(400, f"stop takes up to {limits.max_stop} non-empty strings")
        text = prompt if isinstance(prompt, str) else render(service.tokenizer, [prompt])[0][0]
        n_prompt = len(service.tokenizer(text)["input_ids"])
        if n_prompt == 0:
            raise HTTPException(400, "the prompt tokenizes to no tokens")
        room = service.max_positions
        if room is not None and n_prompt + max_tokens > room:
            raise HTTPException(400, f"prompt ({n_prompt} tokens) + max_tokens ({max_tokens}) is over the "
                                     f"model's {room} positions")
        return n_prompt, stops

    def completion(req: SamplingRequest, prompt: Prompt,
                   cancel: threading.Event | None = None) -> tuple[Completion, int]:
        """The request's completion, checked and ready to run, and its prompt's length in tokens."""
        n_prompt, stops = check_sampling(req, prompt)
        sampling = {"do_sample": True, "temperature": req.temperature} if req.temperature > 0 else {"do_sample": False}
        return Completion(service.model, prompt, req.n, req.limit, sampling, stops, cancel=cancel), n_prompt

    def usage(job: Completion, n_prompt: int) -> dict[str, int]:
        prompt_tokens = n_prompt * job.n
        return {"prompt_tokens": prompt_tokens, "completion_tokens": job.n_completion_tokens,
                "total_tokens": prompt_tokens + job.n_completion_tokens}

    def complete(req: SamplingRequest, prompt: Prompt) -> tuple[list[Choice], dict[str, int]]:
        job, n_prompt = completion(req, prompt)
        try:
            choices = counters.run(job)
        except MeloError as err:
            raise HTTPException(400, str(err)) from err
        return choices, usage(job, n_prompt)

    def stream(req: SamplingRequest, prompt: Prompt, kind: str, prefix: str,
               choice: Callable[[int, str | None, str | None], dict[str, Any]], chat: bool) -> EventStream:
        """Server-sent events of the completion: OpenAI chunks (``choice(row, text, finish_reason)``),
        then ``data: [DONE]``. Checked before the response starts, so bad input is still a 4xx."""
        cancel = threading.Event()
        job, n_prompt = completion(req, prompt, cancel=cancel)
        head = envelope(kind, prefix)
        include_usage = req.stream_options is not None and req.stream_options.include_usage

        def chunk(*choices: dict[str, Any], **extra: Any) -> str:
            return f"data: {json.dumps({**head, 'choices': list(choices), **extra})}\n\n"

        async def events():
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            job.emit = lambda *item: loop.call_soon_threadsafe(queue.put_nowait, item)  # from the generation thread
            running = loop.run_in_executor(None, counters.run, job)
            running.add_done_callback(lambda done: ended(done, queue))
            if chat:
                yield chunk(*(choice(row, None, None) for row in range(job.n)))
            while (item := await queue.get()) is not None:
                row, text, reason = item
                if text:
                    yield chunk(choice(row, text, None))
                if reason is not None:
                    yield chunk(choice(row, "", reason))
            try:
                running.result()
            except MeloError as err:
                yield f"data: {json.dumps({'error': {'message': str(err), 'type': 'invalid_request_error'}})}\n\n"
                return
            if include_usage:
                yield chunk(usage=usage(job, n_prompt))
            yield "data: [DONE]\n\n"

        return EventStream(events(), cancel)

    def ended(done: asyncio.Future, queue: asyncio.Queue) -> None:
        if not done.cancelled() and done.exception() is not None:  # raised again below, unless the client left
            log.debug("a streamed completion failed: %r", done.exception())
        queue.put_nowait(None)

    def envelope(kind: str, prefix: str) -> dict[str, Any]:
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
                "model": service.name}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok" if service.failure is None else "failed"}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> Any:
        if req.stream:
            return stream(req, req.prompt, "text_completion", "cmpl", lambda row, text, reason: {
                "index": row, "text": text or "", "logprobs": None, "finish_reason": reason}, chat=False)
        choices, used = complete(req, req.prompt)
        return {**envelope("text_completion", "cmpl"), "usage": used,
                "choices": [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                            for i, c in enumerate(choices)]}

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest) -> Any:
        messages = chat_messages(req.messages)
        if req.stream:
            return stream(req, messages, "chat.completion.chunk", "chatcmpl", chat_delta, chat=True)
        choices, used = complete(req, messages)
        return {**envelope("chat.completion", "chatcmpl"), "usage": used,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                             "finish_reason": c.finish_reason} for i, c in enumerate(choices)]}

    def chat_delta(row: int, text: str | None, reason: str | None) -> dict[str, Any]:
        """A chat chunk's choice: the role first (``text`` None), then content, then the finish reason."""
        delta = {"role": "assistant", "content": ""} if text is None and reason is None else {}
        if text:
            delta["content"] = text
        return {"index": row, "delta": delta, "logprobs": None, "finish_reason": reason}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    def model(model_id: str) -> dict[str, Any]:
        if model_id != service.name:
            raise HTTPException(404, f"no model {model_id!r}; this server serves {service.name!r}")
        return model_card()

    def model_card() -> dict[str, Any]:
        return {"id": service.name, "object": "model", "created": started, "owned_by": "melo"}

    def chat_messages(messages: list[Message]) -> list[dict[str, str]]:
        """Messages as MeloModel takes them (rendered through the chat template, keyed on the user's text)."""
        if not getattr(service.tokenizer, "chat_template", None):
            raise HTTPException(400, f"model {service.name!r} has no chat template; use /v1/completions")
        return [m.model_dump() for m in messages]

    async def run_op(op: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            future = service.submit(op, args)
        except QueueFullError as err:
            raise HTTPException(429, str(err)) from err
        except ServiceFailedError as err:
            raise HTTPException(503, str(err)) from err
        try:
            return await asyncio.wrap_future(future)
        except ServiceFailedError as err:
            raise HTTPException(503, str(err)) from err
        except MeloCapacityError as err:
            raise HTTPException(409, str(err)) from err
        except (MeloEditError, MeloConfigError) as err:
            raise HTTPException(404 if op == "revoke" else 400, str(err)) from err
        except MeloError as err:
            raise HTTPException(400, str(err)) from err

    @app.post("/v1/edits", response_model=EditsResponse)
    async def add_edits(req: EditsRequest) -> dict[str, Any]:
        if len(req.edits) > limits.max_edits_per_batch:
            raise HTTPException(413, f"{len(req.edits)} edits in one batch; the limit is "
                                     f"{limits.max_edits_per_batch}")
        prompts = [e.prompt if e.prompt is not None else [m.model_dump() for m in e.messages] for e in req.edits]
        targets = [e.target for e in req.edits]
        invalid = await asyncio.to_thread(service.model.invalid_edits, prompts, targets)
        if invalid:  # the whole batch is refused, every bad item named
            listed = "; ".join(f"edits[{i}]: {reason}" for i, reason in invalid)
            return JSONResponse({"detail": f"{len({i for i, _ in invalid})} of {len(prompts)} edits are invalid, "
                                           f"nothing was applied: {listed}",
                                 "invalid": [{"index": i, "reason": reason} for i, reason in invalid]},
                                status_code=400)
        subjects = [e.subject for e in req.edits]
        scoped = {"subjects": subjects} if any(s is not None for s in subjects) else {}
        return await run_op("edit", {"prompts": prompts, "targets": targets, **scoped})

    @app.get("/v1/edits")
    def list_edits() -> dict[str, list[EditRow]]:
        fields = EditRow.model_fields
        return {"edits": [EditRow(**{k: row[k] for k in fields if k in row}) for row in service.model.edits()]}

    @app.delete("/v1/edits/{edit_id}")
    async def revoke_edit(edit_id: int) -> dict[str, Any]:
        return await run_op("revoke", {"ids": [edit_id]})

    @app.post("/v1/rollback")
    async def rollback(req: RollbackRequest) -> dict[str, Any]:
        return await run_op("rollback", {"n_blocks": req.n_blocks})

    @app.get("/v1/stats")
    def stats() -> dict[str, Any]:
        return {**service.stats(), **counters.stats()}

    return app


# ---- melo serve ------------------------------------------------------------------------------------
def check_exposure(host: str, token: str | None) -> None:
    if host not in LOCAL_HOSTS and not token:
        raise MeloConfigError(f"binding to {host} needs a bearer token: pass --token or set MELO_SERVE_TOKEN")


def serve(model: str, adapter: str | None = None, preset: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, token: str | None = None, checkpoint_every: int = 20, threads: int | None = None,
          limits: Limits = Limits()) -> None:
    """Load ``model`` and the adapter state in ``adapter``, then serve until interrupted."""
    token = token or os.environ.get("MELO_SERVE_TOKEN") or None
    check_exposure(host, token)
    import torch
    import uvicorn

    from ..loading import load_model

    if threads is not None:
        torch.set_num_threads(threads)
    if adapter is None:
        print("melo serve: no --adapter folder: edits are kept in memory only and lost on exit", flush=True)
    base, tokenizer = load_model(model, progress=False)
    service = EditService.open(base, tokenizer, Path(model).name or model, adapter, preset=preset,
                               checkpoint_every=checkpoint_every, limits=limits)
    print(json.dumps({"serving": model, "host": host, "port": port, "edits": len(service.model.records),
                      "checkpoint_seq": service.checkpoint_seq, "replayed": service.replayed}), flush=True)
    uvicorn.run(create_app(service, token), host=host, port=port, log_level="warning")
