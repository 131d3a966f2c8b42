"""Whisper's decoder in ONNX Runtime (assistant/whisperdecoder.py): Whisper's token rules on made-up logits, then the
graph built from the packaged whisper-base against CTranslate2's float32 decoder on real recordings."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from llasm.assistant.audio import load_audio
from llasm.assistant.hearing import HearingError, HearingOptions, WhisperHearing, speech_end
from llasm.assistant.whisperdecoder import MAX_INITIAL_TIMESTAMP_INDEX, OnnxWhisperDecoder

PS = Path("/usr/share/pocketsphinx/test/data")
needs_ps = pytest.mark.skipif(not PS.is_dir(), reason="Debian pocketsphinx-testdata is not installed")
EOT, NO_TS, TS0, V = 10, 12, 13, 80  # ids under 10 are words, 11 <|nospeech|>, 12 <|notimestamps|>, 13.. stamps


def _rules_only() -> OnnxWhisperDecoder:
    d = OnnxWhisperDecoder.__new__(OnnxWhisperDecoder)
    d.eot, d.no_timestamps, d.ts0, d.no_speech = EOT, NO_TS, TS0, 11
    d.suppress, d.suppress_begin = np.array([3]), np.array([0, EOT])
    return d


def _allowed(ids: list[int], step: int, z: np.ndarray | None = None, timestamps: bool = True) -> set[int]:
    z = np.zeros(V, np.float32) if z is None else z.copy()
    _rules_only().rules(z, ids, step, timestamps)
    return {int(i) for i in np.flatnonzero(np.isfinite(z))}


def test_whispers_token_rules() -> None:
    words = set(range(EOT)) - {3}
    # the first token: a timestamp no later than MAX_INITIAL_TIMESTAMP_INDEX steps
    assert _allowed([], 0) == set(range(TS0, min(V, TS0 + MAX_INITIAL_TIMESTAMP_INDEX + 1)))
    # after a segment's opening timestamp: its text (suppress lists apply), never another timestamp
    assert _allowed([TS0 + 5], 1) == words | {EOT, 11}
    # within the text: the closing timestamp comes after the opening one
    z = np.zeros(V, np.float32)
    z[TS0 + 9] = 9.0  # the stamps outweigh every text token
    assert _allowed([TS0 + 5, 1, 2], 3, z) == set(range(TS0 + 6, V))
    z = np.zeros(V, np.float32)
    z[1] = 9.0  # a word outweighs the stamps together
    assert _allowed([TS0 + 5, 1, 2], 3, z) == words | {EOT, 11} | set(range(TS0 + 6, V))
    # after a closing timestamp: the next opening one (not earlier) or the end (special ids past the end other
    # than <|notimestamps|> are left to the suppress lists, as CTranslate2 does)
    z = np.zeros(V, np.float32)
    z[EOT] = 9.0
    assert _allowed([TS0, 1, TS0 + 7], 3, z) == {EOT, 11} | set(range(TS0 + 7, V))
    assert _allowed([TS0, 1, TS0 + 7], 3) == set(range(TS0 + 7, V))  # the stamps together outweigh the end
    # without timestamps, only the suppress lists (the begin list on the first step)
    assert _allowed([], 0, timestamps=False) == set(range(V)) - {3, 0, EOT}
    assert _allowed([1], 1, timestamps=False) == set(range(V)) - {3}


def test_a_damaged_model_bin_is_one_clear_line(tmp_path: Path) -> None:
    from llasm.assistant.basemodels import resolve

    src = resolve("default:whisper-base")
    for name in ("vocabulary.txt", "vocabulary.json", "config.json", "tokenizer.json"):
        if (src / name).is_file():
            shutil.copy(src / name, tmp_path / name)
    (tmp_path / "model.bin").write_bytes((src / "model.bin").open("rb").read(4096))
    with pytest.raises(HearingError, match="truncated") as e:
        WhisperHearing(SimpleNamespace(is_multilingual=True), tmp_path, decoder="onnx")
    assert "\n" not in str(e.value)


def test_a_decoder_the_graphs_cannot_hold_is_left_to_ctranslate2() -> None:
    from llasm.assistant.ct2file import Ct2Model
    from llasm.assistant.whisperdecoder import UnsupportedDecoder, build_graphs

    odd = Ct2Model("WhisperSpec", 3, {"decoder/layer_0/ffn/linear_0/weight": np.zeros((96, 48), np.float32),
                                      "decoder/embeddings/weight": np.zeros((100, 48), np.float32),
                                      "decoder/num_heads": np.array(3, np.int32)})  # width 48: not in 32-blocks
    with pytest.raises(UnsupportedDecoder, match="CTranslate2"):
        build_graphs(odd)


def test_the_hearing_decodes_with_ctranslate2_where_the_graphs_cannot_hold_the_decoder(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    from llasm.assistant import hearing
    from llasm.assistant.basemodels import resolve
    from llasm.assistant.whisperdecoder import UnsupportedDecoder

    def unsupported(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise UnsupportedDecoder("a decoder of width 48 is not supported by the ONNX decoder")

    monkeypatch.setattr(hearing, "OnnxWhisperDecoder", unsupported)
    src = resolve("default:whisper-base")
    for name in ("vocabulary.txt", "config.json", "tokenizer.json"):
        shutil.copy(src / name, tmp_path / name)
    h = WhisperHearing(SimpleNamespace(is_multilingual=True), tmp_path, decoder="onnx")
    assert h.decoder is None  # CTranslate2's generate decodes


@pytest.fixture(scope="module")
def models() -> tuple[WhisperHearing, object]:
    import ctranslate2
    from llasm.assistant.basemodels import resolve

    path = resolve("default:whisper-base")
    int8 = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=2)
    float32 = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="float32", intra_threads=2)
    return WhisperHearing.from_options(int8, path, HearingOptions(mode="whisper"), n_threads=2), float32


@pytest.mark.real
@needs_ps
def test_the_onnx_decoder_decodes_as_whispers_float32_decoder(models) -> None:  # noqa: ANN001
    """Greedy and beam-5 transcripts of real recordings (LibriVox readings, spoken card names, each in its
    hearing window, followed by the silent window's states) against CTranslate2's float32 decoder over the same
    encoder states; the decoder ends each by itself; and the no-speech probability."""
    import ctranslate2

    hearing, float32 = models
    assert hearing.decoder is not None and hearing.silence_tail  # the default hearing decodes in ONNX Runtime
    prompt = [hearing.index[t] for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")]
    tail_states = hearing.tail()
    tail_k, tail_v = hearing.decoder.tail_attention(tail_states)
    assert tail_states.shape[1] == tail_k[0].shape[2] == 1500
    clips = sorted((PS / "librivox").glob("*.wav"))[:5] + sorted((PS / "cards").glob("*.wav"))[:3]
    same = {1: 0, 5: 0}
    for wav in clips:
        audio = load_audio(wav)
        states = np.array(hearing.model.encode(hearing._features(audio), to_cpu=True))
        n = states.shape[1]
        cap = int(12 + 8 * speech_end(audio))
        utterance = hearing.decoder.utterance(states, prompt, tail=tail_states)
        assert all(k.shape[2] == 1500 for k in utterance.cross_k) and n < 1500
        # the utterance's own keys first, then the silent window's from where its states end (the buffers are
        # reused: a card name after a longer reading gets the silent window's keys back past its own)
        assert np.array_equal(utterance.cross_k[0][:, :, n:], tail_k[0][:, :, n:])
        assert np.array_equal(utterance.cross_v[3][:, :, n:], tail_v[3][:, :, n:])
        assert np.array_equal(utterance.cross_v[-1][:, :, :n], hearing.decoder.cross_attention(states)[1][-1])
        sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate([states, tail_states[:, n:]], 1)))
        for beam in (1, 5):
            ref = float32.generate(sv, [prompt], beam_size=beam, max_length=2 * cap, return_no_speech_prob=True)[0]
            ours = utterance.greedy(cap) if beam == 1 else utterance.beam(beam, cap)
            same[beam] += hearing.text_of(ours.ids) == hearing.text_of(list(ref.sequences_ids[0]))
            assert ours.ended and -1.5 < ours.score < 0, (wav.name, beam, ours)
        assert abs(utterance.no_speech_prob - ref.no_speech_prob) < 0.05
    # int8 weights move a near tie now and then (CTranslate2's own int8 agrees with its float32 about as often)
    assert same[1] >= len(clips) - 2 and same[5] >= len(clips) - 2, same


@pytest.mark.real
@needs_ps
def test_the_hearing_ab_script_hears_each_clip_both_ways(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    manifest = tmp_path / "clips.jsonl"
    rows = [{"audio": str(PS / "cards" / "001.wav"), "text": "ten of clubs"},
            {"audio": str(sorted((PS / "librivox").glob("*.wav"))[0]), "text": "and mister john dashwood"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ab.json"
    script = [sys.executable, str(root / "scripts/hearing_ab.py"), str(manifest)]
    proc = subprocess.run([*script, "--out", str(out)], capture_output=True, text=True, timeout=300)  # onnx vs ct2
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "under 2 s (1 clips)" in proc.stdout and "all (2 clips)" in proc.stdout, proc.stdout
    records = json.loads(out.read_text())
    assert len(records) == 2 and "clubs" in records[0]["a"]["text"].lower()
    assert "clubs" in records[0]["b"]["text"].lower()  # CTranslate2's decoder over the states and the silent window
    assert all(r[s]["calls"] >= 1 and r[s]["decoder_ms"] > 0 and r[s]["edits"] >= 0 for r in records for s in "ab")
    # any hearing keys: the greedy pass alone on one side hears with one decoder call a clip
    proc = subprocess.run([*script, "--a", "whisper_beam=1", "--b", "short_timestamps=true", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and all(r["a"]["calls"] == 1 for r in json.loads(out.read_text())), proc.stderr
    bad = subprocess.run([*script, "--a", "no_such_key=1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no_such_key" in bad.stderr and "Traceback" not in bad.stderr
