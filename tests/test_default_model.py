"""The shipped default bundle's trained adaptor hears (hearing mode adaptor, `--hearing adaptor`): spoken
questions generated at test time get on-topic answers.

Runs the real default model (whisper-base CT2 + SmolLM2 Q8_0 from the packages, the ctc adaptor and the LoRA
shipped in assistant/default_model/) on espeak-ng speech made here, through the engine and the command line.
The default hearing (Whisper's own decoder) is tested on real recordings in tests/test_hearing_engine.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llasm.assistant.audio import load_audio
from llasm.assistant.evaluate import normalize, wer

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make test installs it)")]

DEFAULT = Path(__file__).resolve().parents[1] / "assistant" / "default_model"


def speak(text: str, path: Path, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), "--", text], check=True)
    return path


@pytest.fixture(scope="module")
def engine():  # noqa: ANN201
    from llasm.assistant.engine import Engine

    eng = Engine.load(DEFAULT, n_threads=1, hearing={"mode": "adaptor"})
    yield eng
    eng.close()


def test_default_bundle_is_shipped_and_small() -> None:
    manifest = json.loads((DEFAULT / "bundle.json").read_text())
    assert manifest["encoder"]["path"] == "default:whisper-base" and manifest["llm"]["path"] == "default:smollm2-q8_0"
    assert manifest["llm"]["lora"] == "lora.gguf" and manifest["source"]["stage"] == 2  # stage 2's LoRA over the base
    shipped = sum(p.stat().st_size for p in DEFAULT.iterdir())
    assert shipped < 25e6  # the trained parts only; base weights come from their packages


SENTENCES = ["What is the capital of France?", "Please open the window.", "How old are you?",
             "Turn off the lights in the kitchen."]
# The shipped adaptor hears these clips at WER 0.33 greedy and rescored; the bound catches a broken adaptor, encoder or
# token table (an untrained ctc head scores above 1.0). Held-out hearing is measured on 576 questions
# (docs/model-card.md), not on four clips.
MAX_HEARD_WER = 0.5
# The LLM's pick among the beam's transcripts is checked on more questions: on these eight (en-us) the pick hears
# better than the greedy path ("Tell me a joke about cats." found, "Is the sky blues?" made "Is the sky blue?").
RESCORED = SENTENCES + ["What color is grass?", "How do I bake bread?", "Tell me a joke about cats.",
                        "Why is the sky blue?"]
# "What color is grass?" is heard word for word in every en-gb espeak-ng voice; en-us's default voice is heard
# "What color is Brazil?" one-shot (the 4-gram in the beam pulls it to a trained phrasing; without it "Color is
# grass.", greedy "Color is grasp."), and word for word with the LLM inside the beam (hands-free).
# strict: the day en-us is heard one-shot, this test fails until the xfail mark is removed.
NOT_YET = pytest.mark.xfail(strict=True, reason="one-shot (the 4-gram in the beam, the LLM rescoring 3 transcripts), "
                            "the shipped ctc head hears espeak-ng en-us's 'What color is grass?' as 'What color "
                            "is Brazil?' (without the 4-gram 'Color is grass.'; greedy 'Color is grasp.'; en-gb "
                            "voices: heard word for word, answered 'green'; hands-free, with the LLM inside the beam "
                            "search, en-us too)")
GRASS_VOICES = [pytest.param("en-gb", id="en-gb"), pytest.param("en-us", id="en-us", marks=NOT_YET)]
HANDS_FREE_GRASS_VOICES = ["en-gb", "en-us"]


def _ask_all(engine, tmp_path: Path, transcribe: bool):  # noqa: ANN001, ANN202
    from llasm.assistant.engine import GenerationOptions

    out = []
    for i, s in enumerate(SENTENCES):
        d = engine.ask(audio=load_audio(speak(s, tmp_path / f"s{i}.wav")), transcribe=transcribe,
                       options=GenerationOptions(max_tokens=40))
        engine.new_chat()
        out.append(d)
    return out


def test_the_adaptor_hears_most_spoken_words(engine, tmp_path: Path) -> None:  # noqa: ANN001
    heard = [d.heard or "" for d in _ask_all(engine, tmp_path, transcribe=True)]
    assert wer(SENTENCES, heard) <= MAX_HEARD_WER, list(zip(SENTENCES, heard, strict=True))


def test_transcription_prompt_returns_the_spoken_words(engine, tmp_path: Path) -> None:  # noqa: ANN001
    # Stage 2 taught the LLM to read back what the adaptor hears (0.33, exactly what it heard); without stage 2
    # the LLM rewrote it (1.19: 'is the capital of friends?' -> 'The capital of friends is Paris.').
    ds = _ask_all(engine, tmp_path, transcribe=True)
    answers = [d.answer for d in ds]
    assert wer(SENTENCES, answers) <= 0.45, list(zip(SENTENCES, answers, strict=True))
    assert wer([d.heard or "" for d in ds], answers) <= 0.1  # it repeats what it heard, not what it guesses


def test_hands_free_prefill_ahead_answers_as_the_plain_turn(engine, tmp_path: Path) -> None:  # noqa: ANN001
    """Hands-free: Engine.prepare encodes and prefills a spoken turn during the end-of-speech silence (the ctc
    bundle prefills text and audio rows in one llama_decode). Two turns of a conversation answer exactly as
    without it, with nothing left to prefill when the turn comes."""
    from llasm.assistant.engine import GenerationOptions

    opts = GenerationOptions(max_tokens=12)
    clips = [load_audio(speak(s, tmp_path / f"h{i}.wav")) for i, s in enumerate(SENTENCES[:2])]
    engine.new_chat()
    plain = [engine.ask(audio=c, options=opts) for c in clips]
    engine.new_chat()
    ahead = []
    for c in clips:
        engine.prepare(c)
        ahead.append(engine.ask(audio=c, options=opts))
    engine.new_chat()
    assert [d.answer for d in ahead] == [d.answer for d in plain]
    assert all(d.timings["speculative"] == 1.0 and d.timings["prefill_positions"] == 0 for d in ahead)
    assert all(d.timings["prefill_positions"] > 0 for d in plain)


@pytest.mark.parametrize("voice", GRASS_VOICES)
def test_spoken_question_gets_an_on_topic_answer(engine, tmp_path: Path, voice: str) -> None:  # noqa: ANN001
    """The one-shot default (the LLM picks among the beam's 3 likeliest transcripts, bundle.json's hearing.n_best):
    the spoken question is answered as the typed one, "green"."""
    from llasm.assistant.engine import GenerationOptions

    opts = GenerationOptions(max_tokens=40)
    d = engine.ask(audio=load_audio(speak("What color is grass?", tmp_path / "grass.wav", voice)), options=opts)
    engine.new_chat()
    typed = engine.ask(text="What color is grass?", options=opts)
    engine.new_chat()
    assert "green" in normalize(d.answer), (d.heard, d.answer)
    assert d.heard == "What color is grass?" and d.answer == typed.answer


def test_the_llm_reads_what_was_heard_as_the_typed_question(engine, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A ctc head may spell a transcript in other tokens than the tokenizer would (' What' for 'What' at the
    start of a turn); the LLM then answered a question heard word for word unlike the typed one ("The answer is
    "green"" against "The answer to this question is "green""). It reads the tokenizer's tokens."""
    from llasm.assistant.adaptor import AdaptorOutput
    from llasm.assistant.engine import GenerationOptions

    lm, table = engine.lm, engine.adaptor.token_embeddings
    odd = [lm.tokenize(" What", special=False)[0]] + lm.tokenize(" color is grass?", special=False)
    assert lm.detokenize(odd).strip() == "What color is grass?" != lm.detokenize(odd)
    assert odd != lm.tokenize("What color is grass?", special=False)  # the same words, other tokens
    monkeypatch.setattr(engine.adaptor, "run", lambda states: AdaptorOutput(table[odd].astype(np.float32), odd))
    clip = load_audio(speak("What color is grass?", tmp_path / "odd.wav"))
    emb, heard, _ = engine.encode_audio(clip)
    assert heard == "What color is grass?"
    assert np.array_equal(emb, table[lm.tokenize(heard, special=False)])
    opts = GenerationOptions(max_tokens=24)
    spoken = engine.ask(audio=clip, options=opts)
    engine.new_chat()
    typed = engine.ask(text="What color is grass?", options=opts)
    engine.new_chat()
    assert spoken.answer == typed.answer and "green" in normalize(typed.answer), (spoken.answer, typed.answer)


