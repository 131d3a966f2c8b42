"""Tiny random base models and a synthetic dataset, for tests and smoke runs (seconds on a CPU).

    python -m llasm.training.tiny OUT_DIR     # OUT/whisper, OUT/llm, OUT/data/{train,eval}.jsonl, OUT/data/conv.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = ("red green blue one two three four five cat dog sun moon yes no hello world what is the "
         "capital of france paris tell me a joke please").split()


def make_tokenizer(out: Path) -> Path:
    from llasm.assistant.prompt import TRANSCRIBE_INSTRUCTIONS_EN, TRANSCRIBE_INSTRUCTIONS_ZH
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(WORDS)] * 4 + list(TRANSCRIBE_INSTRUCTIONS_EN) + list(TRANSCRIBE_INSTRUCTIONS_ZH) + [
        "system user assistant You are a tiny test assistant."]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(str(out))
    return out


def make_models(root: str | Path, *, d_model: int = 32, n_embd: int = 48, seed: int = 0) -> tuple[Path, Path]:
    """A random Whisper (80 mels) and a random LLaMA with a chat-template tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperModel

    root = Path(root)
    torch.manual_seed(seed)
    wdir, ldir = root / "whisper", root / "llm"
    wcfg = WhisperConfig(d_model=d_model, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                         vocab_size=100, max_source_positions=1500, max_target_positions=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    WhisperModel(wcfg).save_pretrained(str(wdir))
    tok_dir = make_tokenizer(ldir)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    lcfg = LlamaConfig(vocab_size=vocab, hidden_size=n_embd, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    LlamaForCausalLM(lcfg).save_pretrained(str(ldir))
    return wdir, ldir


def make_dataset(root: str | Path, n_train: int = 24, n_eval: int = 6, seed: int = 0) -> Path:
    """Tones whose pitch encodes a word: a learnable toy ASR task, plus a conversations manifest."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    d = Path(root) / "data"
    (d / "wav").mkdir(parents=True, exist_ok=True)
    words = WORDS[:8]

    def clip(i: int, n_words: int) -> tuple[str, str]:
        ws = [words[j] for j in rng.integers(0, len(words), n_words)]
        t = np.arange(int(0.25 * 16000)) / 16000
        sig = np.concatenate([0.3 * np.sin(2 * np.pi * (300 + 120 * words.index(w)) * t) for w in ws])
        name = f"wav/c{i:04d}.wav"
        sf.write(d / name, sig.astype(np.float32), 16000)
        return name, " ".join(ws)

    for split, n, off in (("train", n_train, 0), ("eval", n_eval, 10_000)):
        with (d / f"{split}.jsonl").open("w") as f:
            for i in range(n):
                name, text = clip(off + i, int(rng.integers(1, 4)))
                f.write(json.dumps({"audio": name, "text": text, "language": "en"}) + "\n")
    with (d / "conv.jsonl").open("w") as f:
        for i in range(n_train):
            q, text = clip(20_000 + i, 2)
            conv = [{"from": "human", "value": text, "audio": q}, {"from": "gpt", "value": f"You said {text}."}]
            if i % 2:
                conv += [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]
            f.write(json.dumps({"id": f"c{i}", "conversations": conv}) + "\n")
    return d


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny")
    print(make_models(out), make_dataset(out))
