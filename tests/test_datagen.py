"""training.datagen: text sources, requests, augmentation, voice split, small builds and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from llasm.training.datagen import augment, everyday, general, prompts, text
from llasm.training.datagen.build import BuildOptions, DataGenError, build_asr, validate_clip
from llasm.training.datagen.conversations import build_instructions, parse_conversations
from llasm.training.datagen.schema import check_manifest
from llasm.training.datagen.tts import Voice, voices

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "Please turn off the lights in the kitchen.",
    "My sister moved to Lisbon last year.", "What time does the library open on Saturday?",
    "We planted twelve apple trees behind the house.", "Remind me to call the dentist tomorrow morning.",
    "The concert was cancelled because of the storm.", "How far is the nearest train station?",
    "He reads the newspaper every morning with his coffee.", "Set a timer for fifteen minutes.",
    "The children built a snowman in the garden.", "Can you recommend a good book about history?",
]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------------------------------
# text


def test_clean_sentence_keeps_natural_and_drops_junk() -> None:
    assert text.clean_sentence("  the cat sat on the mat.") is None  # no capital
    assert text.clean_sentence("The cat sat on the mat.") == "The cat sat on the mat."
    assert text.clean_sentence("\u201cLife is what happens while you are busy.\u201d") == "Life is what happens while you are busy."
    for junk in ("See http://example.com for more details.", "Use grep -v foo | wc -l to count lines.",
                 "THIS IS ALL SHOUTING AT YOU NOW.", "Too short.", "Xqzv blorp fnarg wibble zot quux.",
                 "An unbalanced (parenthesis is here.", "It costs 1234567 dollars to fix.",
                 "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty twentyone."):
        assert text.clean_sentence(junk) is None, junk


def test_dedupe_ignores_case_and_punctuation() -> None:
    assert text.dedupe(["Hello there, friend.", "hello there friend!", "Another one here."]) == [
        "Hello there, friend.", "Another one here."]


def test_templates_have_numbers_names_questions_commands() -> None:
    s = text.sentences_from_templates(500, seed=3)
    assert len(s) == len(set(s)) == 500
    assert sum(any(c.isdigit() for c in x) for x in s) > 150
    assert sum(x.endswith("?") for x in s) > 50
    assert sum(any(n in x for n in text.NAMES) for x in s) > 50
    assert text.sentences_from_templates(50, seed=3) == s[:50]


@pytest.mark.skipif(not text.FORTUNE_DIR.is_dir() or not text.WORDNET_DIR.is_dir(),
                    reason="Debian fortunes / wordnet-base not installed")
def test_debian_sources_give_20000_english_sentences() -> None:
    sources = text.english_sentences()
    total = sum(len(v) for v in sources.values())
    print({k: len(v) for k, v in sources.items()}, "total", total)
    assert total >= 20000
    keys = [text.norm_key(s) for v in sources.values() for s in v]
    assert len(keys) == len(set(keys))  # deduplicated across sources
    zh = text.chinese_sentences()
    print("chinese", len(zh))
    assert len(zh) > 1000 and all(text._HAN.search(s) for s in zh[:100])


# --------------------------------------------------------------------------------------------------
# requests


def test_requests_are_distinct_and_varied() -> None:
    reqs = prompts.generate_requests(5000, seed=0)
    firsts = [text.norm_key(r.turns[0]) for r in reqs]
    assert len(set(firsts)) == 5000
    assert {r.kind for r in reqs} == set(prompts.TEMPLATES)
    multi = sum(len(r.turns) == 2 for r in reqs)
    assert 0.2 * 5000 < multi < 0.4 * 5000
    assert all("{" not in t and "}" not in t for r in reqs for t in r.turns)
    assert prompts.generate_requests(20, seed=0)[0].turns == reqs[0].turns  # deterministic


def _held_out(first_turn: str) -> bool:
    """The held-out side of a spoken request, recomputed from its text: the split ignores the opener."""
    for opener in prompts.OPENERS:
        if first_turn.startswith(opener):
            first_turn = first_turn[len(opener):]
    return text.text_is_eval(first_turn)


def test_request_text_split_is_stable_and_ignores_the_opener() -> None:
    reqs = prompts.generate_requests(3000, seed=3)
    held = [r for r in reqs if r.held_out]
    assert 0.02 * 3000 < len(held) < 0.09 * 3000
    assert all(r.held_out == _held_out(r.turns[0]) for r in reqs)
    train = prompts.generate_requests(400, seed=3, split="train")
    evals = prompts.generate_requests(60, seed=5, split="eval")
    assert not any(r.held_out for r in train) and all(r.held_out for r in evals) and len(evals) == 60
    assert not {text.norm_key(r.core) for r in train} & {text.norm_key(r.core) for r in evals}
    assert len({text.norm_key(r.core) for r in evals}) == 60  # held out: 60 different questions
    with pytest.raises(ValueError, match="split must be"):
        prompts.generate_requests(1, split="test")


def _texts_sha256(reqs: list[prompts.Request]) -> str:
    return hashlib.sha256("\n".join("|".join(r.turns) for r in reqs).encode()).hexdigest()


def test_base_request_texts_are_pinned() -> None:
    """The recipe's question builds (seeds 21, 31, 41, 51, 61) must keep their texts when template sets are
    added: these digests are what the base set gave before the `everyday` set existed (commit 31e72e6)."""
    assert _texts_sha256(prompts.generate_requests(500, seed=0)) == (
        "f441639e158fb69258a78795b9d641538a606a6619b2882ab57c3bb074f28a4e")
    assert _texts_sha256(prompts.generate_requests(500, seed=61, split="train")) == (
        "8fc043e1892f11dd6b3072e51916bd1c3498752e0df3f7219692b7a484ca002a")


def test_everyday_requests_are_other_kinds_and_keep_the_text_split() -> None:
    reqs = prompts.generate_requests(3000, seed=71, templates="everyday")
    assert len({text.norm_key(r.turns[0]) for r in reqs}) == 3000
    assert {r.kind for r in reqs} == set(everyday.TEMPLATES) and not set(everyday.TEMPLATES) & set(prompts.TEMPLATES)
    assert all("{" not in t and "}" not in t for r in reqs for t in r.turns)
    assert all(r.held_out == _held_out(r.turns[0]) for r in reqs)
    assert 0.02 * 3000 < sum(r.held_out for r in reqs) < 0.09 * 3000
    # other phrasings: hardly any first turn is one the base set can say
    base = {text.norm_key(r.core) for r in prompts.generate_requests(5000, seed=0, multi_turn=0)}
    assert sum(text.norm_key(r.core) in base for r in reqs) < 30
    # after "Hello! " the request keeps its capital (the base set lowers it, and keeps doing so for its seeds)
    hello = [r.turns[0] for r in reqs if r.turns[0].startswith("Hello! ")]
    assert hello and all(t[7].isupper() for t in hello)
    assert prompts.generate_requests(20, seed=71, templates="everyday")[0].turns == reqs[0].turns
    assert prompts.count_distinct_requests("everyday") > 50_000
    train = prompts.generate_requests(500, seed=71, split="train", templates="everyday")
    assert not any(r.held_out for r in train)
    with pytest.raises(ValueError, match="templates must be one of base, everyday, general, not 'weather'"):
        prompts.generate_requests(1, templates="weather")


def test_general_requests_are_other_kinds_and_keep_the_text_split() -> None:
    reqs = prompts.generate_requests(3000, seed=81, templates="general")
    assert len({text.norm_key(r.turns[0]) for r in reqs}) == 3000
    assert {r.kind for r in reqs} == set(general.TEMPLATES)
    assert not set(general.TEMPLATES) & (set(prompts.TEMPLATES) | set(everyday.TEMPLATES))
    assert all("{" not in t and "}" not in t for r in reqs for t in r.turns)
    assert all(r.held_out == _held_out(r.turns[0]) for r in reqs)
    assert 0.02 * 3000 < sum(r.held_out for r in reqs) < 0.09 * 3000
    # other phrasings and words: hardly any first turn is one the base or everyday set can say
    others = {text.norm_key(r.core) for name, seed in (("base", 0), ("everyday", 71))
              for r in prompts.generate_requests(5000, seed=seed, multi_turn=0, templates=name)}
    assert sum(text.norm_key(r.core) in others for r in reqs) < 30
    hello = [r.turns[0] for r in reqs if r.turns[0].startswith("Hello! ")]
    assert hello and all(t[7].isupper() for t in hello)
    assert prompts.generate_requests(20, seed=81, templates="general")[0].turns == reqs[0].turns  # deterministic
    assert prompts.count_distinct_requests("general") > 50_000
    train = prompts.generate_requests(500, seed=81, split="train", templates="general")
    evals = prompts.generate_requests(60, seed=83, split="eval", templates="general")
    assert not any(r.held_out for r in train) and all(r.held_out for r in evals) and len(evals) == 60
    assert not {text.norm_key(r.core) for r in train} & {text.norm_key(r.core) for r in evals}
    assert len({text.norm_key(r.core) for r in evals}) == 60


def test_general_templates_fill_and_slot_lists_are_clean() -> None:
    """Every template fills without leftover braces, uses only its set's slots, and no slot list repeats a value;
    the set's slot names are its own (the other sets' seeds do not depend on them)."""
    import random
    import string

    slots = general.SLOTS
    assert not set(slots) & (set(prompts.SLOTS) | set(everyday.SLOTS))
    for name, values in slots.items():
        assert len(values) >= 2 and len(values) == len(set(values)), name
        assert all(v == v.strip() and v and "{" not in v and "}" not in v for v in values), name
    templates = [t for group in general.TEMPLATES.values() for t in group]
    assert 250 <= len(templates) == len(set(templates)) and 10 <= len(general.TEMPLATES) <= 12
    used = set()
    rng = random.Random(0)
    for t in templates:
        fields = {f for _, f, _, _ in string.Formatter().parse(t) if f}
        names = {f[:-1] if f.endswith("2") and f[:-1] in slots else f for f in fields}
        assert names <= set(slots), (t, names - set(slots))
        used |= names
        for _ in range(5):
            filled, _values = prompts._fill(t, rng, slots, False)
            assert "{" not in filled and "}" not in filled and filled[0].isupper(), filled
            assert 3 <= len(filled.split()) <= 20 and filled[-1] in ".?!", filled
    assert used == set(slots)  # no unused slot list


# --------------------------------------------------------------------------------------------------
# augmentation and voices


def sine(seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(16000 * seconds)) / 16000)).astype(np.float32)


def test_effects() -> None:
    rng = np.random.default_rng(0)
    x = sine()
    assert len(augment.speed(x, 1.1)) == pytest.approx(16000 / 1.1, abs=2)
    assert np.abs(augment.gain(x, -6)).max() == pytest.approx(0.5 * 10 ** (-6 / 20), rel=1e-3)
    noisy = augment.add_noise(x, "pink", 10.0, rng)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
    assert snr == pytest.approx(10.0, abs=0.1)
    wet = augment.reverb(x, 0.5, 0.5, rng)
    assert len(wet) == len(x) + 8000 - 1 and np.abs(wet[-2000:]).max() < np.abs(wet[16000:17000]).max()
    low, mid = sine(1.0, 60.0), sine(1.0, 1000.0)
    phone = lambda s: np.sqrt(np.mean(augment.band(s, 300, 3400) ** 2))  # noqa: E731
    assert phone(low) < 0.1 * phone(mid)
    assert len(augment.silence(x, 0.25, 0.5)) == 16000 + 4000 + 8000
    for color in ("white", "pink", "brown", "hum"):
        n = augment.colored_noise(4000, color, rng)
        assert n.shape == (4000,) and np.isfinite(n).all()


def test_train_and_eval_augmentations_are_disjoint() -> None:
    rng = np.random.default_rng(1)
    train = {augment.plan_augmentation(rng, "train").name for _ in range(2000)}
    evals = {augment.plan_augmentation(rng, "eval").name for _ in range(2000)}
    assert len(train) > 20 and len(evals) > 10
    assert not train & evals
    out = augment.apply(sine(), augment.plan_augmentation(rng, "eval"), rng)
    assert np.abs(out).max() <= 0.98 + 1e-6


def test_eval_acoustics_matched_and_clean() -> None:
    rng = np.random.default_rng(2)
    train = {augment.plan_augmentation(rng, "train").name for _ in range(2000)}
    matched = {augment.plan_augmentation(rng, "eval", eval_acoustics="matched").name for _ in range(2000)}
    assert len(matched) > 20 and matched <= train  # the rooms, microphones and noises training knows
    clean = {augment.plan_augmentation(rng, "eval", eval_acoustics="clean").name for _ in range(50)}
    assert clean == {"silence"}
    # training clips do not depend on it
    a = [augment.plan_augmentation(np.random.default_rng([3, i]), "train").name for i in range(50)]
    b = [augment.plan_augmentation(np.random.default_rng([3, i]), "train", eval_acoustics="clean").name
         for i in range(50)]
    assert a == b
    with pytest.raises(ValueError, match="eval acoustics"):
        augment.plan_augmentation(rng, "eval", eval_acoustics="studio")


def test_voice_split_is_disjoint() -> None:
    vs = voices(("espeak", "hibari"), "en")
    train = {v.id for v in vs if not v.held_out}
    held = {v.id for v in vs if v.held_out}
    assert train and held and not train & held
    assert "hibari:heart" in train
    accents = lambda ids: {i.split(":")[1].split("+")[0] for i in ids if i.startswith("espeak")}  # noqa: E731
    variants = lambda ids: {i.split("+")[1] for i in ids if "+" in i}  # noqa: E731
    assert not (accents(train) & {"en-029", "en-gb-x-gbcwmd"}) and not (variants(train) & {"f5", "Annie"})
    assert Voice.parse("espeak:cmn+f2").language == "zh"
    with pytest.raises(RuntimeError, match="unknown voice"):
        Voice.parse("festival:kal")


def test_wide_voice_set_adds_training_voices_and_keeps_the_held_out_ones_out() -> None:
    base, wide = voices(("espeak",), "en"), voices(("espeak",), "en", "wide")
    base_train = {v.id for v in base if not v.held_out}
    wide_train = {v.id for v in wide if not v.held_out}
    assert base_train < wide_train and len(wide_train) >= 3 * len(base_train)
    # every held-out voice of the base set is still held out, and no wide training voice uses a held-out part
    assert {v.id for v in base if v.held_out} <= {v.id for v in wide if v.held_out}
    assert not any(i.split(":")[1].split("+")[0] in ("en-029", "en-gb-x-gbcwmd") for i in wide_train)
    assert not any(i.split("+")[1] in ("f5", "m7", "Annie", "Mike", "klatt3") for i in wide_train)
    assert all(" " not in i for i in wide_train)  # voice ids go into manifests and command lines
    with pytest.raises(RuntimeError, match="unknown voice set"):
        voices(("espeak",), "en", "huge")


@needs_espeak
def test_wide_voice_set_build_uses_the_new_variants(tmp_path: Path) -> None:
    from llasm.training.datagen.tts import ESPEAK_VARIANTS

    opts = BuildOptions(seed=5, eval_fraction=0.0, backends=("espeak",), workers=1, progress=False,
                        voice_set="wide")
    build_asr(tmp_path / "w", 12, opts, english=SENTENCES * 2)
    used = {r["voice"].split("+")[1] for r in rows(tmp_path / "w" / "train.jsonl")}
    assert used - set(ESPEAK_VARIANTS), used  # 12 clips from 82 variants: almost surely some new ones
    assert json.loads((tmp_path / "w" / "meta.json").read_text())["plan"]["voice_set"] == "wide"
    with pytest.raises(DataGenError, match="different settings"):  # a base build cannot resume it
        build_asr(tmp_path / "w", 12, BuildOptions(seed=5, eval_fraction=0.0, backends=("espeak",), workers=1,
                                                  progress=False), english=SENTENCES * 2)


@needs_espeak
def test_spoken_questions_from_the_command_line_with_the_wide_voice_set(tmp_path: Path) -> None:
    from llasm.training.cli import app
    from llasm.training.datagen.tts import ESPEAK_VARIANTS
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["data", "instructions", "--out", str(tmp_path / "q"), "--count", "12",
                                   "--eval-fraction", "0", "--multi-turn", "0", "--no-replies", "--tts", "espeak",
                                   "--voice-set", "wide", "--workers", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    convs = rows(tmp_path / "q" / "train.jsonl")
    assert len(convs) == 12 and all(len(c["conversations"]) == 1 for c in convs)
    used = {c["conversations"][0]["voice"].split("+")[1] for c in convs}
    assert used - set(ESPEAK_VARIANTS), used  # 12 clips from 82 variants: almost surely some new ones
    plan = json.loads((tmp_path / "q" / "meta.json").read_text())["plan"]
    assert plan["voice_set"] == "wide" and plan["reply_generation"] is None
    assert "templates" not in plan  # base-set builds from before template sets existed still resume


@needs_espeak
@pytest.mark.parametrize("templates,seed,count,other", [("everyday", 71, 6, "base"), ("general", 81, 4, "everyday")])
def test_template_sets_from_the_command_line(tmp_path: Path, templates: str, seed: int, count: int,
                                             other: str) -> None:
    from llasm.training.cli import app
    from typer.testing import CliRunner

    args = ["data", "instructions", "--out", str(tmp_path / "q"), "--count", str(count), "--eval-fraction", "0",
            "--multi-turn", "0", "--no-replies", "--tts", "espeak", "--workers", "1", "--quiet", "--seed", str(seed)]
    res = CliRunner().invoke(app, [*args, "--templates", templates])
    assert res.exit_code == 0, res.output
    said = [c["conversations"][0]["value"] for c in rows(tmp_path / "q" / "train.jsonl")]
    assert said == [r.turns[0] for r in prompts.generate_requests(count, seed=seed, split="train", multi_turn=0,
                                                                     templates=templates)]
    assert json.loads((tmp_path / "q" / "meta.json").read_text())["plan"]["templates"] == templates
    res = CliRunner().invoke(app, [*args, "--templates", other])  # another set cannot resume the build
    assert res.exit_code == 1 and "different settings" in res.output, res.output


def test_convert_speaks_the_free_form_questions_with_held_out_voices_and_chosen_acoustics(tmp_path: Path) -> None:
    """`data convert --eval-acoustics clean` on the repository's out-of-template evaluation questions
    (docs/model-card/free-questions.jsonl): held-out voices, no room, microphone or noise."""
    from llasm.training.cli import app
    from llasm.training.datagen.tts import Voice
    from typer.testing import CliRunner

    src = Path(__file__).resolve().parents[1] / "docs" / "model-card" / "free-questions.jsonl"
    res = CliRunner().invoke(app, ["data", "convert", str(src), "--out", str(tmp_path / "f"), "--limit", "8",
                                   "--eval-fraction", "0.9", "--eval-acoustics", "clean", "--tts", "espeak",
                                   "--workers", "1", "--quiet", "--seed", "8"])
    assert res.exit_code == 0, res.output
    ev = rows(tmp_path / "f" / "eval.jsonl")
    assert ev and all(c["conversations"][0]["aug"] == "silence" for c in ev)
    assert all(Voice.parse(c["conversations"][0]["voice"]).held_out for c in ev)
    texts = {json.loads(line)["instruction"] for line in src.read_text().splitlines()}
    assert {c["conversations"][0]["value"] for c in ev} <= texts


def test_validate_clip() -> None:
    assert validate_clip(np.zeros(16000, np.float32)).startswith("peak")
    assert "duration" in validate_clip(sine(0.1))
    assert "clips" in validate_clip(np.ones(16000, np.float32))
    quiet_blip = np.zeros(32000, np.float32)
    quiet_blip[:800] = sine(0.05)
    assert "silent" in validate_clip(quiet_blip)
    assert validate_clip(sine()) == ""


# --------------------------------------------------------------------------------------------------
# builds


@needs_espeak
def test_small_asr_build_resume_and_split(tmp_path: Path) -> None:
    out = tmp_path / "asr"
    opts = BuildOptions(seed=3, eval_fraction=0.25, backends=("espeak",), workers=2, progress=False)
    summary = build_asr(out, 20, opts, english=SENTENCES * 3)
    train, evals = rows(out / "train.jsonl"), rows(out / "eval.jsonl")
    assert len(train) + len(evals) + summary["rejected"] == 20 and len(evals) >= 1
    assert check_manifest(out / "train.jsonl") == [] and check_manifest(out / "eval.jsonl") == []
    for r in train + evals:
        info = sf.info(str(out / r["audio"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert r["text"] in SENTENCES and r["language"] == "en"
    assert not {r["voice"] for r in train} & {r["voice"] for r in evals}
    assert not {r["aug"] for r in train} & {r["aug"] for r in evals}
    assert not {r["text"] for r in train} & {r["text"] for r in evals}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["summary"]["splits"]["train"]["clips"] == len(train) and meta["plan"]["seed"] == 3
    # resume: nothing is rendered again and the manifests are identical
    before = (out / "train.jsonl").read_text()
    again = build_asr(out, 20, opts, english=SENTENCES * 3)
    assert again["rendered_now"] == 0 and (out / "train.jsonl").read_text() == before
    # a larger count extends the same plan
    more = build_asr(out, 24, opts, english=SENTENCES * 3)
    assert more["rendered_now"] == 4 and (out / "train.jsonl").read_text().startswith(before[:200])
    # other settings in the same directory are refused
    with pytest.raises(DataGenError, match="different settings"):
        build_asr(out, 20, BuildOptions(seed=4, backends=("espeak",), progress=False), english=SENTENCES)


class FakeReplier:
    def __init__(self) -> None:
        self.calls: list[list[dict[str, str]]] = []

    def __call__(self, history: list[dict[str, str]]) -> str:
        self.calls.append([dict(m) for m in history])
        return f"Answer number {len(self.calls)}."


@needs_espeak
def test_instructions_build_with_fake_replier(tmp_path: Path) -> None:
    fake = FakeReplier()
    opts = BuildOptions(seed=0, eval_fraction=0.2, backends=("espeak",), workers=1, progress=False)
    summary = build_instructions(tmp_path / "inst", 5, opts, multi_turn=1.0, replier=fake)
    convs = rows(tmp_path / "inst" / "train.jsonl") + rows(tmp_path / "inst" / "eval.jsonl")
    assert len(convs) == 5 and summary["conversations"]["train"] + summary["conversations"]["eval"] == 5
    assert check_manifest(tmp_path / "inst" / "train.jsonl") == []
    for c in convs:
        turns = c["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]
        assert all("audio" in t for t in turns[::2]) and turns[1]["value"].startswith("Answer number")
    assert len(fake.calls) == 10 and len(fake.calls[1]) == 3  # the follow-up sees the first exchange
    # held-out conversations ask only held-out questions, training ones never do
    for split in ("train", "eval"):
        firsts = [c["conversations"][0]["value"] for c in rows(tmp_path / "inst" / f"{split}.jsonl")]
        assert all(_held_out(t) == (split == "eval") for t in firsts), (split, firsts)
    # replies are cached: a rerun does not ask again
    build_instructions(tmp_path / "inst", 5, opts, multi_turn=1.0, replier=fake)
    assert len(fake.calls) == 10
    # ... but only for the same question: a cached reply to another question is asked again
    cache = tmp_path / "inst" / "replies.jsonl"
    first = json.loads(cache.read_text().splitlines()[0])
    cache.write_text(json.dumps(first | {"turns": ["Something else?", "And?"]}) + "\n"
                     + "\n".join(cache.read_text().splitlines()[1:]) + "\n")
    build_instructions(tmp_path / "inst", 5, opts, multi_turn=1.0, replier=fake)
    assert len(fake.calls) == 12


@needs_espeak
def test_instructions_without_replies_speak_the_requests_only(tmp_path: Path) -> None:
    from llasm.training.data import DataError
    from llasm.training.datagen.mix import build_mix

    fake = FakeReplier()
    opts = BuildOptions(seed=1, eval_fraction=0.0, backends=("espeak",), workers=1, progress=False)
    build_instructions(tmp_path / "q", 4, opts, multi_turn=0.0, replier=fake, replies=False)
    convs = rows(tmp_path / "q" / "train.jsonl")
    assert fake.calls == [] and len(convs) == 4
    assert all([t["from"] for t in c["conversations"]] == ["human"] and "audio" in c["conversations"][0]
               for c in convs)
    assert check_manifest(tmp_path / "q" / "train.jsonl") == []
    # stage 2 needs replies: the mix refuses such conversations in one line
    with pytest.raises(DataError, match="without replies"):
        build_mix(tmp_path / "mix.jsonl", asr=str(tmp_path / "q" / "train.jsonl"),
                  conversations=str(tmp_path / "q" / "train.jsonl"), asr_count=None, system_prompt="Be brief.",
                  transcribe_instruction="Repeat it.")


def test_parse_conversations(tmp_path: Path) -> None:
    data = [
        {"id": "a1", "conversations": [{"from": "human", "value": "<image>\nWhat is the tallest mountain?"},
                                        {"from": "gpt", "value": "Mount Everest."},
                                        {"from": "human", "value": "Fix this code: ```def f(): pass```"},
                                        {"from": "gpt", "value": "Looks fine."}]},
        {"id": "a2", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"},
                                  {"role": "assistant", "content": "Hello!"}]},
        {"instruction": "Name three colors.", "input": "", "output": "Red, green and blue."},
        {"conversations": [{"from": "gpt", "value": "I start the talk, which is malformed."}]},
        "not a record",
    ]
    (tmp_path / "d.json").write_text(json.dumps(data))
    convs, stats = parse_conversations(tmp_path / "d.json")
    assert [c.id for c in convs] == ["a1", "a2", "conv000002"]
    assert convs[0].turns[0]["value"] == "What is the tallest mountain?" and convs[0].turns[2]["speak"] == "0"
    assert [t["from"] for t in convs[1].turns] == ["human", "gpt"]
    assert stats == {"records": 5, "skipped_malformed": 2, "typed_turns": 1, "spoken_turns": 3}
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(d) for d in data[:3]))
    assert len(parse_conversations(tmp_path / "d.jsonl")[0]) == 3


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    from llasm.training.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    cases = [
        ["data", "asr", "--out", str(tmp_path / "x"), "--count", "5", "--tts", "festival"],
        ["data", "asr", "--out", str(tmp_path / "x"), "--count", "0"],
        ["data", "asr", "--out", str(tmp_path / "x"), "--count", "5", "--voice-set", "huge"],
        ["data", "instructions", "--out", str(tmp_path / "x"), "--count", "5", "--templates", "weather"],
        ["data", "convert", str(tmp_path / "missing.json"), "--out", str(tmp_path / "y")],
    ]
    (tmp_path / "empty.json").write_text("")
    cases.append(["data", "convert", str(tmp_path / "empty.json"), "--out", str(tmp_path / "z")])
    for args in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 1, (args, res.output)
        err = res.stderr if hasattr(res, "stderr") else res.output
        assert err.startswith("llasm-train data: ") and err.count("\n") == 1, err
        assert "Traceback" not in res.output


def test_mix_writes_transcribe_requests_and_questions_in_the_bundle_prompt(tmp_path: Path) -> None:
    from llasm.training.data import DataError, read_manifest
    from llasm.training.datagen.mix import build_mix

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    for i in range(4):
        sf.write(src / "a" / f"{i}.wav", np.zeros(8000, np.float32), 16000)
    (src / "asr.jsonl").write_text("".join(json.dumps({"audio": f"a/{i}.wav", "text": f"sentence {i}"}) + "\n"
                                           for i in range(3)))
    (src / "conv.jsonl").write_text(json.dumps({"id": "q", "conversations": [
        {"from": "human", "value": "why?", "audio": "a/3.wav"}, {"from": "gpt", "value": "because"}]}) + "\n")
    out = tmp_path / "mix" / "train.jsonl"
    n = build_mix(out, asr=str(src / "asr.jsonl"), conversations=str(src / "conv.jsonl"), asr_count=2,
                  system_prompt="Be brief.", transcribe_instruction="Repeat it.", seed=3)
    assert n == {"transcribe": 2, "questions": 1}
    exs = read_manifest(out).examples  # paths are relative to the mix and resolve to the original clips
    assert len(exs) == 3 and all(c.resolve().parent == (src / "a").resolve() for e in exs for c in e.clips)
    for e in exs:
        assert e.turns[0] == {"from": "system", "value": "Be brief."}
        if e.id.startswith("asr-"):
            human, gpt = e.turns[1], e.turns[2]
            assert human["instruction"] == "Repeat it." and gpt["value"] == human["value"].strip()
        else:
            assert e.turns[1]["value"] == "why?" and e.turns[2]["value"] == "because"
    # the same seed draws the same clips in the same order
    again = tmp_path / "again.jsonl"
    build_mix(again, asr=str(src / "asr.jsonl"), conversations=str(src / "conv.jsonl"), asr_count=2,
              system_prompt="Be brief.", transcribe_instruction="Repeat it.", seed=3)
    assert [json.loads(x)["id"] for x in again.read_text().splitlines()] == [e.id for e in exs]
    with pytest.raises(DataError, match=r"\.jsonl"):
        build_mix(tmp_path / "mix.txt", asr=str(src / "asr.jsonl"), conversations=None, asr_count=None,
                  system_prompt="", transcribe_instruction="Repeat it.")
    with pytest.raises(DataError, match="no ASR clips"):
        build_mix(tmp_path / "m.jsonl", asr=str(src / "conv.jsonl"), conversations=None, asr_count=None,
                  system_prompt="", transcribe_instruction="Repeat it.")


# --------------------------------------------------------------------------------------------------
# generated accents and speakers (--voice-set random)


def test_random_voice_set_adds_generated_accents_and_speakers_and_keeps_the_held_out_ones_out() -> None:
    from llasm.training.datagen.accents import RANDOM_ACCENTS, SOURCE_ACCENTS, random_accent
    from llasm.training.datagen.tts import EVAL_ACCENTS, EVAL_VARIANTS, RANDOM_VARIANTS

    wide, rand = voices(("espeak",), "en", "wide"), voices(("espeak",), "en", "random")
    assert {v.id for v in wide} < {v.id for v in rand}
    train = [v for v in rand if not v.held_out]
    parts = [v.name.partition("+") for v in train]
    assert {a for a, _, _ in parts} >= {f"xa{i:03d}" for i in range(RANDOM_ACCENTS)}
    assert {b for _, _, b in parts} >= {f"rv{i:03d}" for i in range(RANDOM_VARIANTS)}
    assert not {a for a, _, _ in parts} & set(EVAL_ACCENTS) and not {b for _, _, b in parts} & set(EVAL_VARIANTS)
    assert all(" " not in v.id for v in train)
    # a generated accent reads and speaks with training accents only, never a held-out one
    accents = [random_accent(i) for i in range(RANDOM_ACCENTS)]
    assert {a.rules for a in accents} | {a.table for a in accents} <= set(SOURCE_ACCENTS)
    assert not set(SOURCE_ACCENTS) & set(EVAL_ACCENTS)
    assert len({(a.rules, a.table, a.subs) for a in accents}) == RANDOM_ACCENTS  # all different
    assert random_accent(7) == random_accent(7)
    with pytest.raises(ValueError, match="0-999"):
        random_accent(1000)
    # Mandarin keeps its own accent; generated speakers only
    zh = voices(("espeak",), "zh", "random")
    assert all(v.name.startswith("cmn+") for v in zh)


def test_a_generated_accent_rewrites_phonemes_consistently() -> None:
    from llasm.training.datagen.accents import Accent, phoneme_input

    th = Accent(0, "en-us", "en-gb", (("D", "d"), ("T", "t"), ("h", "")), drop_final_stop=True,
                devoice_final_z=True)
    # "Think about the heavy rain" / "his hand": TH-stopping, h-dropping, final z devoiced, final d after n dropped
    assert th.rewrite("T'INk a#b,aUt D@2 h'Evi r'eIn") == "t'INk a#b,aUt d@2 'Evi r'eIn"
    assert th.rewrite("h'Iz h'and") == "'Is 'an"
    # multi-letter phonemes are one token: "tS" (church) is not t + S, "aI" is not a + I
    plain = Accent(1, "en-us", "en-us", (("a", "E"), ("t", "t")), False, False)
    assert plain.rewrite("tS'3:tS m'aI k'at") == "tS'3:tS m'aI k'Et"
    # each clause keeps its punctuation, so a question still rises; clauses that do not line up: one phrase
    assert phoneme_input(plain, "Hey, what is it?", ["h'eI", "w,Vt Iz It"]) == "[[h'eI]], [[w,Vt Iz It]]?"
    assert phoneme_input(plain, "Hey, what is it?", ["h'eI w,Vt Iz It"]) == "[[h'eI w,Vt Iz It]]?"
    assert phoneme_input(plain, "Set a timer", ["s'Et a# t'aIm3"]) == "[[s'Et a# t'aIm3]]."


def test_generated_speakers_are_fixed_draws() -> None:
    from llasm.training.datagen.tts import TtsError, random_variant

    a, b = random_variant(3), random_variant(4)
    assert a == random_variant(3) and a != b
    assert a.startswith("language variant\nname rv003\n") and a.count("\nformant ") == 9
    assert "klatt 3" not in "".join(random_variant(i) for i in range(300))  # the held-out variant's synthesizer
    with pytest.raises(TtsError, match="0-999"):
        random_variant(-1)


@needs_espeak
def test_generated_accents_and_speakers_sound_different(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llasm.training.datagen import tts
    from llasm.training.datagen.accents import random_accent

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tts.espeak_data_dir.cache_clear()
    try:
        root = tts.espeak_data_dir()
        assert root.is_relative_to(tmp_path) and (root / "espeak-ng-data" / "voices" / "!v" / "rv299").is_file()
        say = "What is the capital of France?"
        plain, _ = tts.synthesize(Voice.parse("espeak:en-us"), say)
        speaker, _ = tts.synthesize(Voice.parse("espeak:en-us+rv002"), say)
        # espeak-ng speaks an unknown variant as the plain accent: a generated speaker must not be that
        assert len(speaker) != len(plain) or not np.allclose(speaker, plain)
        accent = random_accent(4)  # rules en-gb-scotland, table en-gb-x-rp, TH-stopping among others
        heard, _ = tts.synthesize(Voice.parse("espeak:xa004"), say)
        table, _ = tts.synthesize(Voice.parse(f"espeak:{accent.table}"), say)
        assert len(heard) != len(table) or not np.allclose(heard, table)
        assert 0.5 < len(heard) / len(table) < 2.0  # the same sentence, not noise or silence
        # a folder whose generated speakers espeak-ng does not list is refused, not used
        with pytest.raises(tts.TtsError, match="lists 0 of the 300"):
            tts._check_variants(tmp_path)
    finally:
        tts.espeak_data_dir.cache_clear()


def test_foreign_voice_set_adds_foreign_accents_from_training_rules_only() -> None:
    from llasm.training.datagen.accents import FOREIGN_ACCENTS, foreign_accent
    from llasm.training.datagen.tts import EVAL_ACCENTS

    rand, foreign = voices(("espeak",), "en", "random"), voices(("espeak",), "en", "foreign")
    assert {v.id for v in rand} < {v.id for v in foreign}
    train = {v.name.partition("+")[0] for v in foreign if not v.held_out}
    assert train >= {f"xf{i:03d}" for i in range(FOREIGN_ACCENTS)} and not train & set(EVAL_ACCENTS)
    assert all(v.name.startswith("cmn+") for v in voices(("espeak",), "zh", "foreign"))
    with pytest.raises(ValueError, match="0-999"):
        foreign_accent(-1)


@needs_espeak
def test_foreign_accents_say_only_vowels_their_tables_have() -> None:
    from llasm.training.datagen.accents import (
        _VOWEL_CHAINS,
        FOREIGN_ACCENTS,
        FOREIGN_TABLES,
        SOURCE_ACCENTS,
        foreign_accent,
        known_vowels,
    )

    accents = [foreign_accent(i) for i in range(FOREIGN_ACCENTS)]
    assert {a.rules for a in accents} <= set(SOURCE_ACCENTS) and {a.table for a in accents} == set(FOREIGN_TABLES)
    assert foreign_accent(5) == foreign_accent(5) and len({a.subs for a in accents}) == FOREIGN_ACCENTS
    # espeak-ng drops a vowel its table lacks: every English vowel must become one the table has
    assert "V" not in known_vowels("es") and {"a", "e", "i", "o", "u"} <= known_vowels("es")
    for a in accents:
        known, subs = known_vowels(a.table), dict(a.subs)
        for vowel, chain in _VOWEL_CHAINS.items():
            said = subs.get(vowel, vowel)
            assert said in chain and said in known, (a.index, vowel, said)
    # Spanish has no schwa-like V: "cut" keeps a vowel in a Spanish-table accent
    es = next(a for a in accents if a.table == "es")
    assert "V" not in es.rewrite("k'Vt") and len(es.rewrite("k'Vt")) == 4


@needs_espeak
def test_a_foreign_accent_speaks_the_sentence_in_its_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llasm.training.datagen import tts
    from llasm.training.datagen.accents import foreign_accent

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tts.espeak_data_dir.cache_clear()
    try:
        say = "What is the capital of France?"
        accent = foreign_accent(2)
        heard, _ = tts.synthesize(Voice.parse("espeak:xf002+rv010"), say)  # a generated speaker too
        plain, _ = tts.synthesize(Voice.parse(f"espeak:{accent.rules}+rv010"), say)
        assert len(heard) != len(plain) or not np.allclose(heard, plain)
        assert 0.5 < len(heard) / len(plain) < 2.0  # the same sentence, not noise or silence
    finally:
        tts.espeak_data_dir.cache_clear()


@needs_espeak
@pytest.mark.parametrize(("voice_set", "seed", "generated"), [("random", 5, (":xa", "+rv")), ("foreign", 6, (":xf",))])
def test_generated_voice_set_build(tmp_path: Path, voice_set: str, seed: int, generated: tuple[str, ...]) -> None:
    opts = BuildOptions(seed=seed, eval_fraction=0.0, backends=("espeak",), workers=1, progress=False,
                        voice_set=voice_set)
    build_asr(tmp_path / "r", 12, opts, english=SENTENCES * 2)
    used = [r["voice"] for r in rows(tmp_path / "r" / "train.jsonl")]
    assert len(used) == 12 and any(g in v for v in used for g in generated), used
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["plan"]["voice_set"] == voice_set