@pytest.mark.parametrize("voice", HANDS_FREE_GRASS_VOICES)
def test_hands_free_hearing_answers_grass_green(tmp_path: Path, voice: str) -> None:
    """The issue's example through the hearing `llasm-assistant --mic` uses (the LLM inside the ctc beam search,
    then its pick among 4 of the beam's transcripts and how the sentence ends): heard word for word, answered by
    the plain LLM as the typed question is ("The answer to this question is "green""). The LoRA runs for
    `--transcribe` turns only
    (bundle.json llm.lora_turns): with it, this LLM answers even the typed question with "a muted shade of brown"."""
    from llasm.assistant.engine import Engine, GenerationOptions
    from llasm.assistant.hearing import HearingOptions

    hands_free = HearingOptions()  # the hands-free n_best and fusion
    eng = Engine.load(None, n_threads=1, warmup=False, hearing={"mode": "adaptor", "n_best": hands_free.handsfree_n_best,
                                                                "fusion": hands_free.handsfree_fusion})
    try:
        opts = GenerationOptions(max_tokens=24)
        spoken = eng.ask(audio=load_audio(speak("What color is grass?", tmp_path / "grass.wav", voice)), options=opts)
        eng.new_chat()
        typed = eng.ask(text="What color is grass?", options=opts)
        assert not eng.lm.lora_on  # answers come from the plain LLM
        assert spoken.heard == "What color is grass?", spoken.heard
        assert "green" in normalize(spoken.answer) and spoken.answer == typed.answer, (spoken.answer, typed.answer)
        switched: list[bool] = []
        set_lora = eng.lm.set_lora
        eng.lm.set_lora = lambda on: (switched.append(on), set_lora(on))[1]  # type: ignore[method-assign]
        eng.new_chat()
        d = eng.ask(audio=load_audio(tmp_path / "grass.wav"), transcribe=True, options=opts)
        assert d.answer == d.heard  # ... and a --transcribe turn reads back what was heard, with the LoRA,
        assert switched == [True, False] and not eng.lm.lora_on  # switched back for the next answer's prefill
    finally:
        eng.close()


