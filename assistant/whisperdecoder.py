"""Whisper's decoder in ONNX Runtime with int8 weights, built at load from a CTranslate2 model's ``model.bin``.

Why: CTranslate2 computes the cross-attention keys and values of every layer anew in each ``generate`` call, and
for a beam over copies of the encoder states, one per hypothesis. An utterance under 2 s is heard in a 20-s
window (1,000 encoder states, assistant/hearing.py), where that work is most of the hearing's decoder time: a
greedy pass and the beam that follows it where greedy looks unsure each pay it again. Here the keys and values are
computed once per utterance (`Utterance`) and serve the greedy pass, the beam (broadcast over its hypotheses)
and the prompt's no-speech probability.

The graphs are built with onnx.helper from the model's own arrays at load (about 3 s; no file is written,
nothing is downloaded), and the weights are handed to ONNX Runtime as arrays (it copies them once), never
serialized:

- ``cross``: the encoder states [1, S, d] -> each layer's cross-attention keys and values [1, H, S, dh];
- ``step``: tokens [B, T], each layer's self-attention cache [B, H, P, dh] and cross keys/values -> logits
  [B, T, V] and the grown cache.

Each layer's keys and values are inputs and outputs of their own: one tensor for all layers would be sliced per
layer inside the step, a copy of every layer's cross keys and values at each step (in the 20-s short window,
24 MB a step, about a quarter of the step's time).

Weights are int8: ``cross`` with ONNX Runtime's DynamicQuantizeMatMul (one scale per output column; it runs on
many rows at once), ``step`` with MatMulNBits (8 bits, one scale per 32 weights, activations quantized per block:
``accuracy_level`` 4), which on real speech decodes as CTranslate2's float32 decoder does about as often as
CTranslate2's own int8 does. The token embeddings are read from the logits' int8 copy of the vocabulary.

Decoding follows CTranslate2's ``Whisper.generate``: the model's suppress lists (config.json ``suppress_ids``;
``suppress_ids_begin`` on the first step), Whisper's timestamp rules (timestamps in pairs and never decreasing,
the first token a timestamp no later than ``MAX_INITIAL_TIMESTAMP_INDEX``, a timestamp whenever the timestamps'
summed probability beats every text token), the no-speech probability at the ``<|startoftranscript|>``
position, a hypothesis' score as its summed log-probability (the end token included) over its length without the
end token, and for the beam openai/whisper's search with patience 1: the best `beam_size` continuations of all
hypotheses go on, and it stops once `beam_size` hypotheses have ended.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ct2file import Ct2Model, ModelFileError, read_ct2_model

MAX_INITIAL_TIMESTAMP_INDEX = 50  # CTranslate2's and openai/whisper's default: the first timestamp at most 1 s
BLOCK = 32  # MatMulNBits: weights a scale
ROWS = 4096  # rows quantized at a time


TAIL_BLOCK = 100  # positions of the silent window whose cross-attention is computed in one call (`tail_attention`)


class UnsupportedDecoder(ModelFileError):
    """A Whisper whose decoder these graphs cannot hold (its width); CTranslate2's decoder hears instead."""


@dataclass
class Decoding:
    """One decoding: the generated ids (no end token), whether it ended with ``<|endoftext|>``, its score (the
    mean log-probability a token) and the decoder steps it took (summed over the beam's hypotheses)."""

    ids: list[int]
    ended: bool
    score: float
    steps: int


