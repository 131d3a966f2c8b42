"""`--llm PATH.gguf`: answer with any chat GGUF llama.cpp loads instead of the bundle's LLM.

The prompt comes from the GGUF's own chat template (`tokenizer.chat_template`), rendered with jinja2 the way
transformers renders it, through sentinel messages (`PromptTemplate.from_chat_template`); its stop strings are
what closes an assistant turn and the EOS. A GGUF without a chat template is not a chat model: a one-line
`LLMError`, never a guessed format.

Which hearing modes such an LLM can serve: Whisper's transcript (hearing mode whisper) reaches the LLM as text
tokens, so any LLM reads it with no training. The bundle's adaptor (modes adaptor and embeddings) was trained for
one LLM, which bundle.json's llm section names (name, n_embd, vocabulary hash, see `LlamaLM.identity`);
`adaptor_mismatch` says why another LLM cannot use it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from .llm import LlamaLM, LLMError
from .prompt import PromptTemplate

FIX = "use --hearing whisper, or the bundle's LLM"


def _jinja_env() -> Any:
    """A sandboxed jinja2 environment with what transformers' chat-template renderer adds (loop controls,
    `raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII text)."""
    import json

    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        from jinja2.exceptions import TemplateError

        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, **_: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def chat_prompt(lm: LlamaLM, base: PromptTemplate) -> PromptTemplate:
    """The PromptTemplate of `lm`'s own chat template. From `base` (the bundle's) it keeps what is not the
    model's format: the transcribe instruction, the audio separator, and the default system prompt when the
    template has none of its own (a llasm instruction for spoken answers, not tied to one model)."""
    source = lm.meta("tokenizer.chat_template")
    if not source:
        raise LLMError(f"{lm.path} is not a chat model (no tokenizer.chat_template): use a chat/instruct GGUF")
    from jinja2.exceptions import TemplateError

    c = lm._c
    bos_id, eos_id = int(c.llama_vocab_bos(lm._vocab)), int(c.llama_vocab_eos(lm._vocab))
    bos, eos = lm.token_text(bos_id), lm.token_text(eos_id)
    try:
        template = _jinja_env().from_string(source)
    except TemplateError as e:
        raise LLMError(f"{lm.path}: its chat template does not parse ({_one_line(e)})") from None

    class _Renderer:
        def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> str:
            return template.render(messages=conversation, add_generation_prompt=kwargs.get("add_generation_prompt"),
                                   bos_token=bos, eos_token=eos)

    try:
        derived = PromptTemplate.from_chat_template(_Renderer(), bos_token=bos or None, eos_token=eos or None)
    except (TemplateError, ValueError, TypeError) as e:
        raise LLMError(f"{lm.path}: cannot derive a prompt from its chat template ({_one_line(e)}); it needs a "
                       f"system, user and assistant turn") from None
    prefix = derived.prefix
    if bos and bool(c.llama_vocab_get_add_bos(lm._vocab)) and not (prefix + derived.system).startswith(bos):
        # The model wants a BOS that its template does not print (llama.cpp adds it when it tokenizes a prompt):
        # the runtime tokenizes without adding one, so the prefix carries it.
        prefix = bos + prefix
    eot = lm.token_text(int(c.llama_vocab_eot(lm._vocab)))
    stops = tuple(sorted({s for s in (*derived.stop, eot) if s}))
    return dataclasses.replace(derived, prefix=prefix, stop=stops,
                               default_system=derived.default_system or base.default_system,
                               audio_separator=base.audio_separator, transcribe=base.transcribe)


def adaptor_mismatch(stated: dict[str, Any], lm: LlamaLM, *, adaptor_type: str) -> str | None:
    """None when the bundle's adaptor can write into `lm` (`stated`: bundle.json's llm section), else the one
    line that says why not and the fix. A ctc adaptor picks token ids and reads their rows from the LLM's own
    table, so an LLM with the same vocabulary and width serves (another quantization, another build); an adaptor
    that writes continuous embeddings was fitted to one model's space, so its name must match as well."""
    want_vocab, want_embd = stated.get("vocab_sha256"), stated.get("n_embd")
    if not want_vocab or not want_embd:
        return (f"the bundle does not state which LLM its adaptor was trained for (bundle.json's llm.vocab_sha256 "
                f"and llm.n_embd; re-export it), so --llm {lm.path.name} cannot use the adaptor: {FIX}")
    have = lm.identity()
    what = []
    if int(want_embd) != have["n_embd"]:
        what.append(f"n_embd {have['n_embd']}, not {want_embd}")
    if want_vocab != have["vocab_sha256"]:
        what.append(f"another vocabulary ({have['n_vocab']} tokens, sha256 {have['vocab_sha256'][:12]}..., not "
                    f"{str(want_vocab)[:12]}...)")
    if not what and adaptor_type != "ctc" and stated.get("name") and stated["name"] != have["name"]:
        what.append(f"another model ({have['name']!r}, not {stated['name']!r}), and this {adaptor_type} adaptor "
                    f"writes into one model's embedding space")
    if not what:
        return None
    return (f"the bundle's adaptor was trained for {stated.get('name') or 'another LLM'}; --llm {lm.path.name} has "
            f"{'; '.join(what)}: {FIX}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