# Spoken with espeak-ng en-gb, hands-free hearing hears these word for word; unmerged, the LLM in the beam spelt
# them "Hello! How ...", "Hello! What ..." (as 9 held-out questions, which the LLM then answered otherwise).
HELLO = ["Hello! how are dogs different from camels?", "Hello! what do I need to plant tomatoes?"]


def test_hands_free_hears_as_the_training_transcripts_spell(tmp_path: Path) -> None:
    """The template questions write "Hello! how ..."; the LLM in the hands-free beam likes "Hello! How ...", and
    a 135M LLM answers the two spellings differently. With the spellings of the same words merged, spelt as the
    ctc head likes best (bundle.json hearing.merge_spellings, on by default), the spoken question is heard letter
    for letter and gets the typed question's answer."""
    from llasm.assistant.engine import Engine, GenerationOptions
    from llasm.assistant.hearing import HearingOptions

    hands_free = HearingOptions()  # the hands-free n_best and fusion
    eng = Engine.load(None, n_threads=1, warmup=False, hearing={"mode": "adaptor", "n_best": hands_free.handsfree_n_best,
                                                                "fusion": hands_free.handsfree_fusion})
    try:
        assert eng.hearing.merge_spellings
        opts = GenerationOptions(max_tokens=24)
        for i, q in enumerate(HELLO):
            eng.new_chat()
            spoken = eng.ask(audio=load_audio(speak(q, tmp_path / f"hello{i}.wav", "en-gb")), options=opts)
            eng.new_chat()
            typed = eng.ask(text=q, options=opts)
            assert spoken.heard == q and spoken.answer == typed.answer, (spoken.heard, spoken.answer, typed.answer)
    finally:
        eng.close()


