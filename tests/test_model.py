"""training/model.py: torch adaptors equal the numpy reference; the encoder's padded batches are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from llasm.assistant.adaptor import Adaptor as NumpyAdaptor
from llasm.assistant.adaptor import AdaptorConfig
from llasm.training.model import Adaptor, ModelError, WhisperEncoderVL, mask_states


@pytest.mark.parametrize("cfg", [
    {"type": "linear", "stack": 3, "d_model": 8, "n_embd": 12},
    {"type": "ultravox", "stack": 4, "d_model": 8, "n_embd": 12, "hidden": 20},
    {"type": "ctc", "stack": 2, "d_model": 8, "n_embd": 12, "hidden": 16, "vocab_size": 30, "topk": 5},
])
def test_torch_adaptor_equals_numpy(cfg) -> None:
    torch.manual_seed(0)
    c = AdaptorConfig.from_dict(cfg)
    ad = Adaptor(c)
    with torch.no_grad():
        for p in ad.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    table = torch.randn(30, 12)
    ad.token_embeddings = table
    ref = NumpyAdaptor(c, {k: v.numpy() for k, v in ad.tensors().items()},
                       token_embeddings=table.numpy() if c.type == "ctc" else None)
    lens = torch.tensor([13, 7])
    states = torch.randn(2, 13, 8)
    states[1, 7:] = 99.0  # padding garbage must not leak into clip 1
    with torch.no_grad():
        out, heard = ad(states, lens)
    for i in range(2):
        want = ref.run(states[i, : lens[i]].numpy())
        assert out[i].shape == want.embeddings.shape
        np.testing.assert_allclose(out[i].numpy(), want.embeddings, rtol=1e-4, atol=1e-5)
        if c.type == "ctc":
            assert heard[i] == want.heard
            assert len(want.heard) > 0


def test_encoder_padded_batch_equals_each_clip() -> None:
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    w = WhisperModel(WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                   decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                   num_mel_bins=80, vocab_size=10, pad_token_id=0, bos_token_id=1,
                                   eos_token_id=2, decoder_start_token_id=1))
    enc = WhisperEncoderVL(w.get_encoder()).eval()
    a, b = torch.randn(80, 50), torch.randn(80, 31)
    feats = torch.zeros(2, 80, 50)
    feats[0], feats[1, :, :31] = a, b
    with torch.no_grad():
        batch, lens = enc(feats, torch.tensor([50, 31]))
        one_b, lb = enc(b[None], torch.tensor([31]))
        one_a, _ = enc(a[None], torch.tensor([50]))
    assert lens.tolist() == [25, 16] and lb.tolist() == [16]
    torch.testing.assert_close(batch[1, :16], one_b[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch[0], one_a[0], rtol=1e-4, atol=1e-5)
    # the real-length encoder equals HF's own encoder on the first frames of a full 30 s input
    full = torch.zeros(1, 80, 3000)
    full[0, :, :50] = a
    with torch.no_grad():
        hf = w.get_encoder()(full).last_hidden_state
        mine, _ = enc(full, torch.tensor([3000]))
    torch.testing.assert_close(mine, hf, rtol=1e-4, atol=1e-4)


def test_mask_states_masks_the_fraction_inside_each_clip() -> None:
    torch.manual_seed(0)
    states = torch.ones(3, 200, 64)
    lengths = torch.tensor([200, 120, 50])
    out = mask_states(states, lengths, 0.15)
    for i, n in enumerate(lengths.tolist()):
        frames = out[i, :n].abs().sum(-1) == 0
        assert 0 < int(frames.sum()) <= int(0.15 * n) + 1  # spans may overlap: at most the budget
        chans = out[i, :n].abs().sum(0) == 0
        assert int(chans.sum()) == int(0.15 * 64)
    torch.manual_seed(0)
    assert torch.equal(mask_states(states, lengths, 0.15), out)  # the global RNG decides: resumable
    with pytest.raises(ModelError, match="state_mask"):
        mask_states(states, lengths, 1.5)
