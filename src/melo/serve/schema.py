"""Request and response bodies of ``melo serve`` (OpenAI's shapes for completions, melo's for edits)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    model: str | None = None  # accepted for OpenAI clients, ignored
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @property
    def limit(self) -> int:
        """Tokens to generate at most."""
        return self.max_tokens


class CompletionRequest(SamplingRequest):
    prompt: str = Field(min_length=1)


class ChatRequest(SamplingRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens

    @property
    def limit(self) -> int:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class EditItem(BaseModel):
    prompt: str | None = Field(None, min_length=1)
    messages: list[Message] | None = Field(None, min_length=1)
    target: str = Field(min_length=1)
    subject: str | None = Field(None, min_length=1)  # with subject_gate: routes only prompts naming it

    @model_validator(mode="after")
    def one_prompt(self) -> "EditItem":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        return self


class EditsRequest(BaseModel):
    edits: list[EditItem] = Field(min_length=1)


class RollbackRequest(BaseModel):
    n_blocks: int = Field(ge=0)


class EditsResponse(BaseModel):
    ids: list[int]
    block: int
    added: int
    expanded: int
    conflicts: int
    forgotten: list[int]


class EditRow(BaseModel):
    id: int
    prompt: str | list[dict[str, str]]
    target: str
    block: int
    status: str
    reason: str | None
    created: float
    subject: str | None = None