def test_one_shot_transcribe_finds_the_prompt_prefilled_under_the_lora(tmp_path: Path) -> None:
    """`llasm-assistant --file q.wav --transcribe` loads the engine with expect_transcribe: the shipped LoRA (run for
    --transcribe turns only) is on after load, so the turn prefills its own positions only and reads back what
    was heard."""
    from llasm.assistant.engine import Engine, GenerationOptions

    wav = speak("Please open the window.", tmp_path / "w.wav", "en-gb")
    opts = GenerationOptions(max_tokens=24)
    plain = Engine.load(None, n_threads=1, warmup=False, hearing={"mode": "adaptor"})
    try:
        unprimed = plain.ask(audio=load_audio(wav), transcribe=True, options=opts)
    finally:
        plain.close()
    eng = Engine.load(None, n_threads=1, expect_transcribe=True, hearing={"mode": "adaptor"})
    try:
        assert eng.lm.lora_on and not eng.answers_with_lora
        d = eng.ask(audio=load_audio(wav), transcribe=True, options=opts)
        assert d.timings["prefill_positions"] < d.timings["prompt_positions"]  # no system prompt again
        assert d.heard == unprimed.heard and d.answer == unprimed.answer  # ... and the same turn as without
        # the words it heard, read back; the end mark is the LoRA's own, so only the words are compared
        assert d.heard and normalize(d.answer) == normalize(d.heard), (d.heard, d.answer)
    finally:
        eng.close()


def test_typed_answers_do_not_depend_on_an_earlier_transcription(tmp_path: Path) -> None:
    """A `--transcribe` turn runs under the LoRA, so the plain-LLM turn after it prefills the conversation again.
    The system prompt's KV must come out as a new engine's: llama.cpp multiplies a batch of 64 rows or more with
    other kernels, so decoded together with the long transcription turn it differed, and `llasm-assistant
    evaluate` (one transcription, then the questions) got other typed answers ("a process called Rayleigh
    scattering" for "a phenomenon known as ...")."""
    from llasm.assistant.engine import Engine, GenerationOptions

    opts = GenerationOptions(max_tokens=24)
    questions = ["Why is the sky blue during the day?", "What color is grass?"]
    long = speak("Your daily dietary values may be higher or lower depending on your caloric needs, so ask your "
                 "doctor before you change what you eat.", tmp_path / "long.wav")
    eng = Engine.load(None, n_threads=1, hearing={"mode": "adaptor"})
    try:
        assert eng.lm.has_lora and not eng.answers_with_lora
        fresh = []
        for q in questions:
            eng.new_chat()
            fresh.append(eng.ask(text=q, options=opts).answer)
        eng.new_chat()
        tr = eng.ask(audio=load_audio(long), transcribe=True, options=GenerationOptions(max_tokens=96))
        assert tr.heard and eng.n_positions >= 64  # what the plain LLM prefilled again after it: a large batch
        after = []
        for q in questions:
            eng.new_chat()
            after.append(eng.ask(text=q, options=opts).answer)
        assert after == fresh
    finally:
        eng.close()


