"""The LLaSM model: frozen Whisper encoder (real length) -> modal adaptor -> LLaMA-family LM.

    model = LLaSM.build(ModelSpec(encoder="whisper-dir", llm="llama-dir", adaptor={"type": "ultravox"}))
    feats, mel_len = model.features([audio1, audio2])          # log-mel, zero padded
    out = model.loss(batch)                                    # batch from `model.collate(samples)`

The adaptor modules use exactly the tensor names of `docs/adaptors.md`, so `adaptor.state_dict()` is the
content of `adaptor.safetensors`, and `assistant.adaptor` (numpy) computes the same function.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from llasm.assistant.adaptor import DEFAULT_CTC_TOPK, DEFAULT_STACK, NORM_EPS, AdaptorConfig, ctc_segments
from llasm.assistant.prompt import AUDIO, Message, PromptTemplate
from llasm.training.samples import Sample, Turn
from torch import nn

IGNORE = -100
CTC_VOCAB = "ctc_vocab.json"  # in a checkpoint: the token ids a --ctc-shortlist head scores
LLM_WEIGHTS = ("base", "full", "lora")


class ModelError(ValueError):
    """A model that cannot be built or loaded; the message names the fix."""


# ---- encoder --------------------------------------------------------------------------------------
class WhisperEncoderVL(nn.Module):
    """A Hugging Face `WhisperEncoder` run on the real length of each clip.

    The positional table is sliced to the input length and keys past a clip's length are masked; conv1
    outputs past the length are zeroed so a padded batch equals per-clip results."""

    def __init__(self, hf_encoder: nn.Module) -> None:
        super().__init__()
        self.enc = hf_encoder
        self.d_model = int(hf_encoder.config.d_model)
        self.n_mels = int(hf_encoder.config.num_mel_bins)
        self.max_frames = 2 * int(hf_encoder.config.max_source_positions)

    @staticmethod
    def out_lengths(mel_lengths: torch.Tensor) -> torch.Tensor:
        return (mel_lengths + 1) // 2

    def forward(self, features: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.enc
        b, n_mels, t = features.shape
        if n_mels != self.n_mels:
            raise ModelError(f"features have {n_mels} mel bins, the encoder wants {self.n_mels}")
        if t > self.max_frames:
            raise ModelError(f"audio of {t} mel frames exceeds the encoder's {self.max_frames} (30 s)")
        dtype = enc.conv1.weight.dtype
        x = features.to(dtype)
        frame = torch.arange(t, device=x.device)[None, :]
        x = F.gelu(enc.conv1(x))
        x = x * (frame < mel_lengths[:, None]).to(x.dtype)[:, None, :]
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        t2 = x.shape[1]
        lens = self.out_lengths(mel_lengths)
        x = x + enc.embed_positions.weight[:t2].to(x.dtype)
        keep = torch.arange(t2, device=x.device)[None, :] < lens[:, None]
        mask = torch.zeros(b, 1, t2, t2, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(~keep[:, None, None, :], torch.finfo(x.dtype).min)
        for layer in enc.layers:
            out = layer(x, attention_mask=mask)
            x = out[0] if isinstance(out, tuple) else out
        x = enc.layer_norm(x)
        return x, lens


# ---- adaptors (torch twins of assistant/adaptor.py) -------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class _Blank(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(1))


def stack_batch(states: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, d] -> [B, ceil(T/k), k*d], frames past each length zeroed first (docs/adaptors.md)."""
    b, t, d = states.shape
    keep = torch.arange(t, device=states.device)[None, :] < lengths[:, None]
    x = states * keep[..., None].to(states.dtype)
    n = -(-t // k)
    if n * k != t:
        x = F.pad(x, (0, 0, 0, n * k - t))
    return x.reshape(b, n, k * d), (lengths + k - 1) // k


def mask_states(states: torch.Tensor, lengths: torch.Tensor, fraction: float, max_span: int = 10) -> torch.Tensor:
    """SpecAugment on frozen encoder states [B, T, d]: per clip, zero about `fraction` of its frames in
    random spans of 1..max_span frames and `fraction` of the channels (one random band). A regulariser for
    adaptors that would otherwise memorise the training voices; draws from torch's global RNG (resumable)."""
    if not 0 < fraction < 1:
        raise ModelError(f"state_mask must be in (0, 1), not {fraction}")
    b, t, d = states.shape
    keep = torch.ones(b, t, 1, dtype=states.dtype, device=states.device)
    chan = torch.ones(b, 1, d, dtype=states.dtype, device=states.device)
    for i in range(b):
        n = int(lengths[i])
        budget = int(fraction * n)
        while budget > 0:
            span = min(int(torch.randint(1, max_span + 1, ())), budget)
            start = int(torch.randint(0, max(n - span, 0) + 1, ()))
            keep[i, start:start + span] = 0
            budget -= span
        width = int(fraction * d)
        if width:
            lo = int(torch.randint(0, d - width + 1, ()))
            chan[i, :, lo:lo + width] = 0
    return states * keep * chan


class Adaptor(nn.Module):
    """Encoder states -> LLM embeddings. `forward` returns one [N_i, n_embd] tensor per clip."""

    def __init__(self, config: AdaptorConfig) -> None:
        super().__init__()
        self.config = config
        c, s, e = config, config.stacked_dim, config.n_embd
        if c.type == "linear":
            self.proj = nn.Linear(s, e)
        elif c.type == "ultravox":
            self.ln_pre = RMSNorm(s)
            self.linear_1 = nn.Linear(s, c.hidden, bias=False)
            self.ln_mid = RMSNorm(c.hidden // 2)
            self.linear_2 = nn.Linear(c.hidden // 2, e, bias=False)
        else:
            self.ln_pre = RMSNorm(s)
            self.linear_1 = nn.Linear(s, c.hidden)
            self.linear_2 = nn.Linear(c.hidden, e)
            self.blank = _Blank(e)
        self.token_embeddings: torch.Tensor | None = None  # ctc: set from the LLM, never saved
        # ctc: the sorted token ids the head scores (`--ctc-shortlist`, as a bundle's shortlist); None: all.
        # Kept beside the weights (a checkpoint's ctc_vocab.json), not in them.
        self.vocab_ids: torch.Tensor | None = None

    def ctc_logits(self, states: torch.Tensor, lengths: torch.Tensor,
                   vocab: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ctc: [B, N, V+1] float32 logits (blank last) and output lengths. `vocab` (sorted token ids) scores
        only those tokens, as a bundle's shortlist does at run time: [B, N, len(vocab)+1]. Column j < V is
        token `vocab[j]` then; forward() maps them back."""
        x, n = stack_batch(states, lengths, self.config.stack)
        x = x.to(self.linear_1.weight.dtype)
        h = F.silu(self.linear_1(self.ln_pre(x)))
        o = self.linear_2(h).float()
        table = self._table().float()
        if vocab is not None:
            table = table[vocab.to(table.device)]
        tok = o @ table.T
        blank = o @ self.blank.weight.float() + self.blank.bias.float()
        return torch.cat([tok, blank[..., None]], dim=-1), n

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], list[list[int]] | None]:
        c = self.config
        if c.type == "ctc":
            logits, n = self.ctc_logits(states, lengths, self.vocab_ids)
            table = self._table().float()
            # columns are shortlist positions where the head has a shortlist: map them to token ids
            vocab = self.vocab_ids.to(table.device) if self.vocab_ids is not None else None
            n_tok = logits.shape[-1] - 1
            outs, heard = [], []
            for i in range(states.shape[0]):
                lg = logits[i, : int(n[i])]
                segs = ctc_segments(lg.argmax(-1).cpu().numpy(), blank=n_tok)
                cols = torch.tensor([s[0] for s in segs], dtype=torch.long, device=table.device)
                ids = vocab[cols] if vocab is not None else cols
                heard.append(ids.tolist())
                if c.topk == 1:  # each segment is its token's row (a one-token posterior mix is exactly that)
                    outs.append(table[ids])
                    continue
                probs = lg.softmax(-1)
                rows = []
                for _, a, b in segs:
                    q = probs[a:b, :n_tok].mean(0)
                    idx = torch.sort(q, descending=True, stable=True).indices[: c.topk]
                    w = q[idx] / q[idx].sum()
                    rows.append(w @ table[vocab[idx] if vocab is not None else idx])
                outs.append(torch.stack(rows) if rows else table.new_zeros(0, c.n_embd))
            return outs, heard
        x, n = stack_batch(states, lengths, c.stack)
        x = x.to(next(self.parameters()).dtype)
        if c.type == "linear":
            y = self.proj(x)
        else:
            h = self.linear_1(self.ln_pre(x))
            a, g = h.chunk(2, dim=-1)
            y = self.linear_2(self.ln_mid(F.silu(g) * a))
        return [y[i, : int(n[i])] for i in range(y.shape[0])], None

    def _table(self) -> torch.Tensor:
        if self.token_embeddings is None:
            raise ModelError("ctc adaptor has no token-embedding table; attach the LLM first")
        return self.token_embeddings

    def tensors(self) -> dict[str, torch.Tensor]:
        """The adaptor.safetensors content (float32, contiguous)."""
        return {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}


def init_adaptor_config(spec: dict[str, Any], d_model: int, n_embd: int, vocab_size: int) -> AdaptorConfig:
    kind = spec.get("type", "ultravox")
    d = {"type": kind, "d_model": d_model, "n_embd": n_embd, "stack": spec.get("stack", DEFAULT_STACK.get(kind, 1))}
    if kind == "ultravox":
        d["hidden"] = spec.get("hidden", 2 * max(n_embd, d_model * d["stack"] // 2))
    if kind == "ctc":
        d.update(hidden=spec.get("hidden", 2 * n_embd), vocab_size=vocab_size, topk=spec.get("topk", DEFAULT_CTC_TOPK))
    return AdaptorConfig.from_dict(d)


# ---- prompt pieces ----------------------------------------------------------------------------------
def template_for(tokenizer: Any) -> PromptTemplate:
    """The prompt template from the tokenizer's own chat template (BOS kept only if it is not a turn opener)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the LLM's tokenizer has no chat template; use an instruct/chat model")
    tpl = PromptTemplate.from_chat_template(tokenizer, eos_token=tokenizer.eos_token, bos_token=tokenizer.bos_token)
    if tpl.prefix and (tpl.user.startswith(tpl.prefix) or tpl.generation.startswith(tpl.prefix)):
        tpl = PromptTemplate.from_chat_template(tokenizer, eos_token=tokenizer.eos_token)
    return tpl


class PromptBuilder:
    """Turns -> `Sample` via `PromptTemplate.render`, each text segment tokenized on its own (as at run time)."""

    def __init__(self, template: PromptTemplate, tokenizer: Any) -> None:
        self.template, self.tok = template, tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"]) if text else []

    def build(self, turns: Sequence[Turn], *, text_only: bool = False, add_generation: bool = False) -> Sample:
        """text_only: spoken turns read their transcript instead (the KL teacher's view)."""
        s = Sample()
        tpl = self.template
        for i, t in enumerate(turns):
            if t.role == "assistant":
                before, after = tpl.assistant_parts()
                self._text(s, (tpl.prefix if i == 0 else "") + before, False)
                self._text(s, t.text + after, True)
                continue
            if t.audio is not None and text_only:
                content = t.transcript if not t.text else (
                    t.transcript + tpl.audio_separator + t.text if t.audio_first else t.text + tpl.audio_separator + t.transcript)
                msg = Message(t.role, content)
            else:
                msg = Message(t.role, t.text, audio=t.audio is not None, audio_first=t.audio_first)
            for seg in tpl.render([msg], add_generation=False, include_prefix=(i == 0)):
                if seg is AUDIO:
                    s.ids.append(-1)
                    s.train.append(False)
                    s.clips.append(int(t.audio))  # type: ignore[arg-type]
                else:
                    self._text(s, seg, False)  # type: ignore[arg-type]
        if add_generation:
            self._text(s, tpl.generation, False)
        return s

    def _text(self, s: Sample, text: str, train: bool) -> None:
        ids = self.encode(text)
        s.ids.extend(ids)
        s.train.extend([train] * len(ids))


# ---- the model --------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    encoder: str  # HF Whisper dir
    llm: str  # HF LLaMA dir (or the dir holding `llm_gguf`)
    adaptor: dict[str, Any] = field(default_factory=lambda: {"type": "ultravox"})
    llm_gguf: str | None = None  # load the LLM from this GGUF file inside `llm`
    llm_weights: str = "base"  # what trains in the LLM: base (frozen), full, lora
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    gradient_checkpointing: bool = False
    kl_teacher: bool = False  # keep a frozen copy of the LLM for the KL loss when it trains in full
    state_mask: float = 0.0  # training only: fraction of encoder-state frames and channels masked (SpecAugment)


class LLaSM(nn.Module):
    def __init__(self, encoder: WhisperEncoderVL | None, adaptor: Adaptor, llm: nn.Module, tokenizer: Any,
                 template: PromptTemplate, spec: ModelSpec, encoder_info: dict[str, int] | None = None) -> None:
        super().__init__()
        self.encoder, self.adaptor, self.llm = encoder, adaptor, llm
        self.tokenizer, self.template, self.spec = tokenizer, template, spec
        self.prompt = PromptBuilder(template, tokenizer)
        self.teacher: nn.Module | None = None
        if encoder is not None:
            encoder.requires_grad_(False).eval()
            encoder_info = {"n_mels": encoder.n_mels, "d_model": encoder.d_model}
        if encoder_info is None:
            raise ModelError("a model without its encoder needs the encoder's n_mels and d_model")
        self.encoder_info = {"n_mels": int(encoder_info["n_mels"]), "d_model": int(encoder_info["d_model"])}
        self._attach_table()

    # -- construction --
    @classmethod
    def build(cls, spec: ModelSpec, adaptor_tensors: dict[str, torch.Tensor] | None = None,
              adaptor_config: dict[str, Any] | None = None, lora_dir: str | None = None,
              full_llm_dir: str | None = None, encoder_info: dict[str, int] | None = None) -> LLaSM:
        """`encoder_info` ({n_mels, d_model}) builds the model without its encoder: for runs whose audio comes
        as heard token ids (`training.data.HeardCache`), where the frozen encoder would never run."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if spec.llm_weights not in LLM_WEIGHTS:
            raise ModelError(f"llm_weights must be one of {LLM_WEIGHTS}, got {spec.llm_weights!r}")
        encoder = None if encoder_info is not None else cls._load_encoder(spec.encoder)
        d_model = encoder.d_model if encoder is not None else int(encoder_info["d_model"])  # type: ignore[index]
        llm_src = full_llm_dir or spec.llm
        kw: dict[str, Any] = {"dtype": torch.float32}
        tok_kw: dict[str, Any] = {}
        if spec.llm_gguf and not full_llm_dir:
            kw["gguf_file"] = tok_kw["gguf_file"] = spec.llm_gguf
        if not Path(llm_src).is_dir():
            raise ModelError(f"LLM directory {llm_src} not found; give a Hugging Face LLaMA dir")
        if "gguf_file" in kw:  # transformers' GGUF loader drops Llama-3 rope scaling (the rope_freqs tensor)
            from llasm.training.convert import ConversionError, gguf_llama3_rope
            from transformers import AutoConfig

            try:
                rope = gguf_llama3_rope(Path(llm_src) / spec.llm_gguf)
            except ConversionError as e:
                raise ModelError(str(e)) from None
            if rope is not None:
                kw["config"] = AutoConfig.from_pretrained(llm_src, gguf_file=spec.llm_gguf)
                kw["config"].rope_parameters = rope
        llm = AutoModelForCausalLM.from_pretrained(llm_src, **kw).float()
        tok_src = full_llm_dir if (full_llm_dir and (Path(full_llm_dir) / "tokenizer_config.json").exists()) else spec.llm
        tokenizer = AutoTokenizer.from_pretrained(tok_src, **({} if tok_src == full_llm_dir else tok_kw))
        template = template_for(tokenizer)
        emb = llm.get_input_embeddings().weight
        if adaptor_config is not None:
            acfg = AdaptorConfig.from_dict(adaptor_config)
        else:
            acfg = init_adaptor_config(spec.adaptor, d_model, emb.shape[1], emb.shape[0])
        if acfg.d_model != d_model or acfg.n_embd != emb.shape[1]:
            raise ModelError(f"adaptor {acfg.d_model}->{acfg.n_embd} does not fit encoder {d_model} "
                             f"and LLM {emb.shape[1]}")
        adaptor = Adaptor(acfg)
        if adaptor_tensors is not None:
            adaptor.load_state_dict({k: v.float() for k, v in adaptor_tensors.items()})
        llm.requires_grad_(spec.llm_weights == "full")
        if spec.llm_weights == "lora":
            from peft import LoraConfig, PeftModel, get_peft_model

            if lora_dir:
                llm = PeftModel.from_pretrained(llm, lora_dir, is_trainable=True)
            else:
                llm = get_peft_model(llm, LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha,
                                                     lora_dropout=spec.lora_dropout,
                                                     target_modules=list(spec.lora_targets), task_type="CAUSAL_LM"))
        if spec.gradient_checkpointing and spec.llm_weights != "base":
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(llm, "enable_input_require_grads"):
                llm.enable_input_require_grads()
        model = cls(encoder, adaptor, llm, tokenizer, template, spec, encoder_info=encoder_info)
        if spec.kl_teacher and spec.llm_weights == "full":
            model.teacher = copy.deepcopy(llm).requires_grad_(False).eval()
        return model

    @staticmethod
    def _load_encoder(path: str) -> WhisperEncoderVL:
        from transformers import WhisperModel

        enc_dir = Path(path)
        if not (enc_dir / "config.json").is_file():
            raise ModelError(f"{enc_dir} is not a Hugging Face Whisper directory (no config.json); "
                             "convert one with `llasm-train base-models`")
        # .float(): some transformers releases load a few tensors (biases) in the checkpoint's dtype even
        # with dtype=float32, which breaks the conv layers under CUDA autocast (seen with 5.17 on an H200).
        whisper = WhisperModel.from_pretrained(str(enc_dir), dtype=torch.float32).float()
        encoder = WhisperEncoderVL(whisper.get_encoder())
        del whisper.decoder
        return encoder

    def _attach_table(self) -> None:
        if self.adaptor.config.type == "ctc":
            # the frozen embedding table; a view, never a parameter of the adaptor
            self.adaptor.token_embeddings = self.base_llm().get_input_embeddings().weight.detach()

    def base_llm(self) -> nn.Module:
        m = self.llm
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- audio --
    def features(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        from llasm.training.data import features_batch

        return features_batch(audios, self.encoder_info["n_mels"])

    @torch.no_grad()
    def encode(self, features: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            raise ModelError("this model was built without its encoder (its audio comes from a heard cache); "
                             "load it with its encoder to run on audio or encoder states")
        self.encoder.eval()
        # The frozen encoder runs in its own (float32) precision, outside any autocast region, on the
        # device its weights live on.
        dev = next(self.encoder.parameters()).device
        with torch.autocast(device_type=dev.type, enabled=False):
            return self.encoder(features.to(dev, torch.float32), mel_lengths.to(dev))

    # -- sequences --
    def embed(self, samples: Sequence[Sample], audio_emb: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Samples (their clip indices point into `audio_emb`) -> inputs_embeds, attention_mask, labels."""
        table = self.base_llm().get_input_embeddings()
        dev = table.weight.device
        seqs, labs = [], []
        for s in samples:
            ids = torch.tensor([max(i, 0) for i in s.ids], device=dev, dtype=torch.long)
            tok = table(ids)
            parts, lab, clip_i, start = [], [], 0, 0
            for j, i in enumerate(s.ids + [-2]):
                if i < 0:
                    if j > start:
                        parts.append(tok[start:j])
                        lab.extend(t if tr else IGNORE for t, tr in zip(s.ids[start:j], s.train[start:j], strict=True))
                    if i == -1:
                        a = audio_emb[s.clips[clip_i]].to(tok.dtype)
                        clip_i += 1
                        parts.append(a)
                        lab.extend([IGNORE] * a.shape[0])
                    start = j + 1
            seqs.append(torch.cat(parts) if parts else tok[:0])
            labs.append(torch.tensor(lab, dtype=torch.long, device=dev))
        n = max(x.shape[0] for x in seqs)
        emb = torch.zeros(len(seqs), n, seqs[0].shape[-1], dtype=seqs[0].dtype, device=dev)
        mask = torch.zeros(len(seqs), n, dtype=torch.long, device=dev)
        labels = torch.full((len(seqs), n), IGNORE, dtype=torch.long, device=dev)
        for i, (x, y) in enumerate(zip(seqs, labs, strict=True)):
            emb[i, : x.shape[0]] = x
            mask[i, : x.shape[0]] = 1
            labels[i, : y.shape[0]] = y
        return emb, mask, labels

    def audio_embeddings(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], list[list[int]] | None]:
        return self.adaptor(states, lengths)

    def heard_embeddings(self, heard: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Heard token ids (a `HeardCache`) -> what a top-1 ctc adaptor feeds the LLM: each token's row."""
        c = self.adaptor.config
        if c.type != "ctc" or c.topk != 1:
            raise ModelError(f"heard token ids stand in for a top-1 ctc adaptor only (this one: {c.type}, topk {c.topk})")
        table = self.adaptor._table()
        return [table[torch.tensor(list(h), dtype=torch.long, device=table.device)] for h in heard]

    def batch_audio(self, batch: dict[str, Any]) -> tuple[list[torch.Tensor], list[list[int]] | None]:
        """A `collate` batch's audio as LLM input embeddings per clip (and, for ctc, the heard token ids)."""
        if "heard" in batch:
            return self.heard_embeddings(batch["heard"]), [list(h) for h in batch["heard"]]
        if "states" in batch:
            states, lens = batch["states"], batch["state_lengths"]
        else:
            states, lens = self.encode(batch["features"], batch["mel_lengths"])
        dev = self.adaptor_device()
        return self.adaptor(states.to(dev), lens.to(dev))

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """Training loss of a `training.data.collate` batch and the number of tokens it averages over."""
        if "heard" in batch:
            if batch["objective"] == "ctc":
                raise ModelError("the ctc objective trains on encoder states, not heard token ids")
            return self.lm_loss(batch["samples"], self.heard_embeddings(batch["heard"]), batch.get("teacher"))
        if "states" in batch:
            states, lens = batch["states"], batch["state_lengths"]
        else:
            states, lens = self.encode(batch["features"], batch["mel_lengths"])
        dev = self.adaptor_device()
        states, lens = states.to(dev), lens.to(dev)
        if self.training and self.spec.state_mask > 0:
            states = mask_states(states, lens, self.spec.state_mask)
        if batch["objective"] == "ctc":
            return self.ctc_loss(states, lens, batch["targets"])
        audio_emb, _ = self.adaptor(states, lens)
        return self.lm_loss(batch["samples"], audio_emb, batch.get("teacher"))

    def adaptor_device(self) -> torch.device:
        return next(self.adaptor.parameters()).device

    # -- losses --
    def lm_loss(self, samples: Sequence[Sample], audio_emb: Sequence[torch.Tensor],
                teacher_samples: Sequence[Sample] | None = None) -> tuple[torch.Tensor, int]:
        """Cross-entropy on the trained tokens, or (teacher_samples given) KL(teacher || student) there."""
        emb, mask, labels = self.embed(samples, audio_emb)
        keep = _trained_positions(labels)
        n = int(keep.sum())
        # the LM head runs only where a token is trained: most positions are prompt and audio
        logits = self._logits(self.llm, emb, mask, keep)
        tgt = labels[:, 1:][keep[:, :-1]]
        kl_rows = [i for i, t in enumerate(teacher_samples or []) if t is not None]
        if not kl_rows:
            return F.cross_entropy(logits, tgt), n
        # rows with a teacher sample: KL to it; rows without (None): cross-entropy on their own replies
        row_of = keep.nonzero()[:, 0]
        on_kl = torch.isin(row_of, torch.tensor(kl_rows, device=row_of.device))
        with torch.no_grad(), self._teacher() as teacher:
            t_emb, t_mask, t_labels = self.embed([teacher_samples[i] for i in kl_rows], [])  # type: ignore[index]
            t_keep = _trained_positions(t_labels)
            if int(t_keep.sum()) != int(on_kl.sum()):
                raise ModelError("teacher and student sequences train different numbers of tokens")
            t_logp = self._logits(teacher, t_emb, t_mask, t_keep).log_softmax(-1)
        s_logp = logits[on_kl].log_softmax(-1)
        total = (t_logp.exp() * (t_logp - s_logp)).sum()
        if not bool(on_kl.all()):
            total = total + F.cross_entropy(logits[~on_kl], tgt[~on_kl], reduction="sum")
        return total / n, n

    @staticmethod
    def _logits(llm: nn.Module, emb: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """float32 logits [n, V] at the `keep` positions ([B, T] bool), in row-major order.

        The LM head runs on the columns that any row trains (a 1-D `logits_to_keep`, which every transformers
        5 release takes; a [B, T] mask is newer than 5.17), then each row keeps its own positions."""
        cols = keep.any(0).nonzero().squeeze(1)
        out = llm(inputs_embeds=emb, attention_mask=mask, logits_to_keep=cols).logits  # [B, len(cols), V]
        return out[keep[:, cols]].float()

    @contextlib.contextmanager
    def _teacher(self):
        if self.teacher is not None:
            yield self.teacher
        elif self.spec.llm_weights == "lora":
            with self.llm.disable_adapter():
                yield self.llm
        else:
            yield self.llm

    def ctc_loss(self, states: torch.Tensor, lengths: torch.Tensor, targets: Sequence[list[int]]) -> tuple[torch.Tensor, int]:
        """Per-token CTC loss. Training over the adaptor's `vocab_ids` where it has them (`--ctc-shortlist`: the
        training transcripts' tokens, the shortlist a bundle scores at run time); evaluation over the whole
        vocabulary, since held-out transcripts have tokens the training ones lack (and it stays comparable)."""
        vocab = self.adaptor.vocab_ids if self.training else None
        logits, n = self.adaptor.ctc_logits(states, lengths, vocab)
        logp = logits.log_softmax(-1).transpose(0, 1)  # [N, B, C]
        flat = torch.tensor([t for tg in targets for t in tg], dtype=torch.long)
        blank = self.adaptor.config.vocab_size
        if vocab is not None:
            pos = torch.searchsorted(vocab.cpu(), flat)
            if bool((pos >= len(vocab)).any()) or not torch.equal(vocab.cpu()[pos.clamp(max=len(vocab) - 1)], flat):
                raise ModelError("a training transcript has a token outside the ctc vocabulary; build it from the same data")
            flat, blank = pos, len(vocab)
        tl = torch.tensor([len(t) for t in targets], dtype=torch.long)
        loss = F.ctc_loss(logp, flat, n.cpu(), tl, blank=blank, reduction="sum", zero_infinity=True)
        ntok = max(int(tl.sum()), 1)
        return loss / ntok, ntok

    # -- inference --
    @torch.no_grad()
    def generate(self, sample: Sample, audio_emb: Sequence[torch.Tensor], max_new_tokens: int = 64) -> str:
        emb, mask, _ = self.embed([sample], audio_emb)
        stop = [self.tokenizer.convert_tokens_to_ids(s) for s in self.template.stop]
        stop = [s for s in stop if isinstance(s, int) and s >= 0] or [self.tokenizer.eos_token_id]
        out = self.llm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=stop, pad_token_id=stop[0])
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

    # -- checkpoint pieces --
    def describe(self) -> dict[str, Any]:
        emb = self.base_llm().get_input_embeddings().weight
        return {"encoder": {"path": str(Path(self.spec.encoder).resolve()), **self.encoder_info},
                "llm": {"path": str(Path(self.spec.llm).resolve()),
                        "gguf": (str((Path(self.spec.llm) / self.spec.llm_gguf).resolve()) if self.spec.llm_gguf else None),
                        "n_embd": int(emb.shape[1]), "vocab_size": int(emb.shape[0])},
                "adaptor": self.adaptor.config.to_dict(), "llm_weights": self.spec.llm_weights,
                "prompt": self.template.to_dict()}


def _trained_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions whose next token carries loss."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


def read_checkpoint_config(ckpt: str | Path) -> dict[str, Any]:
    p = Path(ckpt) / "llasm.json"
    try:
        cfg = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{p} is missing or unreadable ({e}); give a checkpoint directory") from None
    if cfg.get("format") != "llasm-checkpoint":
        raise ModelError(f"{p} is not an llasm checkpoint (format {cfg.get('format')!r})")
    return cfg


def load_checkpoint(ckpt: str | Path, *, llm_weights: str | None = None,
                    adaptor_overrides: dict[str, Any] | None = None, with_encoder: bool = True,
                    **spec_overrides: Any) -> LLaSM:
    """Rebuild a model from a checkpoint dir; `llm_weights` may switch what trains next (e.g. stage 2), and
    `adaptor_overrides` change run-time adaptor settings that hold no weights (the ctc `topk`).
    `with_encoder=False` leaves the frozen encoder out (its audio then comes as heard token ids)."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    cfg = read_checkpoint_config(ckpt)
    if adaptor_overrides:
        bad = set(adaptor_overrides) - {"topk"}
        if bad:
            raise ModelError(f"adaptor settings {sorted(bad)} hold weights; they cannot change after training")
        cfg["adaptor"] = {**cfg["adaptor"], **adaptor_overrides}
    gguf = cfg["llm"].get("gguf")
    spec = ModelSpec(encoder=cfg["encoder"]["path"], llm=cfg["llm"]["path"], adaptor=dict(cfg["adaptor"]),
                     llm_gguf=Path(gguf).name if gguf else None,
                     llm_weights=llm_weights or cfg.get("llm_weights", "base"), **spec_overrides)
    saved = cfg.get("llm_weights", "base")
    lora_dir = str(ckpt / "lora") if saved == "lora" else None
    full_dir = str(ckpt / "llm") if saved == "full" else None
    if saved == "lora" and spec.llm_weights != "lora":
        spec.llm_weights = "lora"  # keep the adapter: training on top of it
    model = LLaSM.build(spec, adaptor_tensors=load_file(str(ckpt / "adaptor.safetensors")),
                        adaptor_config=cfg["adaptor"], lora_dir=lora_dir, full_llm_dir=full_dir,
                        encoder_info=None if with_encoder else cfg["encoder"])
    vocab = ckpt / CTC_VOCAB
    if vocab.exists():  # a --ctc-shortlist head hears through the tokens it was trained on
        try:
            ids = json.loads(vocab.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ModelError(f"{vocab} is unreadable ({e})") from None
        model.adaptor.vocab_ids = torch.tensor(ids, dtype=torch.long)
    return model
