"""Bundle loading and validation: every bad file is a one-line BundleError naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llasm.assistant.adaptor import AdaptorConfig, random_tensors
from llasm.assistant.bundle import Bundle, BundleError, check_gguf, read_gguf_index, write_bundle
from llasm.assistant.prompt import PromptTemplate

CHATML = PromptTemplate(system="<|im_start|>system\n{content}<|im_end|>\n",
                        user="<|im_start|>user\n{content}<|im_end|>\n",
                        assistant="<|im_start|>assistant\n{content}<|im_end|>\n",
                        generation="<|im_start|>assistant\n", stop=("<|im_end|>",))


def tiny_gguf(path: Path, n_vocab: int = 16, n_embd: int = 8) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(n_embd)
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    w.add_tensor("token_embd.weight", np.arange(n_vocab * n_embd, dtype=np.float32).reshape(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def fake_ct2(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    name = b"WhisperSpec\0"
    (path / "model.bin").write_bytes(np.uint32(6).tobytes() + np.uint16(len(name)).tobytes() + name + b"\0" * 32)
    return path


def make_fake_bundle(root: Path, **kw) -> Path:
    """A bundle whose files have valid headers but are not real models (for validation tests)."""
    root.mkdir(parents=True, exist_ok=True)
    fake_ct2(root / "encoder")
    tiny_gguf(root / "llm.gguf")
    cfg = AdaptorConfig.from_dict({"type": "linear", "stack": 1, "d_model": 4, "n_embd": 8})
    return write_bundle(root, encoder="encoder", llm="llm.gguf", adaptor_config=cfg.to_dict(),
                        adaptor_tensors=random_tensors(cfg), prompt=CHATML, d_model=4, **kw)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLASM_CACHE_DIR", str(tmp_path / "cache"))


def test_load_valid_bundle(tmp_path):
    root = make_fake_bundle(tmp_path / "b", n_ctx=512)
    b = Bundle.load(root)
    assert b.encoder.format == "ct2" and b.encoder.path == (root / "encoder").resolve()
    assert b.llm.path.name == "llm.gguf" and b.llm.n_ctx == 512 and b.llm.lora is None
    assert b.adaptor["type"] == "linear" and "path" not in b.adaptor
    assert b.prompt == CHATML and b.stop == ("<|im_end|>",)
    manifest = json.loads((root / "bundle.json").read_text())
    assert set(manifest["checksums"]) == {"encoder/model.bin", "llm.gguf", "adaptor.safetensors"}
    # the second load uses the cached sha256 (the files are unchanged) and still validates
    assert Bundle.load(root).llm.path == b.llm.path


def _expect(root: Path, *needles: str) -> str:
    with pytest.raises(BundleError) as ei:
        Bundle.load(root)
    msg = str(ei.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_missing_dir_and_manifest(tmp_path):
    _expect(tmp_path / "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    _expect(tmp_path / "empty", "bundle.json is missing")


def test_bad_manifest(tmp_path):
    root = make_fake_bundle(tmp_path / "b")
    (root / "bundle.json").write_text("{not json")
    _expect(root, "bundle.json", "not valid JSON")
    (root / "bundle.json").write_text(json.dumps({"format": "other"}))
    _expect(root, "not a llasm bundle")
    (root / "bundle.json").write_text(json.dumps({"format": "llasm-bundle", "version": 99}))
    _expect(root, "version 99")
    (root / "bundle.json").write_text(json.dumps({"format": "llasm-bundle", "version": 1}))
    _expect(root, "lacks the")


def test_corrupt_file_fails_checksum(tmp_path):
    root = make_fake_bundle(tmp_path / "b")
    data = bytearray((root / "llm.gguf").read_bytes())
    data[-1] ^= 0xFF
    (root / "llm.gguf").write_bytes(bytes(data))
    _expect(root, "llm.gguf", "corrupt")


def test_missing_file(tmp_path):
    root = make_fake_bundle(tmp_path / "b")
    (root / "adaptor.safetensors").unlink()
    _expect(root, "adaptor.safetensors", "missing")


def test_truncated_files_without_checksums(tmp_path):
    root = make_fake_bundle(tmp_path / "b")
    m = json.loads((root / "bundle.json").read_text())
    m["checksums"] = {}
    (root / "bundle.json").write_text(json.dumps(m))
    gg = root / "llm.gguf"
    full = gg.read_bytes()
    gg.write_bytes(full[:-40])
    _expect(root, "llm.gguf", "truncated")
    gg.write_bytes(b"NOPE" + full[4:])
    _expect(root, "llm.gguf", "not a GGUF")
    gg.write_bytes(full)
    st = root / "adaptor.safetensors"
    st.write_bytes(st.read_bytes()[:-10])
    _expect(root, "adaptor.safetensors", "truncated")
    st.write_bytes(b"\xff" * 40)
    _expect(root, "adaptor.safetensors")
    write_ok = make_fake_bundle(tmp_path / "c")
    (write_ok / "encoder" / "model.bin").write_bytes(b"\x00\x01")
    m = json.loads((write_ok / "bundle.json").read_text())
    m["checksums"] = {}
    (write_ok / "bundle.json").write_text(json.dumps(m))
    _expect(write_ok, "model.bin", "truncated")


def test_unknown_default_reference(tmp_path):
    root = make_fake_bundle(tmp_path / "b")
    m = json.loads((root / "bundle.json").read_text())
    m["llm"]["path"] = "default:nonexistent"
    (root / "bundle.json").write_text(json.dumps(m))
    _expect(root, "default:nonexistent")


def test_gguf_index_reads_tensor_table(tmp_path):
    path = tiny_gguf(tmp_path / "m.gguf", n_vocab=16, n_embd=8)
    meta, tensors = read_gguf_index(path)
    assert meta["llama.embedding_length"] == 8
    t = tensors["token_embd.weight"]
    assert t.shape == (8, 16) and t.nbytes == 16 * 8 * 4
    raw = np.fromfile(path, dtype=np.float32, count=16 * 8, offset=t.offset)
    assert np.array_equal(raw, np.arange(128, dtype=np.float32))
    check_gguf(path)


def test_token_embeddings_from_tiny_gguf(tmp_path):
    from llasm.assistant.llm import read_token_embeddings

    path = tiny_gguf(tmp_path / "m.gguf", n_vocab=16, n_embd=8)
    table = read_token_embeddings(path)
    assert table.shape == (16, 8)
    assert np.array_equal(table, np.arange(128, dtype=np.float32).reshape(16, 8))


def _assert_gguf_parity(path: Path) -> None:
    """read_gguf_index and gguf.GGUFReader agree on every metadata key and every tensor of `path`."""
    from gguf import GGUFReader, GGUFValueType

    meta, tensors = read_gguf_index(path)
    reader = GGUFReader(str(path))
    theirs = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}  # GGUF.*: header, not keys
    arrays = {k for k, f in theirs.items() if f.types[0] == GGUFValueType.ARRAY}
    assert set(meta) == set(theirs) - arrays  # the runtime never reads arrays: they are skipped
    for key, value in meta.items():
        assert value == theirs[key].contents(), key
    assert list(tensors) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        info = tensors[t.name]
        assert (info.shape, info.ggml_type, info.offset, info.nbytes) == (
            tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset), int(t.n_bytes)), t.name


def test_gguf_index_agrees_with_gguf_reader_on_the_shipped_lora():
    _assert_gguf_parity(Path(__file__).resolve().parents[1] / "assistant" / "default_model" / "lora.gguf")


@pytest.mark.real
def test_gguf_index_agrees_with_gguf_reader_on_smollm2():
    from llasm.assistant.basemodels import resolve

    _assert_gguf_parity(resolve("default:smollm2"))