def test_cli_answers_a_file_with_the_default_bundle(tmp_path: Path) -> None:
    wav = speak("What is the capital of France?", tmp_path / "france.wav")
    cli = Path(sys.executable).with_name("llasm-assistant")
    r = subprocess.run([str(cli), "--file", str(wav), "--json", "--threads", "1", "--max-tokens", "24"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["answer"] and rec["ttft_ms"] > 0 and rec["audio_s"] > 1
    assert "capital" in normalize(rec["heard"]), rec


def test_the_default_bundle_hears_better_with_the_llm(tmp_path: Path) -> None:
    """Real models: the LLM's pick among the beam's transcripts hears eight questions better than the greedy
    path, or as well with a word it missed (on 576 held-out questions: docs/model-card.md). Which words greedy misses depends on the CPU's int8 and Q8_0 kernels ('whatever is the capital
    of France' on an AMD EPYC, 'nt off the light in the.' on a Xeon with AMX), so the test compares the sum, then
    checks each changed transcript."""
    from llasm.assistant.engine import Engine

    clips = [load_audio(speak(s, tmp_path / f"r{i}.wav")) for i, s in enumerate(RESCORED)]
    greedy = Engine.load(None, n_threads=1, warmup=False, hearing={"n_best": 1, "mode": "adaptor"})
    try:
        first = [greedy.encode_audio(a) for a in clips]
    finally:
        greedy.close()
    eng = Engine.load(None, n_threads=1, warmup=False, hearing={"n_best": 8, "mode": "adaptor"})
    try:
        picked = [eng.encode_audio(a) for a in clips]
        assert all("rescore_ms" in t for _, _, t in picked + first)  # greedy: the sentence's end only
        heard1, heard = [h or "" for _, h, _ in first], [h or "" for _, h, _ in picked]
        pairs = list(zip(heard1, heard, strict=True))
        assert wer(RESCORED, heard) <= wer(RESCORED, heard1), pairs  # no worse in sum (0.244 against 0.341) ...
        # ... and a missed word found ('Tell me ...' on a Xeon with AMX; '... of France?' on an AMD EPYC)
        assert any(wer([s], [h]) < wer([s], [h1]) for s, h1, h in zip(RESCORED, heard1, heard, strict=True)), pairs
        rows = eng.adaptor.token_embeddings
        for emb, h, _ in picked + first:  # the LLM reads each transcript as the tokenizer writes it
            assert np.array_equal(emb, rows[eng.lm.tokenize(h, special=False)])
            assert h[:1] == h[:1].upper()  # a sentence: capitalised (ctcbeam.sentence_forms)
        d = eng.ask(audio=clips[-1])
        assert d.heard == heard[-1]
    finally:
        eng.close()


def test_bench_reports_the_rescoring_time(tmp_path: Path) -> None:
    """`bench --n-best 8` times the LLM's pick among the beam's transcripts (and how the sentence ends) as its own
    stage; greedy, the LLM only picks the end, scoring 2 forms of one transcript instead of 8 + 2."""
    from llasm.assistant.bench import run_bench

    clips = tmp_path / "clips"
    clips.mkdir()
    speak("What is the capital of France?", clips / "france.wav")
    res = {n: run_bench(clips, out=tmp_path / f"nb{n}", max_tokens=2, threads=1, cascade=False,
                          hearing={"n_best": n, "mode": "adaptor"})
           for n in (1, 8)}
    assert res[8]["rows"][0]["rescore_ms"] > res[1]["rows"][0]["rescore_ms"] > 0
    assert res[8]["llasm"]["rescore_ms"]["median"] == res[8]["rows"][0]["rescore_ms"]
    # the first token waits for the rescoring in a one-shot answer
    assert res[8]["rows"][0]["ttft_ms"] > res[8]["rows"][0]["rescore_ms"]
    assert (tmp_path / "nb8" / "bench.png").stat().st_size > 10_000


def test_fusion_skips_utterances_longer_than_its_limit(tmp_path: Path) -> None:
    """The LLM joins the beam search for utterances up to `fusion_max_s` (its cost grows with the length); a
    longer one hears with the plain beam and the LLM's pick alone."""
    import dataclasses

    from llasm.assistant.engine import Engine

    clip = load_audio(speak("What is the capital of France?", tmp_path / "france.wav"))
    eng = Engine.load(None, n_threads=1, warmup=False, hearing={"n_best": 4, "fusion": 0.5, "mode": "adaptor"})
    try:
        asked: list[int] = []
        real = eng.ngram.logprobs
        eng.ngram.logprobs = lambda seqs: asked.append(len(seqs)) or real(seqs)
        eng.hearing = dataclasses.replace(eng.hearing, fusion_max_s=0.5)
        short_limit = eng.encode_audio(clip)[1]
        assert eng.lm._beam is None  # no beam LM made: no fusion ...
        assert asked and eng.hearing.ngram_fusion > 0  # ... the hearing n-gram stands in for it
        asked.clear()
        eng.hearing = dataclasses.replace(eng.hearing, fusion_max_s=10.0)
        fused = eng.encode_audio(clip)[1]
        assert eng.lm._beam is not None and eng.lm._beam.rows > 0 and not asked
        assert "capital" in normalize(fused) and "capital" in normalize(short_limit), (fused, short_limit)
    finally:
        eng.close()


LONG_QUESTION = "Hello! tell me a short story about a talking tree who wins a baking contest."


def test_hands_free_hears_a_long_question_with_the_ngram_in_the_beam(tmp_path: Path) -> None:
    """Hands-free, the LLM joins the beam search for utterances up to the default `fusion_max_s` only (4.5 s:
    hearing with it takes about 1 s for a 6 s question on 2 threads, past the 500 ms the VAD waits
    for the end of speech). Longer ones are heard by the beam with the hearing 4-gram and the LLM's pick, as
    one-shot: en-gb's 5.9 s template question letter for letter (with the LLM in the beam: the same, 11x the
    time), while a short question still has the LLM in the beam."""
    from llasm.assistant.handsfree import load_engine
    from llasm.assistant.settings import Settings

    eng = load_engine(Settings(threads=1, hearing="adaptor"))
    try:
        made: list[int] = []
        real = eng.lm.beam_lm
        eng.lm.beam_lm = lambda *a, **k: made.append(1) or real(*a, **k)  # type: ignore[method-assign]
        assert eng.hearing.fusion > 0 and eng.hearing.ngram_fusion > 0
        clip = load_audio(speak(LONG_QUESTION, tmp_path / "long.wav", "en-gb"))
        assert clip.shape[0] / 16000 > eng.hearing.fusion_max_s
        heard = eng.encode_audio(clip)[1]
        assert heard == LONG_QUESTION and not made, heard
        short = eng.encode_audio(load_audio(speak("How many legs does a spider have?", tmp_path / "s.wav", "en-gb")))
        assert made and "spider" in normalize(short[1]), short[1]
    finally:
        eng.close()


def test_the_hearing_ngram_keeps_a_trained_phrasing(tmp_path: Path) -> None:
    """One-shot, the shipped bundle's 4-gram of the stage-1 transcripts joins the beam search (weight 0.3,
    bundle.json): en-gb's "Who invented the airplane?" (a held-out text of a trained template) is heard word for
    word with it. Without it the head alone hears "You invented the airplane." on a Xeon with AMX and the right
    words on an AMD EPYC (the int8 kernels differ), so only the phrasing with the 4-gram is checked."""
    from llasm.assistant.engine import Engine

    clip = load_audio(speak("Who invented the airplane?", tmp_path / "airplane.wav", "en-gb"))
    eng = Engine.load(None, n_threads=1, warmup=False, hearing={"mode": "adaptor"})
    try:
        assert eng.hearing.n_best == 3 and eng.hearing.ngram_fusion == 0.3 and eng.ngram is not None
        assert eng.ngram.order == 4 and eng.hearing.fusion == 0
        heard = eng.encode_audio(clip)[1]
        eng.set_ngram_fusion(0)
        plain = eng.encode_audio(clip)[1]
    finally:
        eng.close()
    assert heard == "Who invented the airplane?", (heard, plain)


def test_cli_hears_with_fusion_when_asked(tmp_path: Path, bundle_factory) -> None:  # noqa: ANN001
    """`--fusion W --n-best N` reaches the engine from the command line; a bundle whose adaptor cannot take the
    LLM's help says so in one line."""
    from llasm.assistant.cli import EXIT_BAD_BUNDLE

    wav = speak("What is the capital of France?", tmp_path / "france.wav", "en-gb")
    cli = Path(sys.executable).with_name("llasm-assistant")
    r = subprocess.run([str(cli), "--file", str(wav), "--json", "--threads", "1", "--max-tokens", "4",
                        "--n-best", "4", "--fusion", "0.5", "--hearing", "adaptor"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert "capital" in normalize(rec["heard"]) and rec["rescore_ms"] > 0, rec
    r = subprocess.run([str(cli), "--bundle", str(bundle_factory()), "--text", "Hi", "--fusion", "0.5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == EXIT_BAD_BUNDLE and "fusion needs a ctc adaptor" in r.stderr.strip().splitlines()[-1]
    # the hearing n-gram's weight, likewise; a bundle without one says so in one line
    wav = speak("Who invented the airplane?", tmp_path / "airplane.wav", "en-gb")
    heard = {}
    for w in ("0", "0.3"):
        r = subprocess.run([str(cli), "--file", str(wav), "--json", "--threads", "1", "--max-tokens", "2",
                            "--ngram-fusion", w, "--hearing", "adaptor"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        heard[w] = json.loads(r.stdout.strip().splitlines()[-1])["heard"]
    assert heard["0.3"] == "Who invented the airplane?", heard  # without the 4-gram: CPU-dependent (see above)
    r = subprocess.run([str(cli), "--bundle", str(bundle_factory()), "--text", "Hi", "--ngram-fusion", "0.5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == EXIT_BAD_BUNDLE and "needs a bundle with a hearing n-gram" in \
        r.stderr.strip().splitlines()[-1]


def test_a_long_utterance_is_heard_in_pieces(tmp_path: Path) -> None:
    """Over `chunk_s` (7 s) the encoder hears the utterance in pieces cut at pauses: the head, trained on clips of
    a few seconds, misreads the encoder's later positions (10 s of joined training-voice questions:
    WER 0.39 whole, 0.09 in pieces). Each piece's first word comes back with its space."""
    import dataclasses

    from llasm.assistant.engine import Engine

    text = ("What is the capital of France? How do I bake bread at home? Tell me a joke about penguins. "
            "What should I pack for a week in Japan?")
    clip = load_audio(speak(text, tmp_path / "long.wav", voice="en-us+m3"))
    assert len(clip) > 9 * 16000
    eng = Engine.load(None, n_threads=1, warmup=False, hearing={"mode": "adaptor"})
    try:
        assert eng.hearing.chunk_s == 7.0
        pieces = eng.encode_audio(clip)[1]
        eng.hearing = dataclasses.replace(eng.hearing, chunk_s=0.0)
        whole = eng.encode_audio(clip)[1]
    finally:
        eng.close()
    # measured on a Xeon with AMX: in pieces WER 0.0 (whole: 0.14, "... pack for a week1.")
    assert wer([text], [pieces]) <= 0.1, pieces
    assert "japan" in normalize(pieces) and "penguins" in normalize(pieces)
    assert "?How" not in pieces and "? How" in pieces, pieces
    assert whole != pieces
