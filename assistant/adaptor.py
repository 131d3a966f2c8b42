"""Numpy forward of every modal adaptor: Whisper encoder states -> LLM input embeddings.

This is the reference: the torch modules in `training/model.py` are tested equal to it, and the runtime
uses it as is. The exact maths and tensor layout are specified in `docs/adaptors.md`.

    adaptor = load_adaptor("bundle/adaptor.safetensors", config, token_embeddings=E)  # E only for ctc
    out = adaptor.run(states)        # states: [T, d_model] float32
    out.embeddings                   # [N, n_embd]
    out.heard                        # ctc: greedy transcript as LLM token ids; None otherwise
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ADAPTOR_TYPES = ("linear", "ultravox", "ctc")
DEFAULT_STACK = {"linear": 1, "ultravox": 8, "ctc": 2}
NORM_EPS = 1e-6  # RMSNorm epsilon; llama.cpp's ultravox graph hard-codes 1e-6
DEFAULT_CTC_TOPK = 8


class AdaptorError(ValueError):
    """A bad adaptor config or tensor file; the message names the problem and the fix."""


# ---- config --------------------------------------------------------------------------------------
def _whole(value: Any, key: str) -> int:
    """A whole-number field of the adaptor config: an int, or a float or string that holds one (configs
    written by hand); a list, object, bool or fraction is an AdaptorError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise AdaptorError(f"adaptor {key!r} must be a whole number, not {json.dumps(value, default=str)[:40]}")
    try:
        number = float(value)
    except ValueError:
        raise AdaptorError(f"adaptor {key!r} must be a whole number, not {value!r}") from None
    if not number.is_integer():
        raise AdaptorError(f"adaptor {key!r} must be a whole number, not {value!r}")
    return int(number)