class _Graph:
    """onnx.helper, with named initializers, int8 linear layers and Whisper's attention blocks."""

    def __init__(self, blocks: bool) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.numpy_helper, self.TensorProto = helper, numpy_helper, TensorProto
        self.weights: dict[str, np.ndarray] = {}
        self.blocks = blocks  # MatMulNBits (True) or DynamicQuantizeMatMul
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer: small ones in the graph, weights handed to ONNX Runtime as they are (`weights`), so
        no serialized copy of them is ever made."""
        value = np.asarray(value)
        if value.nbytes < 4096:
            self.inits.append(self.numpy_helper.from_array(value, name))
            return name
        t = self.TensorProto(name=name, data_type=self.helper.np_dtype_to_tensor_dtype(value.dtype),
                             dims=value.shape, data_location=self.TensorProto.EXTERNAL)
        t.external_data.add(key="location", value="in-memory")
        self.inits.append(t)
        self.weights[name] = np.ascontiguousarray(value)
        return name

    def op(self, kind: str, *inputs: str, domain: str = "", n_out: int = 1, out: str | None = None,
           **attrs: Any) -> Any:
        self.n += 1
        outs = [out] if out else [f"{kind.lower()}_{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(self.helper.make_node(kind, list(inputs), outs, domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs

    def matmul(self, x: str, w: np.ndarray, name: str, bias: np.ndarray | None = None, out: str | None = None) -> str:
        """x @ w.T (+ bias), w [N, K] float stored as int8."""
        n, k = w.shape
        b = [self.const(name + "/bias", bias.astype(np.float32))] if bias is not None else []
        if self.blocks:
            q, scale = self.blockwise(w, name)
            return self.op("MatMulNBits", x, q, scale, "", "", *b, domain="com.microsoft", out=out, K=k, N=n, bits=8,
                           block_size=BLOCK, accuracy_level=4)
        wt = np.ascontiguousarray(w.T, np.float32)
        scale = np.maximum(np.abs(wt).max(axis=0), 1e-8) / 127.0
        q = np.clip(np.rint(wt / scale), -127, 127).astype(np.int8)
        return self.op("DynamicQuantizeMatMul", x, self.const(name + "/q", q),
                       self.const(name + "/s", scale.astype(np.float32)), self.const(name + "/zp", np.zeros(n, np.int8)),
                       *b, domain="com.microsoft", out=out)

    def blockwise(self, w: np.ndarray, name: str) -> tuple[str, str]:
        """w [N, K] as MatMulNBits' 8-bit blocks (uint8 [N, K/BLOCK, BLOCK], zero point 128) and their scales
        [N * K/BLOCK], once per name: the initializers' names."""
        if name + "/q" not in self.weights:
            n, k = w.shape
            q = np.empty((n, k // BLOCK, BLOCK), np.uint8)
            scale = np.empty((n, k // BLOCK), np.float32)
            for i in range(0, n, ROWS):  # a slice at a time: the vocabulary's float32 copy never exists whole
                blocks = w[i:i + ROWS].astype(np.float32).reshape(-1, k // BLOCK, BLOCK)
                scale[i:i + ROWS] = np.maximum(np.abs(blocks).max(axis=2), 1e-8) / 127.0
                q[i:i + ROWS] = np.clip(np.rint(blocks / scale[i:i + ROWS, :, None]), -127, 127) + 128
            self.const(name + "/q", q)
            self.const(name + "/s", scale.reshape(-1))
        return name + "/q", name + "/s"

    def rows(self, table: np.ndarray, name: str, ids: str) -> str:
        """Rows `ids` [B, T] of `table` [N, K] -> [B, T, K] float32, read from its 8-bit blocks (`blockwise`): the
        token embeddings and the logits share one int8 copy of the vocabulary."""
        n, k = table.shape
        q, s = self.blockwise(table, name)
        scales = self.const(name + "/s2", self.weights[s].reshape(n, k // BLOCK))  # [N, K/BLOCK]: a row per token
        x = self.op("Sub", self.op("Cast", self.op("Gather", q, ids), to=self.TensorProto.FLOAT),
                    self.const(name + "/zero", np.array(128.0, np.float32)))
        x = self.op("Mul", x, self.op("Unsqueeze", self.op("Gather", scales, ids),
                                      self.const(name + "/last", np.array([-1]))))
        return self.op("Reshape", x, self.const(name + "/bt_k", np.array([0, 0, k], np.int64)))

    def linear(self, x: str, ct2: Ct2Model, name: str) -> str:
        bias = name + "/bias"
        w = ct2.weight(name + "/weight")
        return self.matmul(x, w, name, ct2.weight(bias) if bias in ct2.variables else np.zeros(len(w), np.float32))

    def layer_norm(self, x: str, ct2: Ct2Model, name: str) -> str:
        return self.op("LayerNormalization", x, self.const(name + "/g", ct2.weight(name + "/gamma")),
                       self.const(name + "/b", ct2.weight(name + "/beta")), axis=-1, epsilon=1e-5)

    def add_norm(self, x: str, delta: str | None, ct2: Ct2Model, name: str) -> tuple[str, str]:
        """The residual x + delta and its layer norm, in one SkipLayerNormalization (delta None: x and its norm)."""
        if delta is None:
            return x, self.layer_norm(x, ct2, name)
        normed, _, _, total = self.op("SkipLayerNormalization", x, delta,
                                      self.const(name + "/g", ct2.weight(name + "/gamma")),
                                      self.const(name + "/b", ct2.weight(name + "/beta")), domain="com.microsoft",
                                      n_out=4, epsilon=1e-5)
        return total, normed

    def heads(self, x: str, n_heads: int, d_head: int, out: str | None = None) -> str:
        """[B, T, H*dh] -> [B, H, T, dh] (named `out` if given)"""
        r = self.op("Reshape", x, self.const(f"heads_{self.n}", np.array([0, -1, n_heads, d_head], np.int64)))
        return self.op("Transpose", r, perm=[0, 2, 1, 3], out=out)

    def attention(self, q: str, k: str, v: str, mask: str | None, d_model: int, d_head: int) -> str:
        """softmax(q k^T / sqrt(dh) + mask) v, heads merged: [B, H, T, dh] -> [B, T, d_model] (self-attention:
        each hypothesis its own keys and values)."""
        s = self.op("MatMul", q, self.op("Transpose", k, perm=[0, 1, 3, 2]))
        s = self.op("Mul", s, self.const(f"scale_{self.n}", np.array(d_head ** -0.5, np.float32)))
        if mask is not None:
            s = self.op("Add", s, mask)
        a = self.op("Transpose", self.op("MatMul", self.op("Softmax", s, axis=-1), v), perm=[0, 2, 1, 3])
        return self.op("Reshape", a, self.const(f"merge_{self.n}", np.array([0, -1, d_model], np.int64)))

    def cross_attention(self, q: str, k: str, v: str, d_model: int, d_head: int) -> str:
        """`attention` over keys and values with a batch of 1 that every hypothesis of q [B, H, T, dh] shares: the
        hypotheses' queries go in as rows of one product ([1, H, B*T, dh]) rather than broadcast."""
        shape = self.op("Shape", q)
        rows = self.op("Reshape", self.op("Transpose", q, perm=[1, 0, 2, 3]),
                       self.const(f"rows_{self.n}", np.array([1, d_model // d_head, -1, d_head], np.int64)))
        s = self.op("MatMul", rows, self.op("Transpose", k, perm=[0, 1, 3, 2]))
        s = self.op("Mul", s, self.const(f"scale_{self.n}", np.array(d_head ** -0.5, np.float32)))
        a = self.op("MatMul", self.op("Softmax", s, axis=-1), v)  # [1, H, B*T, dh]
        hbt = self.op("Gather", shape, self.const(f"hbt_{self.n}", np.array([1, 0, 2, 3], np.int64)))
        a = self.op("Transpose", self.op("Reshape", a, hbt), perm=[1, 2, 0, 3])  # [H, B, T, dh] -> [B, T, H, dh]
        return self.op("Reshape", a, self.const(f"merge_{self.n}", np.array([0, -1, d_model], np.int64)))

    def model(self, inputs: list[Any], outputs: list[Any]) -> tuple[bytes, dict[str, np.ndarray]]:
        """The serialized graph (without its weights) and its weights by name."""
        graph = self.helper.make_graph(self.nodes, "whisper_decoder", inputs, outputs, self.inits)
        opsets = [self.helper.make_opsetid("", 17), self.helper.make_opsetid("com.microsoft", 1)]
        return self.helper.make_model(graph, opset_imports=opsets).SerializeToString(), self.weights


Built = tuple[bytes, dict[str, np.ndarray]]


def build_graphs(ct2: Ct2Model) -> tuple[Built, Built, dict[str, int]]:
    """The ``cross`` and ``step`` graphs of a CTranslate2 Whisper's decoder, each serialized without its weights
    and with its weights by name, and the decoder's sizes."""
    n_layers = ct2.count_layers("decoder")
    if not n_layers or "decoder/embeddings/weight" not in ct2.variables:
        raise ModelFileError(f"{ct2.spec} model.bin has no Whisper decoder")
    emb = ct2.variables["decoder/embeddings/weight"]  # as stored (float16 in the packaged model): a view, no copy
    if emb.dtype not in (np.float16, np.float32) or "decoder/embeddings/weight_scale" in ct2.variables:
        emb = ct2.weight("decoder/embeddings/weight")
    vocab, d_model = emb.shape
    n_heads = ct2.scalar("decoder/num_heads", max(1, d_model // 64))
    d_head = d_model // n_heads
    if d_model % BLOCK or d_head * n_heads != d_model:
        raise UnsupportedDecoder(f"{ct2.spec} model.bin: a decoder of width {d_model} and {n_heads} heads is not "
                             "supported by the ONNX decoder; hear with CTranslate2's (hearing.whisper_decoder ct2)")
    sizes = {"n_layers": n_layers, "n_heads": n_heads, "d_head": d_head, "d_model": int(d_model), "vocab": int(vocab)}
    return _cross_graph(ct2, sizes), _step_graph(ct2, emb, sizes), sizes


def _shapes(sizes: dict[str, int]) -> tuple[list[Any], list[Any]]:
    """A layer's cross keys/values' shape and its self-attention cache's."""
    n_heads, d_head = sizes["n_heads"], sizes["d_head"]
    return [1, n_heads, "S", d_head], ["B", n_heads, "P", d_head]


def names(kind: str, n_layers: int) -> list[str]:
    """The per-layer input or output names of `kind` (past_k, past_v, new_k, new_v, cross_k, cross_v)."""
    return [f"{kind}_{i}" for i in range(n_layers)]


def _cross_graph(ct2: Ct2Model, sizes: dict[str, int]) -> Built:
    from onnx import TensorProto, helper

    d_model, n_heads, d_head = sizes["d_model"], sizes["n_heads"], sizes["d_head"]
    c = _Graph(blocks=False)
    for i in range(sizes["n_layers"]):
        kv = c.linear("states", ct2, f"decoder/layer_{i}/attention/linear_1")
        k, v = c.op("Split", kv, c.const(f"split_{i}", np.array([d_model, d_model], np.int64)), axis=-1, n_out=2)
        c.heads(k, n_heads, d_head, out=f"cross_k_{i}")
        c.heads(v, n_heads, d_head, out=f"cross_v_{i}")
    f32, (cross_shape, _) = TensorProto.FLOAT, _shapes(sizes)
    outs = names("cross_k", sizes["n_layers"]) + names("cross_v", sizes["n_layers"])
    return c.model([helper.make_tensor_value_info("states", f32, [1, "S", d_model])],
                   [helper.make_tensor_value_info(n, f32, cross_shape) for n in outs])


def _step_graph(ct2: Ct2Model, emb: np.ndarray, sizes: dict[str, int]) -> Built:
    from onnx import TensorProto, helper

    g = _Graph(blocks=True)
    x = g.rows(emb, "embeddings", "tokens")  # [B, T, d]
    past = g.op("Gather", g.op("Shape", "past_k_0"), g.const("i2", np.array(2, np.int64)))
    total = g.op("Add", past, g.op("Gather", g.op("Shape", "tokens"), g.const("i1", np.array(1, np.int64))))
    positions = g.op("Range", past, total, g.const("one", np.array(1, np.int64)))
    table = g.const("positions", ct2.weight("decoder/position_encodings/encodings"))
    x = g.op("Add", x, g.op("Gather", table, positions))
    # causal mask [T, P+T]: the query at position P+t sees keys 0..P+t
    cols = g.op("Range", g.const("zero", np.array(0, np.int64)), total, "one")
    mask = g.op("Where", g.op("Greater", cols, g.op("Unsqueeze", positions, g.const("ax1", np.array([1])))),
                g.const("neg", np.array(-1e9, np.float32)), g.const("fzero", np.array(0.0, np.float32)))
    n_layers = sizes["n_layers"]
    delta: str | None = None  # each layer's last residual is added by the next layer norm (SkipLayerNormalization)
    for i in range(n_layers):
        x, delta = _layer(g, ct2, i, x, delta, mask, sizes)
    _, h = g.add_norm(x, delta, ct2, "decoder/layer_norm")
    proj = ct2.variables.get("decoder/projection/weight")
    if proj is None or proj is ct2.variables["decoder/embeddings/weight"]:  # tied (Whisper's): one int8 copy
        g.matmul(h, emb, "embeddings", out="logits")
    else:
        g.matmul(h, ct2.weight("decoder/projection/weight"), "projection", out="logits")
    f32, (cross_shape, cache_shape) = TensorProto.FLOAT, _shapes(sizes)
    info = helper.make_tensor_value_info
    return g.model([info("tokens", TensorProto.INT64, ["B", "T"])]
                   + [info(n, f32, cache_shape) for n in names("past_k", n_layers) + names("past_v", n_layers)]
                   + [info(n, f32, cross_shape) for n in names("cross_k", n_layers) + names("cross_v", n_layers)],
                   [info("logits", f32, ["B", "T", sizes["vocab"]])]
                   + [info(n, f32, cache_shape) for n in names("new_k", n_layers) + names("new_v", n_layers)])


def _layer(g: _Graph, ct2: Ct2Model, i: int, x: str, delta: str | None, mask: str,
           sizes: dict[str, int]) -> tuple[str, str]:
    """Decoder layer `i` on x + delta [B, T, d] (delta: the last layer's feed-forward output, None for the first):
    the residual stream x and the feed-forward output to add to it; the layer's grown self-attention keys and values
    [B, H, P+T, dh] are the outputs new_k_i and new_v_i."""
    d_model, n_heads, d_head = sizes["d_model"], sizes["n_heads"], sizes["d_head"]
    p = f"decoder/layer_{i}"
    x, h = g.add_norm(x, delta, ct2, p + "/self_attention/layer_norm")
    qkv = g.linear(h, ct2, p + "/self_attention/linear_0")
    q, k, v = g.op("Split", qkv, g.const(f"split3_{i}", np.array([d_model] * 3, np.int64)), axis=-1, n_out=3)
    k = g.op("Concat", f"past_k_{i}", g.heads(k, n_heads, d_head), axis=2, out=f"new_k_{i}")
    v = g.op("Concat", f"past_v_{i}", g.heads(v, n_heads, d_head), axis=2, out=f"new_v_{i}")
    a = g.attention(g.heads(q, n_heads, d_head), k, v, mask, d_model, d_head)
    x, h = g.add_norm(x, g.linear(a, ct2, p + "/self_attention/linear_1"), ct2, p + "/attention/layer_norm")
    q = g.heads(g.linear(h, ct2, p + "/attention/linear_0"), n_heads, d_head)
    a = g.cross_attention(q, f"cross_k_{i}", f"cross_v_{i}", d_model, d_head)
    x, h = g.add_norm(x, g.linear(a, ct2, p + "/attention/linear_2"), ct2, p + "/ffn/layer_norm")
    gelu = g.op("Gelu", g.linear(h, ct2, p + "/ffn/linear_0"), domain="com.microsoft")  # erf's GELU, Whisper's
    return x, g.linear(gelu, ct2, p + "/ffn/linear_1")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = np.max(z, axis=-1, keepdims=True)
    return z - (m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True)))


class OnnxWhisperDecoder:
    """Whisper's decoder from a CTranslate2 model folder, run by ONNX Runtime (module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, eot: int, no_timestamps: int, no_speech: int | None,
                 n_threads: int = 1) -> None:
        """path: the CTranslate2 Whisper folder (model.bin, config.json); eot, no_timestamps, no_speech: the
        ids of ``<|endoftext|>``, ``<|notimestamps|>`` and ``<|nospeech|>`` (None: no such token)."""
        import onnxruntime as ort

        self.path = Path(path)
        cross, step, sizes = build_graphs(read_ct2_model(self.path / "model.bin"))
        self.n_layers, self.n_heads, self.d_head = sizes["n_layers"], sizes["n_heads"], sizes["d_head"]
        self.vocab = sizes["vocab"]
        try:
            self.cross, self.step = (self._session(ort, graph, weights, n_threads) for graph, weights in (cross, step))
        except Exception as e:  # an onnxruntime without the contrib ops this graph uses
            msg = " ".join(str(e).split())[:200]
            raise ModelFileError(f"ONNX Runtime cannot run Whisper's decoder ({msg}): upgrade onnxruntime, or hear "
                                 f"with CTranslate2's decoder (hearing.whisper_decoder ct2)") from None
        config_path = self.path / "config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        # an exported model may carry null lists: nothing suppressed, as CTranslate2 reads them
        self.suppress = np.array([i for i in config.get("suppress_ids") or [] if 0 <= i < self.vocab], np.int64)
        self.suppress_begin = np.array([i for i in config.get("suppress_ids_begin") or [] if 0 <= i < self.vocab],
                                       np.int64)
        self.eot, self.no_timestamps, self.no_speech = eot, no_timestamps, no_speech
        self.ts0 = no_timestamps + 1
        # the tail the buffers were made for (`utterance`), each layer's keys and values there, and how many
        # positions the last utterance wrote into them
        self._tail: np.ndarray | None = None
        self._tail_kv: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        self._written = 0

    def _session(self, ort: Any, graph: bytes, weights: dict[str, np.ndarray], n_threads: int) -> Any:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, n_threads)
        opts.inter_op_num_threads = 1
        # no arena kept at its high-water mark: 34 MB less after a beam in a 20-s window
        opts.enable_cpu_mem_arena = False
        # ONNX Runtime's threads spin between a step's ops, not after it: spinning on, they busy-wait past the
        # hearing, and the LLM's prefill that follows runs at half speed beside them on a 2-core CPU
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        # ONNX Runtime copies these arrays into the session as it loads (its API: the buffers may be freed once the
        # session exists), so the weights are held once, by the session
        values = [ort.OrtValue.ortvalue_from_numpy(w) for w in weights.values()]
        opts.add_external_initializers(list(weights), values)
        return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])

    def run_step(self, tokens: np.ndarray, past_k: list[np.ndarray], past_v: list[np.ndarray],
                 cross_k: list[np.ndarray], cross_v: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray],
                                                                                list[np.ndarray]]:
        """The step graph on `tokens` [B, T] after the layers' caches: logits [B, T, V] and the grown caches."""
        n = self.n_layers
        feeds = {"tokens": tokens}
        for kind, arrays in (("past_k", past_k), ("past_v", past_v), ("cross_k", cross_k), ("cross_v", cross_v)):
            feeds.update(zip(names(kind, n), arrays, strict=True))
        out = self.step.run(None, feeds)
        return out[0], out[1:1 + n], out[1 + n:]

    def cross_attention(self, states: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each layer's cross-attention keys and values [1, H, S, dh] of encoder `states` [1, S, d]."""
        cross = self.cross.run(None, {"states": np.ascontiguousarray(states, np.float32)})
        return cross[:self.n_layers], cross[self.n_layers:]

    def utterance(self, states: np.ndarray, prompt: list[int], tail: np.ndarray | None = None) -> Utterance:
        """The cross-attention keys and values of encoder `states` [1, S, d] and the pass over `prompt`, shared
        by every decoding of the utterance. `tail`: the encoder states of a longer window [1, T, d] whose keys and
        values follow the utterance's from position S on (the hearing's silent window). One utterance at a time:
        the next call with the same tail reuses the buffers that hold this one's keys and values."""
        ck, cv = self.cross_attention(states)
        if tail is not None and ck[0].shape[2] < tail.shape[1]:
            ck, cv = self._behind(ck, cv, tail)
        empty = [np.zeros((1, self.n_heads, 0, self.d_head), np.float32)] * self.n_layers
        logits, pk, pv = self.run_step(np.array([prompt], np.int64), empty, empty, ck, cv)
        no_speech_prob = 0.0
        if self.no_speech is not None:
            no_speech_prob = float(np.exp(_log_softmax(logits[0, :1])[0, self.no_speech]))
        return Utterance(self, ck, cv, logits[:, -1], pk, pv, timestamps=prompt[-1] != self.no_timestamps,
                         no_speech_prob=no_speech_prob)

    def tail_attention(self, tail: np.ndarray, start: int = 0, stop: int | None = None) -> tuple[list[np.ndarray],
                                                                                              list[np.ndarray]]:
        """Each layer's cross-attention keys and values of the `tail` states' positions `start`..`stop`, computed
        in fixed blocks of TAIL_BLOCK positions (the int8 cross graph scales its input per call, so a block gives
        the same values whichever utterance asks; `start` is a block's first position)."""
        stop = tail.shape[1] if stop is None else stop
        parts = [self.cross_attention(tail[:, i:i + TAIL_BLOCK]) for i in range(start, stop, TAIL_BLOCK)]
        return ([np.concatenate([p[0][i] for p in parts], axis=2) for i in range(self.n_layers)],
                [np.concatenate([p[1][i] for p in parts], axis=2) for i in range(self.n_layers)])

    def _behind(self, ck: list[np.ndarray], cv: list[np.ndarray],
                tail: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each layer's keys and values `ck`, `cv` [1, H, S, dh] followed by those of the `tail` states from
        position S on (`tail_attention`), in buffers kept from one utterance to the next: a new array of the
        tail's size each utterance (37 MB for whisper-base) cost 7-30 ms in page faults and copying. The
        positions the last utterance wrote past S get the tail's back, computed again from its states, so no
        second copy of the tail's keys and values is kept."""
        if self._tail is not tail:
            self._tail, self._tail_kv, self._written = tail, self.tail_attention(tail), 0
        n, written = ck[0].shape[2], self._written
        keys, values = self._tail_kv
        if written > n:
            start = n // TAIL_BLOCK * TAIL_BLOCK
            back = self.tail_attention(tail, start, written)
            for buf, part in zip([*keys, *values], [*back[0], *back[1]], strict=True):
                buf[:, :, n:written] = part[:, :, n - start:written - start]
        for buf, part in zip([*keys, *values], [*ck, *cv], strict=True):
            buf[:, :, :n] = part
        self._written = n
        return keys, values

    def rules(self, z: np.ndarray, ids: list[int], step: int, timestamps: bool) -> None:
        """The suppress lists and Whisper's timestamp rules on the logits `z` of the token after `ids`, in place."""
        z[self.suppress] = -np.inf
        if step == 0:
            z[self.suppress_begin] = -np.inf
        if not timestamps:
            return
        ts0, eot = self.ts0, self.eot
        z[self.no_timestamps] = -np.inf
        if step == 0:  # the first token is a timestamp, at most MAX_INITIAL_TIMESTAMP_INDEX steps in
            z[:ts0] = -np.inf
            z[ts0 + MAX_INITIAL_TIMESTAMP_INDEX + 1:] = -np.inf
            return
        last = ids[-1]
        if last >= ts0:
            if (ids[-2] if len(ids) > 1 else last) >= ts0:  # a segment's opening timestamp: its text comes next
                z[ts0:] = -np.inf
                return
            # a segment's closing timestamp: the next one's opening timestamp (not earlier) or the end
            z[:eot] = -np.inf
            z[ts0:last] = -np.inf
        else:
            opened = next((t for t in reversed(ids) if t >= ts0), None)
            if opened is not None:  # within a segment's text: its closing timestamp comes after its opening one
                z[ts0:opened + 1] = -np.inf
        # a timestamp when the timestamps' summed probability beats every text token (the normalizer cancels)
        stamps = z[ts0:]
        m = float(np.max(stamps))
        if np.isfinite(m) and m + float(np.log(np.sum(np.exp(stamps - m)))) > float(np.max(z[:ts0])):
            z[:ts0] = -np.inf


@dataclass
class Utterance:
    """One utterance's decoder state after its prompt (`OnnxWhisperDecoder.utterance`): decode it greedily or
    with a beam, as often as needed."""

    decoder: OnnxWhisperDecoder
    cross_k: list[np.ndarray]  # a layer each: [1, H, S, dh]
    cross_v: list[np.ndarray]
    logits: np.ndarray  # [1, V]: the next token's, after the prompt
    past_k: list[np.ndarray]  # a layer each: [B, H, P, dh]
    past_v: list[np.ndarray]
    timestamps: bool
    no_speech_prob: float

    def _step(self, tokens: list[int], pk: list[np.ndarray], pv: list[np.ndarray]) -> tuple[Any, ...]:
        logits, pk, pv = self.decoder.run_step(np.array(tokens, np.int64)[:, None], pk, pv, self.cross_k,
                                               self.cross_v)
        return logits[:, -1], pk, pv

    def _log_probs(self, rows: np.ndarray, seqs: list[list[int]], step: int) -> np.ndarray:
        """Log-probabilities [B, V] of the next token of each hypothesis in `seqs`, after the rules."""
        z = rows.astype(np.float32)  # a copy: the rules write into it
        for b, ids in enumerate(seqs):
            self.decoder.rules(z[b], ids, step, self.timestamps)
        return _log_softmax(z)

    def greedy(self, max_steps: int) -> Decoding:
        """The most likely token at each step, at most `max_steps` tokens."""
        ids: list[int] = []
        total = 0.0
        rows, pk, pv = self.logits, self.past_k, self.past_v
        for step in range(max_steps):
            logp = self._log_probs(rows, [ids], step)[0]
            tok = int(np.argmax(logp))
            total += float(logp[tok])
            if tok == self.decoder.eot:
                return Decoding(ids, True, total / max(1, len(ids)), len(ids) + 1)
            ids.append(tok)
            if step + 1 < max_steps:
                rows, pk, pv = self._step([tok], pk, pv)
        return Decoding(ids, False, total / max(1, len(ids)), len(ids))

    def beam(self, beam_size: int, max_steps: int) -> Decoding:
        """Beam search (module docstring), at most `max_steps` tokens; the best hypothesis by its score."""
        eot = self.decoder.eot
        alive: list[tuple[list[int], float]] = [([], 0.0)]
        finished: list[tuple[list[int], float, bool]] = []
        rows, pk, pv = self.logits, self.past_k, self.past_v
        steps = 0
        for step in range(max_steps):
            cands: list[tuple[float, int, int]] = []
            logps = self._log_probs(rows, [ids for ids, _ in alive], step)
            for b, (_ids, score) in enumerate(alive):
                logp = logps[b]
                top = np.argpartition(-logp, beam_size)[:beam_size + 1]
                cands.extend((score + float(logp[t]), b, int(t)) for t in top if np.isfinite(logp[t]))
            steps += len(alive)
            cands.sort(key=lambda c: -c[0])
            nxt: list[tuple[list[int], float]] = []
            parents: list[int] = []
            for score, b, tok in cands:
                if tok == eot:
                    if len(finished) < beam_size:
                        finished.append((alive[b][0], score, True))
                else:
                    nxt.append((alive[b][0] + [tok], score))
                    parents.append(b)
                if len(nxt) == beam_size:
                    break
            if len(finished) >= beam_size or not nxt:
                break
            alive = nxt
            if step + 1 == max_steps:
                finished.extend((ids, score, False) for ids, score in alive)
                break
            idx = np.array(parents)
            rows, pk, pv = self._step([ids[-1] for ids, _ in alive], [k[idx] for k in pk], [v[idx] for v in pv])
        if not finished:
            finished = [(ids, score, False) for ids, score in alive]
        ids, score, ended = max(finished, key=lambda f: f[1] / max(1, len(f[0])))
        return Decoding(ids, ended, score / max(1, len(ids)), steps)
