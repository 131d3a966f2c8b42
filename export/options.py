"""`ExportOptions`: how `llasm-export bundle` turns a checkpoint into a bundle (export/bundle.py does it).

Apart from export/bundle.py, which loads gguf and the exporters, so that the command line takes its defaults
from here at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from llasm.assistant.bundle import DEFAULT_N_CTX

DEFAULT_LLM_QUANT = "q8_0"  # a changed LLM's GGUF type when --llm-quant is not given


@dataclass(frozen=True)
class ExportOptions:
    """How `export_bundle` writes a bundle: `llasm-export bundle`'s options (export/cli.py builds one)."""

    encoder: str = "ct2"  # ct2 | onnx
    encoder_dtype: str = "int8"  # int8 | float16 | float32
    # None (or q4_1): reuse `default:smollm2` when the LLM is the unchanged packaged base model (and
    # `reuse_defaults`), else quantize to DEFAULT_LLM_QUANT; q8_0 of the unchanged base reuses
    # `default:smollm2-q8_0`, requantized from the packaged Q4_1 at install
    llm_quant: str | None = None
    lora_adapter: bool = False  # keep a LoRA checkpoint's adapter as lora.gguf over an unchanged base GGUF
    lora_turns: str = "all"  # the turns the runtime runs the LoRA for: all, or transcribe (answers: plain LLM)
    reuse_defaults: bool = True  # reference default:... base models instead of copying them
    mmproj: bool = False  # ultravox adaptors: also write mmproj.gguf for stock llama.cpp tools
    n_ctx: int = DEFAULT_N_CTX  # llama.cpp context recorded in bundle.json
    force: bool = False  # replace OUT if it is a bundle an export wrote (`check_replaceable`)
    # llama.cpp's pre-tokenizer for a BPE tokenizer it cannot identify (e.g. "gpt-2" for a plain byte-level BPE)
    tokenizer_pre: str | None = None
    system_prompt: str | None = None  # replaces the chat template's default system prompt ("" for none)
    # replaces what the runtime's `--transcribe` asks (default: the checkpoint's, "Transcribe the audio.")
    transcribe_instruction: str | None = None
    # how many tokens a ctc adaptor mixes per segment at run time (1: the most likely token's own embedding, so
    # the LLM reads the adaptor's transcript as if it were typed)
    ctc_topk: int | None = None
    # JSON-lines manifests (normally the training data): a ctc head scores only the tokens their transcripts use
    # (`vocab.ids`), a few times less work than the whole vocabulary, and it was never trained to emit others
    ctc_vocab: Sequence[str | os.PathLike[str]] = ()
    # a top-1 ctc adaptor: bundle.json's `hearing.n_best`, how many of the beam's transcripts the plain LLM
    # rescores by default (assistant/ctcbeam.py; hands-free mode rescores more)
    hearing_n_best: int | None = None
    # an order, 1 to 4 (needs `ctc_vocab` and topk 1): count the `ctc_vocab` transcripts into a token n-gram over
    # the head's labels (`hearing_lm.npz`, assistant/ngram.py) for the beam search (bundle.json's `hearing.ngram`)
    hearing_ngram: int | None = None
    hearing_ngram_fusion: float | None = None  # the n-gram's weight in the beam search (`hearing.ngram_fusion`)
    # bundle.json's `hearing.mode` (whisper, adaptor or embeddings; assistant/hearing.py). None: whisper where the
    # encoder is a CTranslate2 Whisper with its decoder, since it hears real speech far better than a trained
    # adaptor (docs/model-card.md), else the adaptor
    hearing_mode: str | None = None
