"""Headless hands-free mode end to end with a fake engine: segmentation, JSON records, barge-in, settings."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from llasm.assistant import handsfree
from llasm.assistant.capture import ArraySource
from llasm.assistant.cli import handsfree_main as main
from llasm.assistant.handsfree import run_headless
from llasm.assistant.history import History
from llasm.assistant.settings import Settings, SettingsError, load_settings, merge_options
from llasm.assistant.tts import SpeechOutput, speakable, split_sentences
from test_handsfree_fakes import SR, FakeEngine, conversation


@pytest.fixture(scope="module")
def convo(tmp_path_factory):
    return conversation(tmp_path_factory.mktemp("speech"))


def test_headless_json_one_record_per_utterance(convo):
    audio, truth = convo
    out, err = io.StringIO(), io.StringIO()
    engine = FakeEngine()
    rc = run_headless(engine, ArraySource(audio, realtime=False, name="talk.wav"), Settings(json=True), out=out, err=err)
    assert rc == 0
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(recs) == len(truth)
    for i, (rec, (a, b)) in enumerate(zip(recs, truth, strict=True)):
        assert rec["input"] == "talk.wav" and rec["utterance"] == i + 1
        for key in ("answer", "heard", "encoder_ms", "adaptor_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s", "audio_s"):
            assert key in rec
        assert abs(rec["segment_start_s"] - a) <= 0.1 and abs(rec["segment_end_s"] - b) <= 0.1
        # the engine got pre-roll + speech + tail, and answered about that audio
        assert rec["answer"].startswith("You said")
        assert rec["audio_s"] == pytest.approx(b - a + 0.5, abs=0.15)
    assert "listening on talk.wav" in err.getvalue()


def test_headless_json_says_why_each_answer_stopped(convo):
    audio, truth = convo
    for reason in ("eos", "loop"):
        out = io.StringIO()
        rc = run_headless(FakeEngine(stop_reason=reason), ArraySource(audio, realtime=False, name="talk.wav"),
                          Settings(json=True), out=out, err=io.StringIO())
        recs = [json.loads(line) for line in out.getvalue().splitlines()]
        assert rc == 0 and len(recs) == len(truth) and all(r["stop_reason"] == reason for r in recs)


def test_headless_prepares_each_utterance_before_it_is_answered(convo):
    """The listener hands each utterance's final audio to Engine.prepare as soon as its tail is in, before
    the VAD's end-of-speech silence has passed; the turn then gets the very same samples."""
    import threading

    audio, truth = convo

    class PreparingEngine(FakeEngine):
        def __init__(self) -> None:
            super().__init__()
            self.prepared: list[np.ndarray] = []
            self.order: list[str] = []
            self.lock = threading.Lock()

        def prepare(self, clip: np.ndarray) -> None:
            with self.lock:
                self.prepared.append(clip)
                self.order.append("prepare")

        def respond(self, audio=None, **kw):
            with self.lock:
                self.order.append("respond")
            return super().respond(audio=audio, **kw)

    engine = PreparingEngine()
    run_headless(engine, ArraySource(audio, realtime=True, name="talk.wav"), Settings(), out=io.StringIO(),
                 err=io.StringIO())
    answered = [c["audio"] for c in engine.calls]
    assert len(answered) == len(truth)
    for a in answered:  # every answered utterance was prepared with exactly its samples
        assert any(p.shape == a.shape and np.array_equal(p, a) for p in engine.prepared)
    assert engine.order[0] == "prepare"  # ahead of the first turn (realtime stream: the silence takes 0.5 s)


def test_headless_text_streams_answers(convo):
    audio, truth = convo
    out = io.StringIO()
    run_headless(FakeEngine(), ArraySource(audio, realtime=False), Settings(), out=out, err=io.StringIO())
    lines = out.getvalue().splitlines()
    assert len(lines) == len(truth) and all(line.startswith("You said **") for line in lines)


