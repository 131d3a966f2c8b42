"""Helpers shared by the test files: hand-built bundles on the real small models and a synthetic clip.

Import them as `from conftest import build_bundle, clip` (pytest puts tests/ on sys.path), or use the
`bundle_factory` fixture. Imports of the runtime stay inside the helpers so every test session starts fast."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ADAPTOR_EXTRA: dict[str, dict[str, int]] = {
    "linear": {"stack": 2},
    "ultravox": {"stack": 8, "hidden": 64},
    "ctc": {"stack": 2, "hidden": 64, "vocab_size": 49152, "topk": 4},
}


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a `python -m ...` child of this repo: the repo first on PYTHONPATH, what the
    parent had there kept after it (packages installed outside the interpreter's own site-packages)."""
    import os

    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def build_bundle(root: Path, adaptor_type: str = "linear", *, n_ctx: int = 2048, seed: int = 0,
                 llm_identity: dict | None = None) -> Path:
    """A bundle by hand: default whisper-tiny.en encoder, default SmolLM2 GGUF, a random adaptor. `llm_identity`:
    what bundle.json states about the LLM (`assistant.llm.gguf_identity`; None: nothing, as older bundles)."""
    from llasm.assistant.adaptor import AdaptorConfig, random_tensors
    from llasm.assistant.basemodels import resolve
    from llasm.assistant.bundle import prompt_from_gguf, write_bundle

    cfg = AdaptorConfig.from_dict({"type": adaptor_type, "d_model": 384, "n_embd": 576, **ADAPTOR_EXTRA[adaptor_type]})
    return write_bundle(root, encoder="default:whisper-tiny.en", llm="default:smollm2",
                        adaptor_config=cfg.to_dict(), adaptor_tensors=random_tensors(cfg, seed=seed, scale=0.02),
                        prompt=prompt_from_gguf(resolve("default:smollm2")), d_model=384, n_ctx=n_ctx,
                        llm_identity=llm_identity)


def clip(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A 16 kHz mono float32 tone with a little noise, rising and falling four times a second like syllables
    (deterministic for a seed): a steady tone is no speech to the hearing's noise gate (hearing.not_speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    syllables = np.sin(np.pi * 4 * t) ** 2
    return (0.2 * syllables * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture
def bundle_factory(tmp_path: Path) -> Callable[..., Path]:
    """`bundle_factory(name="bundle", adaptor_type="linear", **kw)` builds a bundle under tmp_path/name."""

    def make(name: str = "bundle", adaptor_type: str = "linear", **kw: int) -> Path:
        return build_bundle(tmp_path / name, adaptor_type, **kw)

    return make


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Tiny random Whisper + LLaMA models and a small ASR/conversation dataset (training/tiny.py)."""
    from llasm.training.tiny import make_dataset, make_models

    root = tmp_path_factory.mktemp("tiny")
    make_models(root)
    make_dataset(root)
    return root

