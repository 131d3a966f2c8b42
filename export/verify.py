"""Same audio through the torch checkpoint and the bundle; report how far apart they are.

    report = verify_bundle("bundles/mine", checkpoint="runs/stage2", audio=["q1.wav"])
    report.passed        # False past the thresholds below

Per clip: the encoder's states (max abs difference, and the RMS of the difference relative to the RMS of the
torch states), the adaptor's embeddings (same), and the LLM's first-token logits after the prompt with the audio slot (first-token
agreement and the overlap of the top-5 token sets). The bundle side uses the runtime's own pieces
(`assistant.bundle`, `assistant.encoder`, `assistant.adaptor`, `assistant.llm`), so this checks what a laptop
will run. The torch side is the checkpoint in float32: transformers' Whisper encoder on the real length,
the adaptor (numpy reference), the LLM with its LoRA merged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from llasm.assistant.audio import SAMPLE_RATE, load_audio, log_mel
from llasm.assistant.prompt import AUDIO, Message
from llasm.export.errors import ExportError

MAX_FRAMES = 3000


@dataclass(frozen=True)
class Thresholds:
    """Limits a bundle must stay within. Relative differences are RMS(bundle - torch) / RMS(torch): an int8
    encoder moves a few single states by a lot (whisper-base, CT2 int8: max |d| ~8 where max |x| ~23) while
    the states as a whole stay close. Measured on whisper-base (docs/export.md): CT2 int8 0.13, ONNX int8
    (dynamic) up to 0.20, float32 formats < 1e-5; a wrong layout or broken file gives ~1 or more."""

    encoder_rel: float = 0.25
    adaptor_rel: float = 0.35
    first_token_agreement: float = 0.5  # fraction of clips whose greedy first token matches torch
    top5_overlap: float = 0.6  # mean |top5(torch) & top5(bundle)| / 5


@dataclass
class ClipResult:
    name: str
    seconds: float
    encoder_max_abs: float
    encoder_rel: float
    adaptor_max_abs: float
    adaptor_rel: float
    first_token_torch: int
    first_token_bundle: int
    top5_overlap: float
    heard_match: bool | None = None  # ctc: greedy transcripts identical

    @property
    def first_token_agrees(self) -> bool:
        return self.first_token_torch == self.first_token_bundle


@dataclass
class VerifyReport:
    bundle: str
    checkpoint: str
    clips: list[ClipResult] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    files_checked: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        c = self.clips
        return {
            "encoder_rel_max": max(x.encoder_rel for x in c),
            "encoder_max_abs": max(x.encoder_max_abs for x in c),
            "adaptor_rel_max": max(x.adaptor_rel for x in c),
            "adaptor_max_abs": max(x.adaptor_max_abs for x in c),
            "first_token_agreement": float(np.mean([x.first_token_agrees for x in c])),
            "top5_overlap": float(np.mean([x.top5_overlap for x in c])),
        }

    def failures(self) -> list[str]:
        s, t = self.summary(), self.thresholds
        out = []
        if s["encoder_rel_max"] > t.encoder_rel:
            out.append(f"encoder relative RMS difference {s['encoder_rel_max']:.3f} > {t.encoder_rel}")
        if s["adaptor_rel_max"] > t.adaptor_rel:
            out.append(f"adaptor relative RMS difference {s['adaptor_rel_max']:.3f} > {t.adaptor_rel}")
        if s["first_token_agreement"] < t.first_token_agreement:
            out.append(f"first-token agreement {s['first_token_agreement']:.2f} < {t.first_token_agreement}")
        if s["top5_overlap"] < t.top5_overlap:
            out.append(f"top-5 overlap {s['top5_overlap']:.2f} < {t.top5_overlap}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "checkpoint": self.checkpoint, "summary": self.summary(),
                "thresholds": asdict(self.thresholds), "failures": self.failures(), "passed": self.passed,
                "clips": [asdict(c) | {"first_token_agrees": c.first_token_agrees} for c in self.clips],
                "files_checked": self.files_checked}


def synthetic_clips(seconds: Sequence[float] = (1.3, 3.7), seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Deterministic test signals (a voiced-like harmonic sweep with noise) when no audio files are given."""
    rng = np.random.default_rng(seed)
    out = []
    for i, dur in enumerate(seconds):
        t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
        f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t + i)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        sig = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        sig = 0.2 * sig + 0.01 * rng.standard_normal(t.shape)
        out.append((f"synthetic-{dur:g}s", sig.astype(np.float32)))
    return out


def _windows(mel: np.ndarray) -> list[np.ndarray]:
    return [mel[:, i:i + MAX_FRAMES] for i in range(0, mel.shape[1], MAX_FRAMES) if mel[:, i:i + MAX_FRAMES].shape[1] >= 2]