@dataclass(frozen=True)
class AdaptorConfig:
    """What `llasm.json` / `bundle.json` store under "adaptor" (plus "path" in a bundle)."""

    type: str
    d_model: int  # encoder width
    n_embd: int  # LLM input width
    stack: int = 1  # k consecutive encoder frames concatenated
    hidden: int = 0  # ultravox: width of linear_1's output (2 x SwiGLU width); ctc: head width
    vocab_size: int = 0  # ctc: LLM vocabulary size (the blank is index vocab_size)
    topk: int = DEFAULT_CTC_TOPK  # ctc: tokens mixed per segment
    shortlist: int = 0  # ctc: how many token ids `vocab.ids` lists (the only ones scored); 0 = all
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdaptorConfig:
        if not isinstance(d, Mapping):
            raise AdaptorError(f"the adaptor config must be a JSON object, not {type(d).__name__}")
        d = dict(d)
        kind = d.pop("type", None)
        if not isinstance(kind, str) or kind not in ADAPTOR_TYPES:
            raise AdaptorError(f"unknown adaptor type {kind!r}; use one of {', '.join(ADAPTOR_TYPES)}")
        try:
            d_model, n_embd = _whole(d.pop("d_model"), "d_model"), _whole(d.pop("n_embd"), "n_embd")
        except KeyError as e:
            raise AdaptorError(f"adaptor config lacks {e.args[0]!r}; it needs d_model and n_embd") from None
        known = {}
        for key in ("stack", "hidden", "vocab_size", "topk", "shortlist"):
            if key in d:
                known[key] = _whole(d.pop(key), key)
        known.setdefault("stack", DEFAULT_STACK[kind])
        cfg = cls(type=kind, d_model=d_model, n_embd=n_embd, extra=d, **known)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "stack": self.stack, "d_model": self.d_model,
                             "n_embd": self.n_embd}
        if self.type in ("ultravox", "ctc"):
            d["hidden"] = self.hidden
        if self.type == "ctc":
            d["vocab_size"] = self.vocab_size
            d["topk"] = self.topk
            if self.shortlist:
                d["shortlist"] = self.shortlist
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return d

    def validate(self) -> None:
        if self.stack < 1:
            raise AdaptorError(f"adaptor stack must be >= 1, got {self.stack}")
        if self.d_model < 1 or self.n_embd < 1:
            raise AdaptorError("adaptor d_model and n_embd must be positive")
        if self.type == "ultravox" and (self.hidden < 2 or self.hidden % 2):
            raise AdaptorError(f"ultravox adaptor needs an even 'hidden' >= 2, got {self.hidden}")
        if self.type == "ctc":
            if self.hidden < 1:
                raise AdaptorError(f"ctc adaptor needs 'hidden' >= 1, got {self.hidden}")
            if self.vocab_size < 1:
                raise AdaptorError("ctc adaptor needs 'vocab_size' (the LLM's vocabulary size)")
            if self.topk < 1:
                raise AdaptorError(f"ctc adaptor needs 'topk' >= 1, got {self.topk}")
            if not 0 <= self.shortlist <= self.vocab_size:
                raise AdaptorError(f"ctc 'shortlist' must be in [0, vocab_size], got {self.shortlist}")

    @property
    def stacked_dim(self) -> int:
        return self.d_model * self.stack

    def n_positions(self, n_frames: int) -> int:
        """LLM positions produced for `n_frames` encoder states (ctc: an upper bound)."""
        return -(-n_frames // self.stack)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor `adaptor.safetensors` must hold, with its shape."""
        s, e = self.stacked_dim, self.n_embd
        if self.type == "linear":
            return {"proj.weight": (e, s), "proj.bias": (e,)}
        if self.type == "ultravox":
            h = self.hidden
            return {"ln_pre.weight": (s,), "linear_1.weight": (h, s), "ln_mid.weight": (h // 2,),
                    "linear_2.weight": (e, h // 2)}
        h = self.hidden
        shapes = {"ln_pre.weight": (s,), "linear_1.weight": (h, s), "linear_1.bias": (h,),
                  "linear_2.weight": (e, h), "linear_2.bias": (e,), "blank.weight": (e,),
                  "blank.bias": (1,)}
        if self.shortlist:
            shapes["vocab.ids"] = (self.shortlist,)
        return shapes


# ---- shared maths --------------------------------------------------------------------------------
def stack_frames(states: np.ndarray, k: int) -> np.ndarray:
    """[T, d] -> [ceil(T/k), k*d]: zero-pad T to a multiple of k, concatenate k consecutive frames."""
    t, d = states.shape
    n = -(-t // k)
    if n * k != t:
        states = np.concatenate([states, np.zeros((n * k - t, d), states.dtype)], axis=0)
    return states.reshape(n, k * d)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def swiglu(x: np.ndarray) -> np.ndarray:
    """Ultravox / llama.cpp `ggml_swiglu_swapped`: silu(second half) * first half."""
    a, gate = np.split(x, 2, axis=-1)
    return silu(gate) * a


def ctc_segments(best: np.ndarray, blank: int) -> list[tuple[int, int, int]]:
    """Greedy CTC path -> [(token, start, end)]: runs of one non-blank label; blanks dropped.

    Equal labels separated by a blank are two segments (standard CTC collapse)."""
    segs: list[tuple[int, int, int]] = []
    prev = -1
    for i, lab in enumerate(best.tolist()):
        if lab != blank:
            if lab == prev:
                tok, start, _ = segs[-1]
                segs[-1] = (tok, start, i + 1)
            else:
                segs.append((lab, i, i + 1))
        prev = lab
    return segs


def ctc_mix(logits: np.ndarray, segs: list[tuple[int, int, int]], table: np.ndarray,
            topk: int) -> np.ndarray:
    """Each segment -> sum_i w_i E[i] over the top-k tokens of its mean posterior (blank excluded),
    weights renormalised to sum 1; ties broken by the lower token id.

    Posteriors are computed only for the frames inside segments (blank frames need none), and the top-k
    by partial selection: on a 49k vocabulary this is what keeps the adaptor at a few milliseconds."""
    vocab = table.shape[0]
    if topk == 1:
        # Each frame of a segment has the segment's token as its most likely label, so that token also has
        # the largest mean posterior (ties: the lower id, as argmax picks): no softmax needed.
        return table[[tok for tok, _, _ in segs]]
    out = np.zeros((len(segs), table.shape[1]), np.float32)
    for j, (_, start, end) in enumerate(segs):
        z = logits[start:end]
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        p = (e[:, :vocab] / e.sum(axis=-1, keepdims=True)).mean(axis=0)
        k = min(topk, vocab)
        cand = np.argpartition(-p, k - 1)[:k] if k < vocab else np.arange(vocab)
        idx = cand[np.lexsort((cand, -p[cand]))]  # by posterior, then lower token id
        w = p[idx] / p[idx].sum()
        out[j] = w.astype(np.float32) @ table[idx]
    return out


# ---- the adaptor ---------------------------------------------------------------------------------
@dataclass
class AdaptorOutput:
    embeddings: np.ndarray  # [N, n_embd] float32
    heard: list[int] | None = None  # ctc only: greedy transcript as LLM token ids
    logits: np.ndarray | None = None  # ctc only: [N, scored tokens + 1] logits (shortlist order, blank last)


class Adaptor:
    """Encoder states [T, d_model] -> LLM input embeddings [N, n_embd]."""

    def __init__(self, config: AdaptorConfig, tensors: Mapping[str, np.ndarray],
                 token_embeddings: np.ndarray | None = None) -> None:
        self.config = config
        expected = config.tensor_shapes()
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise AdaptorError(f"{config.type} adaptor tensors lack {', '.join(missing)}; "
                               "the file does not match its config (see docs/adaptors.md)")
        self.w: dict[str, np.ndarray] = {}
        for name, shape in expected.items():
            arr = np.asarray(tensors[name], dtype=np.float32)
            if tuple(arr.shape) != shape:
                raise AdaptorError(f"adaptor tensor {name} has shape {tuple(arr.shape)}, config implies "
                                   f"{shape}; fix the config (stack, d_model, n_embd, hidden)")
            self.w[name] = arr
        self.ids: np.ndarray | None = None  # ctc shortlist: sorted token ids the head scores
        if config.shortlist:
            raw = self.w.pop("vocab.ids")
            ids = raw.astype(np.int64)
            if (not np.array_equal(ids, raw) or ids.min() < 0 or ids.max() >= config.vocab_size
                    or np.any(np.diff(ids) <= 0)):
                raise AdaptorError("adaptor tensor vocab.ids must hold sorted, distinct token ids below "
                                   "vocab_size; re-export the bundle")
            self.ids = ids
        self.token_embeddings: np.ndarray | None = None
        self._scored: np.ndarray | None = None  # the rows of the table the head scores
        if token_embeddings is not None:
            self.set_token_embeddings(token_embeddings)

    def set_token_embeddings(self, table: np.ndarray) -> None:
        """ctc: the LLM's token-embedding table [vocab_size, n_embd] (taken from the GGUF at run time)."""
        table = np.asarray(table, dtype=np.float32)
        v, e = self.config.vocab_size, self.config.n_embd
        if table.ndim != 2 or table.shape[1] != e or table.shape[0] < v:
            raise AdaptorError(f"token-embedding table has shape {table.shape}; the ctc adaptor needs "
                               f"[{v}, {e}] (the LLM it was trained with)")
        self.token_embeddings = np.ascontiguousarray(table[:v])
        self._scored = self.token_embeddings if self.ids is None else np.ascontiguousarray(table[self.ids])

    def __call__(self, states: np.ndarray) -> np.ndarray:
        return self.run(states).embeddings

    def ctc_logits(self, states: np.ndarray) -> np.ndarray:
        """ctc: [N, vocab_size + 1] logits (blank last). With a shortlist, unlisted tokens get -inf."""
        scored = self._scored_logits(states)
        if self.ids is None:
            return scored
        full = np.full((scored.shape[0], self.config.vocab_size + 1), -np.inf, np.float32)
        full[:, self.ids] = scored[:, :-1]
        full[:, -1] = scored[:, -1]
        return full

    def _scored_logits(self, states: np.ndarray) -> np.ndarray:
        """Logits of the scored tokens (all, or the shortlist in `ids` order), blank last."""
        self._table()
        h = self._ctc_hidden(self._stack(states))
        tok = h @ self._scored.T  # type: ignore[union-attr]
        blank = h @ self.w["blank.weight"] + self.w["blank.bias"][0]
        return np.concatenate([tok, blank[:, None]], axis=1)

    def run(self, states: np.ndarray) -> AdaptorOutput:
        c, w = self.config, self.w
        x = self._stack(states)
        if c.type == "linear":
            return AdaptorOutput(x @ w["proj.weight"].T + w["proj.bias"])
        if c.type == "ultravox":
            h = rms_norm(x, w["ln_pre.weight"]) @ w["linear_1.weight"].T
            h = rms_norm(swiglu(h), w["ln_mid.weight"])
            return AdaptorOutput(h @ w["linear_2.weight"].T)
        self._table()
        logits = self._scored_logits(states)  # a shortlist is the vocabulary here, its index the token
        scored = self._scored
        segs = ctc_segments(logits.argmax(axis=-1), blank=scored.shape[0])  # type: ignore[union-attr]
        emb = ctc_mix(logits, segs, scored, c.topk)  # type: ignore[arg-type]
        heard = [s[0] for s in segs]
        return AdaptorOutput(emb, heard if self.ids is None else self.ids[heard].tolist(), logits)

    # ---- internals -----------------------------------------------------------------------------
    def _stack(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states, dtype=np.float32)
        if states.ndim != 2 or states.shape[1] != self.config.d_model:
            raise AdaptorError(f"encoder states have shape {states.shape}; the adaptor expects "
                               f"[T, {self.config.d_model}] (is this the encoder it was trained on?)")
        return stack_frames(states, self.config.stack)

    def _ctc_hidden(self, x: np.ndarray) -> np.ndarray:
        w = self.w
        h = silu(rms_norm(x, w["ln_pre.weight"]) @ w["linear_1.weight"].T + w["linear_1.bias"])
        return h @ w["linear_2.weight"].T + w["linear_2.bias"]

    def _table(self) -> np.ndarray:
        if self.token_embeddings is None:
            raise AdaptorError("the ctc adaptor needs the LLM's token-embedding table: pass "
                               "token_embeddings= (the GGUF's token_embd) to load_adaptor")
        return self.token_embeddings


def load_adaptor(path: str | Path, config: Mapping[str, Any] | AdaptorConfig,
                 token_embeddings: np.ndarray | None = None) -> Adaptor:
    """Load `adaptor.safetensors` with its config dict (from llasm.json or bundle.json)."""
    from safetensors.numpy import load_file

    cfg = config if isinstance(config, AdaptorConfig) else AdaptorConfig.from_dict(config)
    path = Path(path)
    if not path.is_file():
        raise AdaptorError(f"adaptor file {path} not found; point the config at adaptor.safetensors")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise AdaptorError(f"cannot read {path} as safetensors ({e}); re-export the checkpoint") from None
    return Adaptor(cfg, tensors, token_embeddings)


def save_adaptor(path: str | Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write adaptor tensors (float32) with safetensors."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path))
    # (ctc `vocab.ids` too: token ids below 2**24 are exact in float32)


def random_tensors(config: AdaptorConfig, seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    """Random tensors of the right shapes (norm weights near 1): tests and smoke checks."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in config.tensor_shapes().items():
        if name == "vocab.ids":
            out[name] = np.sort(rng.choice(config.vocab_size, size=shape, replace=False)).astype(np.float32)
        elif name.startswith(("ln_", "blank.bias")):
            out[name] = (1.0 + scale * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return out
