"""Replies from the text LLM itself (SmolLM2 GGUF through llama.cpp), for behaviour alignment.

The speech model is trained to answer a spoken request the way the text model answers the typed one, so the
replies come from the same LLM with its own chat template (including the default system prompt the
template inserts). Decoding is greedy by default (`temperature=0`), so a rebuild gives the same replies;
the settings are recorded in the dataset's `meta.json`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class Replier(Protocol):
    def __call__(self, history: list[dict[str, str]]) -> str: ...


@dataclass
class ReplySettings:
    model: str = "default:smollm2"
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    n_ctx: int = 2048
    threads: int = 1  # llama.cpp uses OpenMP: on a busy machine one thread is many times faster than two

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LlamaReplier:
    """`replier(history)` -> the assistant's next message for `[{"role", "content"}, ...]`."""

    def __init__(self, settings: ReplySettings) -> None:
        from llasm.assistant.basemodels import resolve

        self.settings = settings
        self.model_path = str(resolve(settings.model))
        try:
            import llama_cpp
        except ImportError as e:
            raise RuntimeError(f"reply generation needs llama-cpp-python ({e}): pip install llama-cpp-python") from None
        self.llm = llama_cpp.Llama(
            model_path=self.model_path, n_ctx=settings.n_ctx, n_threads=settings.threads,
            seed=settings.seed, verbose=False,
        )
        self.model_name = os.path.basename(self.model_path)

    def __call__(self, history: list[dict[str, str]]) -> str:
        s = self.settings
        out = self.llm.create_chat_completion(
            messages=history, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
        )
        return str(out["choices"][0]["message"]["content"]).strip()

    def close(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
