"""The LLM half of the runtime: a GGUF model in llama.cpp, fed token ids or input embeddings.

Thin, explicit wrapper over llama-cpp-python's low-level C API (no high-level `Llama` object): one model,
one context, one sequence. The caller (`assistant.engine`) owns the conversation and the KV bookkeeping;
this module only decodes batches at given positions, removes positions, reads logits and converts between
text and tokens.

    lm = LlamaLM("model.gguf", n_ctx=2048)
    logits = lm.decode_embeddings(emb, pos=0)          # emb: [n, n_embd] float32 -> logits of the last row
    logits = lm.decode_tokens(lm.tokenize("hi"), pos=n)
    lm.truncate(n)                                     # forget positions >= n
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ctcbeam import log_softmax
from .llamacpp import init_backend, last_error

DEFAULT_N_BATCH = 512
GPU_ALL_LAYERS = 999  # llama.cpp clamps the layers to offload to the model's (its tools' "-ngl 999")
BEAM_LM_CELLS = 1024  # KV cells a beam LM's sequences share past the prefix (about 23 MB for SmolLM2-135M)


class LLMError(RuntimeError):
    """The GGUF could not be loaded or llama.cpp refused a batch; the message names the fix."""


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads share a core's FPUs: llama.cpp is
    fastest with one thread per physical core)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = ""
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = val.strip()
                elif key == "core id":
                    core = val.strip()
                elif not key:
                    if core:
                        cores.add((phys, core))
                    phys = core = ""
            if core:
                cores.add((phys, core))
    except OSError:
        pass
    n = len(cores) if cores else allowed
    return max(1, min(n, allowed))


class LlamaLM:
    """One GGUF model + one llama.cpp context (sequence 0), optionally with a GGUF LoRA adapter."""

    def __init__(self, path: str | os.PathLike[str], *, n_ctx: int = 2048, n_threads: int | None = None,
                 n_batch: int = DEFAULT_N_BATCH, lora: str | os.PathLike[str] | None = None,
                 lora_scale: float = 1.0, device: str = "cpu") -> None:
        """`device` "cuda" offloads every layer to the GPU (a CUDA build of llama-cpp-python; assistant/devices.py
        checks that first), "cpu" none."""
        import llama_cpp

        init_backend()
        self._c = llama_cpp
        self.path = Path(path)
        self.n_threads = n_threads or physical_cores()
        self.device = device
        self._model = None
        self._ctx = None
        self._lora = None
        self._scorer: _Scorer | None = None  # the second context of `score`, made on first use
        self._beam: BeamLM | None = None  # the third, of `beam_lm`
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = GPU_ALL_LAYERS if device == "cuda" else 0
        model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            detail = last_error() or "not a valid GGUF model"
            raise LLMError(f"llama.cpp cannot load {self.path}: {detail}; re-export or re-download the GGUF")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd_inp(model))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))

        if lora is not None:
            adapter = llama_cpp.llama_adapter_lora_init(model, str(lora).encode())
            if not adapter:
                detail = last_error() or "not a LoRA GGUF for this model"
                self.close()
                raise LLMError(f"llama.cpp cannot load the LoRA {lora}: {detail}; re-export the bundle")
            self._lora = adapter

        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = int(n_ctx)
        cparams.n_batch = int(n_batch)
        cparams.n_ubatch = int(n_batch)
        cparams.n_seq_max = 1
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            detail = last_error() or "out of memory?"
            self.close()
            raise LLMError(f"llama.cpp cannot create a context of {n_ctx} tokens for {self.path}: {detail}")
        self._ctx = ctx
        self.n_ctx = int(llama_cpp.llama_n_ctx(ctx))
        self.n_batch = int(llama_cpp.llama_n_batch(ctx))
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._lora_scale = float(lora_scale)
        self.lora_on = False  # whether decodes run with the LoRA (set_lora)
        if self._lora is not None:
            try:
                self.set_lora(True)
            except LLMError:
                self.close()
                raise LLMError(f"llama.cpp refused the LoRA {lora} for {self.path}; re-export the bundle") from None
        self._piece_buf = ctypes.create_string_buffer(256)

    @property
    def has_lora(self) -> bool:
        return self._lora is not None

    def set_lora(self, on: bool) -> None:
        """Decode with the LoRA (`on`) or with the plain weights from now on. Positions already in the KV cache
        keep the keys and values they were computed with: a caller that wants one set of weights throughout
        prefills again. Without a LoRA only `on=False` is possible."""
        c = self._c
        if on == self.lora_on:
            return
        if on and self._lora is None:
            raise LLMError(f"{self.path} was loaded without a LoRA")
        if on:
            adapters = (c.llama_adapter_lora_p_ctypes * 1)(self._lora)
            rc = c.llama_set_adapters_lora(self._ctx, adapters, 1, (ctypes.c_float * 1)(self._lora_scale))
        else:
            rc = c.llama_set_adapters_lora(self._ctx, None, 0, None)
        if rc != 0:
            raise LLMError(f"llama.cpp could not switch the LoRA {'on' if on else 'off'} for {self.path}")
        self.lora_on = on

    # ---- what model this is ------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text (None when the file has no such key)."""
        buf = ctypes.create_string_buffer(4096)
        n = self._c.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    @property
    def name(self) -> str:
        """The model's name: GGUF `general.name`, else the file name."""
        return (self.meta("general.name") or "").strip() or self.path.name

    def token_text(self, token: int) -> str:
        """A token's text as the vocabulary writes it ("" for an id outside it)."""
        if not 0 <= int(token) < self.n_vocab:
            return ""
        raw = self._c.llama_vocab_get_text(self._vocab, int(token))
        return raw.decode("utf-8", "replace") if raw else ""

    def vocab_sha256(self) -> str:
        """sha256 of the vocabulary (each token's text then a NUL byte, in id order): equal for two GGUFs whose
        token ids mean the same text, whatever their weights or quantization."""
        h = hashlib.sha256()
        get = self._c.llama_vocab_get_text
        for i in range(self.n_vocab):
            h.update((get(self._vocab, i) or b"") + b"\0")
        return h.hexdigest()

    def identity(self) -> dict[str, Any]:
        """What a bundle states about the LLM its adaptor was trained for (bundle.json's llm section)."""
        return {"name": self.name, "n_embd": self.n_embd, "n_vocab": self.n_vocab, "vocab_sha256": self.vocab_sha256()}

    # ---- text <-> tokens --------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written as text (`<|im_start|>`) become their ids. No BOS is
        added: the prompt template carries it as text when the model wants one."""
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (self._c.llama_token * n_max)()
        n = self._c.llama_tokenize(self._vocab, data, len(data), buf, n_max, False, special)
        if n < 0:
            n_max = -n
            buf = (self._c.llama_token * n_max)()
            n = self._c.llama_tokenize(self._vocab, data, len(data), buf, n_max, False, special)
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = True) -> bytes:
        """The bytes of one token (a piece may be part of a UTF-8 character)."""
        n = self._c.llama_token_to_piece(self._vocab, int(token), self._piece_buf, len(self._piece_buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._c.llama_token_to_piece(self._vocab, int(token), buf, len(buf), 0, special)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return b"".join(self.piece(t, special=special) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        """End-of-generation token (EOS, EOT, `<|im_end|>` ...)."""
        return bool(self._c.llama_vocab_is_eog(self._vocab, int(token)))

    # ---- decoding ---------------------------------------------------------------------------------
    def decode_tokens(self, tokens: Sequence[int], pos: int, *, logits: bool = True) -> np.ndarray | None:
        """Decode token ids at positions pos, pos+1, ...; returns the last position's logits if asked."""
        if len(tokens) == 0:
            return None
        arr = np.asarray(tokens, dtype=np.int32)
        if arr.min() < 0 or arr.max() >= self.n_vocab:
            raise LLMError(f"token id out of range [0, {self.n_vocab})")
        return self._decode(arr, None, pos, logits)

    def decode_embeddings(self, embeddings: np.ndarray, pos: int, *, logits: bool = True) -> np.ndarray | None:
        """Decode input embeddings [n, n_embd] at positions pos, pos+1, ... (llama.cpp's batch-embedding
        path: the rows go straight into the first layer, skipping the token-embedding lookup)."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.n_embd:
            raise LLMError(f"embeddings have shape {emb.shape}; this LLM needs [n, {self.n_embd}] "
                           f"(does the adaptor match the GGUF?)")
        if emb.shape[0] == 0:
            return None
        if not np.isfinite(emb).all():
            raise LLMError("the adaptor produced NaN/Inf embeddings; the adaptor file is broken: re-export it")
        return self._decode(None, emb, pos, logits)

    def _decode(self, tokens: np.ndarray | None, emb: np.ndarray | None, pos: int,
                want_logits: bool) -> np.ndarray | None:
        c = self._c
        n_total = len(tokens) if tokens is not None else emb.shape[0]  # type: ignore[union-attr]
        if pos + n_total > self.n_ctx:
            raise LLMError(f"{pos + n_total} positions exceed the context of {self.n_ctx}; "
                           f"start a new chat or raise llm.n_ctx in bundle.json")
        out = None
        for start in range(0, n_total, self.n_batch):
            n = min(self.n_batch, n_total - start)
            last_chunk = start + n == n_total
            batch = c.llama_batch_init(n, self.n_embd if emb is not None else 0, 1)
            try:
                if emb is not None:
                    ctypes.memmove(batch.embd, emb[start:start + n].ctypes.data, n * self.n_embd * 4)
                else:
                    chunk = np.ascontiguousarray(tokens[start:start + n])  # type: ignore[index]
                    ctypes.memmove(batch.token, chunk.ctypes.data, n * 4)
                for i in range(n):
                    batch.pos[i] = pos + start + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = 1 if (want_logits and last_chunk and i == n - 1) else 0
                batch.n_tokens = n
                rc = c.llama_decode(self._ctx, batch)
            finally:
                c.llama_batch_free(batch)
            if rc != 0:
                self.truncate(pos)
                detail = last_error()
                raise LLMError(f"llama_decode failed (code {rc}) at position {pos + start}"
                               + (f": {detail}" if detail else ""))
        if want_logits:
            ptr = c.llama_get_logits_ith(self._ctx, -1)
            out = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        return out

    def truncate(self, n_keep: int) -> None:
        """Forget every position >= n_keep (the KV cache keeps [0, n_keep))."""
        if not self._c.llama_memory_seq_rm(self._mem, 0, int(n_keep), -1):
            self._c.llama_memory_clear(self._mem, True)
            if n_keep > 0:
                raise LLMError("llama.cpp could not remove part of the KV cache; start a new chat")

    def clear(self) -> None:
        self._c.llama_memory_clear(self._mem, True)

    # ---- weights ----------------------------------------------------------------------------------
    def token_embeddings(self) -> np.ndarray:
        """The token-embedding table [n_vocab, n_embd] float32, dequantized from the GGUF."""
        return read_token_embeddings(self.path)

    # ---- scoring text (hearing with the LLM's help) ------------------------------------------------
    def score(self, prefix: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[float]:
        """log P(candidate | prefix) for each candidate, under the plain model (no LoRA), all candidates in one
        batch. Uses a second llama.cpp context (made on first use) that keeps `prefix` in its KV cache between
        calls; the conversation's context is not touched.

        The candidates are decoded as a prefix tree: a token that several candidates reach by the same earlier
        tokens is one batch row (and one KV cell) shared by their sequences, and a candidate's last token is not
        decoded at all (its log P comes from the row before it). A beam's transcripts mostly differ in a word or
        two, so the batch holds far fewer rows than the candidates have tokens."""
        c = self._c
        prefix = [int(t) for t in prefix]
        cands = [[int(t) for t in cand] for cand in candidates]
        if not prefix or not cands or any(not cand for cand in cands):
            raise LLMError("scoring needs a non-empty prefix and non-empty candidates")
        tree = _PrefixTree(cands)
        cells = len(prefix) + len(tree.nodes)  # the sequences share the prefix's cells and their common starts
        sc = self._scorer
        if (sc is None or sc.prefix != prefix or len(cands) > sc.n_seq or cells > sc.n_cells
                or len(tree.nodes) > sc.n_batch):
            self._free_scorer()
            sc = self._scorer = self._new_scorer(prefix, max(8, len(cands)) + 1, max(512, 2 * cells),
                                                 max(512, len(tree.nodes), len(prefix)))
        ctx = sc.ctx
        mem = c.llama_get_memory(ctx)
        try:
            for s in range(1, len(cands) + 1):
                c.llama_memory_seq_cp(mem, 0, s, -1, -1)
            # a node no candidate goes on past (each candidate's last token) needs neither logits nor a KV cell
            rows = [(tok, len(prefix) + depth, seqs, True) for tok, depth, seqs, want in tree.nodes if want]
            logits = self._batch_decode(ctx, rows) if rows else []
        finally:
            for s in range(1, len(cands) + 1):
                c.llama_memory_seq_rm(mem, s, -1, -1)
        row_of = {node: k for k, node in enumerate(i for i, n in enumerate(tree.nodes) if n[3])}
        # each node's log P given its parent, once however many candidates pass through it
        node_lp = [_logprob(sc.first_logits if parent < 0 else logits[row_of[parent]], tok)
                   for (tok, *_), parent in zip(tree.nodes, tree.parents, strict=True)]
        return [sum(node_lp[node] for node in path) for path in tree.paths]

    def beam_lm(self, prefix: Sequence[int], labels: np.ndarray | None, n_seq: int) -> BeamLM:
        """The plain model's next-token log-probs in a beam search (`BeamLM`): `prefix` decoded once, `labels`
        the token ids the search's labels stand for (None: labels are token ids), at most `n_seq` sequences held
        at once. The context is kept for the next search with the same prefix."""
        prefix = [int(t) for t in prefix]
        if not prefix or n_seq < 1:
            raise LLMError("a beam LM needs a non-empty prefix and at least one sequence")
        b = self._beam
        if b is None or b.sc.prefix != prefix or b.sc.n_seq < n_seq:
            if b is not None:
                self._c.llama_free(b.sc.ctx)
                self._beam = None
            n_seq = max(n_seq, 16)
            sc = self._new_scorer(prefix, n_seq + 1, len(prefix) + BEAM_LM_CELLS, max(n_seq + 1, len(prefix), 64))
            b = self._beam = BeamLM(self, sc)
        b.reset(labels)
        return b

    def _new_scorer(self, prefix: list[int], n_seq: int, n_cells: int, n_batch: int) -> _Scorer:
        """A context without the LoRA, `prefix` decoded into sequence 0 (each candidate copies it). Its KV cache
        is one store of `n_cells` cells that all sequences share (`kv_unified`)."""
        c = self._c
        cparams = c.llama_context_default_params()
        cparams.n_ctx = n_cells
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq
        cparams.kv_unified = True
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        ctx = c.llama_init_from_model(self._model, cparams)
        if not ctx:
            raise LLMError(f"llama.cpp cannot create a scoring context: {last_error() or 'out of memory?'}")
        try:
            first = self._batch_decode(ctx, [(t, i, 0, i == len(prefix) - 1) for i, t in enumerate(prefix)])[0]
        except LLMError:
            c.llama_free(ctx)
            raise
        return _Scorer(ctx, prefix, first, n_seq - 1, n_cells, n_batch)

    def _batch_decode(self, ctx: Any, rows: Sequence[tuple[int, int, int | Sequence[int], bool]]) -> list[np.ndarray]:
        """Decode (token, pos, sequence or sequences, wants logits) rows in one batch; the logits of the rows
        that want them. A row in several sequences is one KV cell they share."""
        c = self._c
        seq_lists = [[seq] if isinstance(seq, int) else list(seq) for _, _, seq, _ in rows]
        batch = c.llama_batch_init(len(rows), 0, max(len(s) for s in seq_lists))
        try:
            for i, ((t, pos, _, want), seqs) in enumerate(zip(rows, seq_lists, strict=True)):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, pos, len(seqs), int(want)
                for j, seq in enumerate(seqs):
                    batch.seq_id[i][j] = seq
            batch.n_tokens = len(rows)
            rc = c.llama_decode(ctx, batch)
        finally:
            c.llama_batch_free(batch)
        if rc != 0:
            raise LLMError(f"llama_decode failed (code {rc}) while scoring: {last_error()}")
        return [np.ctypeslib.as_array(c.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,)).copy()
                for i, row in enumerate(rows) if row[3]]

    def _free_scorer(self) -> None:
        if self._scorer is not None:
            self._c.llama_free(self._scorer.ctx)
            self._scorer = None

    def close(self) -> None:
        c = self._c
        self._free_scorer()
        if self._beam is not None:
            c.llama_free(self._beam.sc.ctx)
            self._beam = None
        if self._ctx is not None:
            c.llama_free(self._ctx)
            self._ctx = None
        if self._lora is not None:
            c.llama_adapter_lora_free(self._lora)
            self._lora = None
        if self._model is not None:
            c.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


@dataclass
class _Scorer:
    """`LlamaLM.score`'s context and what it was made for."""

    ctx: Any
    prefix: list[int]  # decoded into sequence 0
    first_logits: np.ndarray  # the prefix's last logits: they score each candidate's first token
    n_seq: int  # candidates it holds at once (sequences 1..n_seq)
    n_cells: int  # KV cells, shared by all sequences
    n_batch: int