def _rel(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs difference, RMS of the difference / RMS of the reference); inf when shapes differ."""
    if a.shape != ref.shape:
        return float("inf"), float("inf")
    if not a.size:
        return 0.0, 0.0
    d = (a.astype(np.float64) - ref.astype(np.float64))
    rms_ref = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2)))
    return float(np.abs(d).max()), float(np.sqrt(np.mean(d**2))) / max(rms_ref, 1e-12)


def verify_bundle(bundle_dir: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None,
                  audio: Sequence[str | os.PathLike[str]] | None = None,
                  thresholds: Thresholds | None = None, n_threads: int | None = None) -> VerifyReport:
    """Validate every bundle file, then compare torch (checkpoint) and bundle on the clips."""
    import torch
    from llasm.assistant.adaptor import Adaptor, load_adaptor
    from llasm.assistant.bundle import Bundle
    from llasm.assistant.encoder import load_encoder
    from llasm.assistant.llm import LlamaLM, read_token_embeddings
    from llasm.export.checkpoint import Checkpoint
    from llasm.export.encoder import load_hf_encoder, varlen_encoder
    from llasm.export.validate import validate_bundle

    quiet_transformers()
    files = validate_bundle(bundle_dir)
    b = Bundle.load(bundle_dir)
    if checkpoint is None:
        checkpoint = (b.manifest.get("source") or {}).get("checkpoint")
        if not checkpoint:
            raise ExportError(f"{bundle_dir}/bundle.json names no source checkpoint: pass --checkpoint")
    ck = Checkpoint.load(checkpoint)
    if ck.adaptor.to_dict() != {k: v for k, v in b.adaptor.items()}:
        raise ExportError(f"the bundle's adaptor config {b.adaptor} differs from the checkpoint's "
                          f"{ck.adaptor.to_dict()}: pass the checkpoint this bundle was exported from")
    clips = ([(Path(a).name, load_audio(a)) for a in audio] if audio else synthetic_clips())
    report = VerifyReport(str(bundle_dir), str(ck.root), thresholds=thresholds or Thresholds(),
                          files_checked=[str(f) for f in files])

    # torch side
    enc_t = varlen_encoder(load_hf_encoder(ck.encoder_dir))
    llm_t = ck.load_llm(merge=True)
    from transformers import AutoTokenizer

    tok_t = AutoTokenizer.from_pretrained(str(ck.tokenizer_dir()))
    table_t = llm_t.get_input_embeddings().weight.detach().float().numpy()
    ad_t = Adaptor(ck.adaptor, ck.adaptor_tensors(), table_t if ck.adaptor.type == "ctc" else None)

    # bundle side (the runtime's own loaders)
    enc_b = load_encoder(b.encoder, n_threads=n_threads or 1)
    lm_b = LlamaLM(b.llm.path, n_ctx=b.llm.n_ctx, n_threads=n_threads, lora=b.llm.lora)
    table_b = read_token_embeddings(b.llm.path) if b.adaptor.get("type") == "ctc" else None
    ad_b = load_adaptor(b.adaptor_path, b.adaptor, token_embeddings=table_b)

    segments = ck.prompt.render([Message("user", "", audio=True, audio_first=True)])
    try:
        for name, wav in clips:
            mel = log_mel(wav, n_mels=b.n_mels)
            with torch.no_grad():
                st_t = np.concatenate([enc_t(torch.from_numpy(w[None]))[0].numpy() for w in _windows(mel)])
            st_b = enc_b.encode(mel)
            out_t, out_b = ad_t.run(st_t), ad_b.run(st_b)
            e_abs, e_rel = _rel(st_b, st_t)
            a_abs, a_rel = _rel(out_b.embeddings, out_t.embeddings)
            logit_t = _torch_first_logits(llm_t, tok_t, segments, out_t.embeddings)
            logit_b = _bundle_first_logits(lm_b, segments, out_b.embeddings)
            top_t, top_b = np.argsort(-logit_t)[:5], np.argsort(-logit_b)[:5]
            report.clips.append(ClipResult(
                name=name, seconds=len(wav) / SAMPLE_RATE, encoder_max_abs=e_abs, encoder_rel=e_rel,
                adaptor_max_abs=a_abs, adaptor_rel=a_rel, first_token_torch=int(top_t[0]),
                first_token_bundle=int(top_b[0]), top5_overlap=len(set(top_t) & set(top_b)) / 5,
                heard_match=(out_t.heard == out_b.heard) if out_t.heard is not None else None,
            ))
    finally:
        lm_b.close()
    return report


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from transformers/peft on our CLI's output."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def _torch_first_logits(llm: Any, tok: Any, segments: Sequence[Any], audio_emb: np.ndarray) -> np.ndarray:
    import torch

    table = llm.get_input_embeddings()
    parts = []
    for seg in segments:
        if seg is AUDIO:
            parts.append(torch.from_numpy(np.asarray(audio_emb, dtype=np.float32)))
        else:
            ids = tok(seg, add_special_tokens=False).input_ids
            parts.append(table(torch.tensor(ids)).detach())
    emb = torch.cat(parts)[None]
    with torch.no_grad():
        return llm(inputs_embeds=emb).logits[0, -1].float().numpy()


def _bundle_first_logits(lm: Any, segments: Sequence[Any], audio_emb: np.ndarray) -> np.ndarray:
    lm.clear()
    pos, logits = 0, None
    for seg in segments:
        if seg is AUDIO:
            logits = lm.decode_embeddings(audio_emb, pos)
            pos += len(audio_emb)
        else:
            ids = lm.tokenize(seg)
            logits = lm.decode_tokens(ids, pos)
            pos += len(ids)
    if logits is None:
        raise ExportError("the prompt produced no positions: check the prompt template in bundle.json")
    return np.asarray(logits, dtype=np.float32)