class SlowPlayer:
    """Pretends to play: `seconds` of wall time per sentence, cut short when cancelled."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.cut, self.played = seconds, 0, 0

    def open(self):
        pass

    def play(self, audio, cancelled):
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            if cancelled():
                self.cut += 1
                return False
            time.sleep(0.01)
        self.played += 1
        return True

    def close(self):
        pass


def _two_questions(tmp_path):
    return conversation(tmp_path, sentences=["What is the capital of France?", "Tell me a joke about cats."],
                        silences=[0.5, 1.0, 1.0])


@pytest.mark.parametrize("barge_in", [True, False])
def test_speaking_barge_in_or_deaf(tmp_path, barge_in):
    audio, truth = _two_questions(tmp_path)
    player = SlowPlayer(1.5)
    speech = SpeechOutput(voice=lambda text: np.zeros(2400, np.float32), player=player)
    out = io.StringIO()
    src = ArraySource(audio, realtime=True, speed=2.0)
    rc = run_headless(FakeEngine(), src, Settings(json=True, speak=True, barge_in=barge_in), speech=speech,
                      out=out, err=io.StringIO())
    assert rc == 0
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    if barge_in:
        # the second question's onset cut the first spoken answer; both questions were answered
        assert player.cut >= 1
        assert len(recs) == 2
        assert abs(recs[1]["segment_start_s"] - truth[1][0]) <= 0.1
    else:
        # the microphone was ignored while the assistant spoke: the second question was not heard
        assert player.cut == 0
        assert len(recs) == 1


def test_tts_sentence_splitting_and_markdown():
    done, rest = split_sentences("Paris is the capital. It has **2 million** people and")
    assert done == ["Paris is the capital."] and rest.startswith("It has")
    assert speakable("**Paris** is [here](http://x) `now`") == "Paris is here now"


def test_settings_toml_and_flags(tmp_path, monkeypatch):
    p = tmp_path / "settings.toml"
    p.write_text('mic = true\ninput_device = 3\ntemperature = 0.2\nbarge_in = false\n[vad]\nend_silence_ms = 500\n')
    s = load_settings(p)
    assert s.mic and s.input_device == "3" and s.temperature == 0.2 and not s.barge_in and s.vad.end_silence_ms == 500
    s = merge_options(s, {"input_device": "USB", "temperature": None, "json": False, "no_tui": True})
    assert s.input_device == "USB" and s.temperature == 0.2 and s.no_tui
    assert s.generation_options() == {"temperature": 0.2}
    p.write_text("colour = 'red'\n")
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        load_settings(p)
    p.write_text("[vad]\nframe_ms = 25\n")
    with pytest.raises(SettingsError, match="frame_ms"):
        load_settings(p)
    p.write_text("max_tokens = 'many'\n")
    with pytest.raises(SettingsError, match="max_tokens must be int"):
        load_settings(p)
    p.write_text("n_best = 4\nfusion = 0.5\nngram_fusion = 0.3\n")  # how a ctc bundle hears (assistant/ctcbeam.py)
    s = load_settings(p)
    assert (s.n_best, s.fusion, s.ngram_fusion) == (4, 0.5, 0.3)
    assert merge_options(s, {"ngram_fusion": 0.0}).ngram_fusion == 0.0  # a flag given wins, also 0
    p.write_text("whisper_decoder = 'ct2'\n")  # CTranslate2's decoder instead of the ONNX one (settings only)
    assert load_settings(p).hearing_overrides() == {"whisper_decoder": "ct2"}


def test_history_roundtrip(tmp_path):
    h = History(tmp_path / "h.db")
    c = h.new_chat()
    h.add_turn(c, "user", "What is the capital of France?", spoken=True)
    h.add_turn(c, "assistant", "Paris.", timings={"ttft_ms": 120.0})
    h.new_chat()  # an empty chat is not listed
    h.close()
    h = History(tmp_path / "h.db")
    chats = h.chats()
    assert [(x.id, x.title, x.turns) for x in chats] == [(c, "What is the capital of France?", 2)]
    turns = h.turns(c)
    assert [(t.role, t.text, t.spoken) for t in turns] == [("user", "What is the capital of France?", True),
                                                         ("assistant", "Paris.", False)]
    assert turns[1].timings == {"ttft_ms": 120.0}


def test_main_mic_file_headless_json(tmp_path, monkeypatch, capsys, convo):
    import soundfile as sf

    audio, truth = convo
    wav = tmp_path / "q.wav"
    sf.write(wav, audio, SR)
    cfg = tmp_path / "settings.toml"
    cfg.write_text("realtime = false\n")
    monkeypatch.setenv("LLASM_CONFIG", str(cfg))
    monkeypatch.setattr(handsfree, "load_engine", lambda settings: FakeEngine())
    rc = main({"mic_file": str(wav), "no_tui": True, "json": True})
    assert rc == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(recs) == len(truth) and recs[0]["input"] == str(wav)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mic": True, "no_tui": True}, "--list-devices"),  # this machine has no input device
        ({"no_tui": True}, "--no-tui needs an audio input"),
        ({"mic_file": "/nonexistent.wav", "no_tui": True}, "--mic-file /nonexistent.wav"),
        ({"mic": True, "mic_file": "x.wav"}, "pick one input"),
    ],
)
def test_main_bad_input_is_one_line(tmp_path, monkeypatch, capfd, options, message):
    monkeypatch.setenv("LLASM_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setattr(handsfree, "load_engine", lambda settings: FakeEngine())
    if options.get("mic") and not options.get("mic_file"):
        from llasm.assistant.capture import list_input_devices

        if list_input_devices():
            pytest.skip("this machine has an input device")
    rc = main(options)
    err = capfd.readouterr().err
    assert rc != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1, err  # one line: ALSA/JACK noise silenced, no traceback


def test_cli_flags_reach_handsfree_and_keep_file_settings(tmp_path, monkeypatch, convo):
    import soundfile as sf
    from llasm.assistant.cli import app
    from typer.testing import CliRunner

    audio, truth = convo
    wav = tmp_path / "q.wav"
    sf.write(wav, audio, SR)
    cfg = tmp_path / "settings.toml"
    cfg.write_text("realtime = false\ntemperature = 0.3\n[vad]\nend_silence_ms = 600\n")
    monkeypatch.setenv("LLASM_CONFIG", str(cfg))
    engine = FakeEngine()
    monkeypatch.setattr(handsfree, "load_engine", lambda settings: engine)
    res = CliRunner().invoke(app, ["--mic-file", str(wav), "--no-tui", "--json", "--max-tokens", "40"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(recs) == len(truth)
    opts = engine.calls[0]["options"]
    # the file's temperature survives the flag's default; the flag given on the command line wins
    assert opts.temperature == 0.3 and opts.max_tokens == 40


def test_listener_shows_what_it_hears_while_the_user_speaks(convo):
    """SpeechProgress -> the engine's hear_partial on the worker thread -> PartialHeard events, at least every
    0.6 s of speech, before the utterance is delivered; stale audio is skipped, never queued."""
    import threading

    from llasm.assistant.handsfree import Listener, PartialHeard
    from llasm.assistant.vad import Utterance

    audio, truth = convo
    events: list = []
    heard_lengths: list[int] = []
    done = threading.Event()

    def hear(clip: np.ndarray) -> str:
        heard_lengths.append(len(clip))
        return f"{len(clip) / SR:.1f} s so far"

    def on_event(ev) -> None:
        if isinstance(ev, (PartialHeard, Utterance)):
            events.append((time.perf_counter(), ev))
        if type(ev).__name__ == "StreamEnded":
            done.set()

    listener = Listener(ArraySource(audio, realtime=True, name="talk.wav"), on_event, hear=hear).start()
    assert done.wait(60)
    listener.stop()
    utts = [i for i, (_, e) in enumerate(events) if isinstance(e, Utterance)]
    assert len(utts) == len(truth)
    start = 0
    for i in utts:
        partial = [(t, e) for t, e in events[start:i] if isinstance(e, PartialHeard)]
        if events[i][1].duration_s > 1.5:
            assert partial and partial[-1][1].text.endswith("s so far")
            gaps = np.diff([e.end_s for _, e in partial])
            assert all(g <= 0.6 + 1e-6 for g in gaps), gaps  # updated at least every 0.6 s of speech
        start = i + 1
    assert heard_lengths and heard_lengths[0] < max(heard_lengths)