class BeamLM:
    """The plain LLM's next-token log-probs for sequences that grow one token at a time, as a beam search asks
    (shallow fusion: assistant/ctcbeam.py). Each sequence is decoded once, as one batch row whose KV cell joins
    its parent's cells (`kv_unified`: a cell lists every sequence through it), so a step of the beam decodes one
    row per sequence new to it. `keep` drops the sequences the beam has let go; their cells are freed once no
    kept sequence passes through them."""

    def __init__(self, lm: LlamaLM, sc: _Scorer) -> None:
        self.lm, self.sc = lm, sc
        self._mem = lm._c.llama_get_memory(sc.ctx)
        self.labels: np.ndarray | None = None
        self._root = log_softmax(sc.first_logits)
        self._seq: dict[tuple[int, ...], int] = {}  # decoded sequence -> llama.cpp sequence id
        self._lp: dict[tuple[int, ...], np.ndarray] = {}  # its next-label log-probs
        self._free: list[int] = []
        self.rows = 0  # batch rows decoded since reset (what the search cost)

    def reset(self, labels: np.ndarray | None) -> None:
        """Forget every sequence (the prefix stays decoded)."""
        for sid in self._seq.values():
            if sid:  # sequence 0 holds the prefix
                self.lm._c.llama_memory_seq_rm(self._mem, sid, -1, -1)
        self._seq, self._lp, self.rows = {(): 0}, {}, 0
        self._free = list(range(self.sc.n_seq, 0, -1))
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self._lp[()] = self._gather(self._root)

    def _gather(self, lp: np.ndarray) -> np.ndarray:
        """Log-probs over the vocabulary (last axis) -> over the labels."""
        return lp if self.labels is None else lp[..., self.labels]

    def logprobs(self, seqs: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """log P(next label | prefix + seq) over the labels, for each seq. A seq not asked about before must
        extend one that was (by its last label), or be empty."""
        new = [s for s in dict.fromkeys(seqs) if s not in self._lp]
        if new:
            c = self.lm._c
            if len(new) > len(self._free):
                raise LLMError(f"the beam LM holds {self.sc.n_seq} sequences; {len(new)} more asked with "
                               f"{len(self._free)} free")
            rows = []
            for s in new:
                parent = self._seq.get(s[:-1])
                if parent is None:
                    raise LLMError("a beam LM sequence must extend one it decoded (or the empty one)")
                sid = self._seq[s] = self._free.pop()
                c.llama_memory_seq_cp(self._mem, parent, sid, -1, -1)
                tok = int(s[-1] if self.labels is None else self.labels[s[-1]])
                rows.append((tok, len(self.sc.prefix) + len(s) - 1, sid, True))
            lps = self._gather(log_softmax(np.stack(self.lm._batch_decode(self.sc.ctx, rows))))
            self._lp.update(zip(new, lps, strict=True))
            self.rows += len(rows)
        return [self._lp[s] for s in seqs]

    def keep(self, seqs: Sequence[tuple[int, ...]]) -> None:
        """Drop every decoded sequence but `seqs` and their parents (which the next step may extend)."""
        want = {()} | set(seqs) | {s[:-1] for s in seqs if s}
        for s in [s for s in self._seq if s not in want]:
            sid = self._seq.pop(s)
            self.lm._c.llama_memory_seq_rm(self._mem, sid, -1, -1)
            self._free.append(sid)
            self._lp.pop(s, None)

    @property
    def n_held(self) -> int:
        return len(self._seq) - 1


class _PrefixTree:
    """Candidates as a prefix tree for `LlamaLM.score`. `nodes[k]` = (token, depth, the sequences through it,
    whether a candidate goes on past it, i.e. its logits are needed), parents before children and each
    candidate's nodes in order; `parents[k]` = node k's parent (-1: the prefix); `paths[i]` = candidate i's nodes
    (sequence i + 1)."""

    def __init__(self, cands: Sequence[Sequence[int]]) -> None:
        nodes: list[tuple[int, int, list[int]]] = []
        self.parents: list[int] = []
        self.paths: list[list[int]] = []
        child: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        for s, cand in enumerate(cands, start=1):
            path, parent = [], -1
            for depth, tok in enumerate(cand):
                node = child.get((parent, tok))
                if node is None:
                    node = child[(parent, tok)] = len(nodes)
                    nodes.append((tok, depth, []))
                    self.parents.append(parent)
                nodes[node][2].append(s)
                path.append(node)
                parent = node
            self.paths.append(path)
        has_child = set(self.parents)
        self.nodes = [(tok, depth, seqs, k in has_child) for k, (tok, depth, seqs) in enumerate(nodes)]


def _logprob(logits: np.ndarray, token: int) -> float:
    """log-softmax(logits)[token], without the whole row (49k entries: 2.5x cheaper)."""
    m = float(logits.max())
    return float(logits[token]) - m - math.log(float(np.exp(logits - m).sum(dtype=np.float64)))


def read_token_embeddings(path: str | os.PathLike[str]) -> np.ndarray:
    """`token_embd.weight` of a GGUF as float32 [n_vocab, n_embd] (any quantization gguf-py dequantizes).

    The dequantized table is cached as .npy in the user cache (keyed by file size and mtime), so only the
    first load pays for the dequantization."""
    from gguf.quants import dequantize

    from .basemodels import cache_dir
    from .bundle import BundleError, read_gguf_index

    path = Path(path)
    try:
        _, tensors = read_gguf_index(path)
    except BundleError as e:
        raise LLMError(str(e)) from None
    info = tensors.get("token_embd.weight")
    if info is None:
        raise LLMError(f"{path} has no token_embd.weight tensor; is it a LLaMA-family GGUF?")
    n_embd, n_vocab = info.shape[0], info.shape[1]
    st = path.stat()
    cached = cache_dir() / "token_embd" / f"{path.stem}-{st.st_size}-{st.st_mtime_ns}.npy"
    if cached.is_file():
        try:
            table = np.load(cached, mmap_mode="r")
            if table.shape == (n_vocab, n_embd) and table.dtype == np.float32:
                return np.asarray(table)
        except (OSError, ValueError):
            pass
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=info.offset, shape=(info.nbytes,))
    bytes_per_row = info.nbytes // n_vocab
    table = dequantize(np.asarray(raw).reshape(n_vocab, bytes_per_row), info.ggml_type)
    table = np.ascontiguousarray(table.reshape(n_vocab, n_embd), dtype=np.float32)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, table)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs start-up time
    return table


def gguf_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """`LlamaLM.identity` of a GGUF file (loaded with a small context, then closed): what `llasm-export bundle`
    writes into bundle.json's llm section."""
    lm = LlamaLM(path, n_ctx=64, n_batch=64, n_threads=1)
    try:
        return lm.identity()
    finally:
        lm.close()
