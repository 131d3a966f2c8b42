"""Whisper encoder + ultravox projector -> llama.cpp mmproj GGUF (`clip.projector_type = ultravox`).

Stock llama.cpp tools (`llama-mtmd-cli`, `llama-server --mmproj`) can then run a llasm model that uses the
`ultravox` adaptor. Names and keys follow llama.cpp's own converter (vendored in llama-cpp-python 0.3.36:
`conversion/ultravox.py` and `base.py` MmprojModel, loaded by `tools/mtmd/clip.cpp`): the encoder as
`a.conv1d.{1,2}`, `a.position_embd`, `a.blk.N.{attn_q,attn_k,attn_v,attn_out,ln1,ln2,ffn_up,ffn_down}`,
`a.post_ln`; the projector as `mm.a.norm_pre`, `mm.a.mlp.1`, `mm.a.norm_mid`, `mm.a.mlp.2` (docs/adaptors.md).

Cost: mtmd cuts audio into 30-s chunks and encodes each padded to 30 s (3000 mel frames -> 1500 states ->
1500/stack LLM positions), whereas the llasm runtime encodes the real length; for a 3-s question that is
about ten times the encoder work and 1500/8 = 188 audio positions instead of ~19 to prefill.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
from llasm.assistant.adaptor import AdaptorConfig
from llasm.export.errors import ExportError

_PROJECTOR = {  # adaptor.safetensors name -> Ultravox HF name (the converter's input names)
    "ln_pre.weight": "audio.multi_modal_projector.ln_pre.weight",
    "linear_1.weight": "audio.multi_modal_projector.linear_1.weight",
    "ln_mid.weight": "audio.multi_modal_projector.ln_mid.weight",
    "linear_2.weight": "audio.multi_modal_projector.linear_2.weight",
}


def write_ultravox_mmproj(out_path: str | os.PathLike[str], whisper_dir: str | os.PathLike[str],
                          adaptor: AdaptorConfig, adaptor_tensors: dict[str, np.ndarray]) -> Path:
    """Write `mmproj.gguf` for a checkpoint whose adaptor type is `ultravox`."""
    from llasm.export.encoder import load_hf_encoder

    if adaptor.type != "ultravox":
        raise ExportError(f"an mmproj exists only for the ultravox adaptor, not {adaptor.type!r}")
    enc = load_hf_encoder(whisper_dir)
    cfg = enc.config
    if int(cfg.d_model) != adaptor.d_model:
        raise ExportError(f"the encoder in {whisper_dir} has d_model {cfg.d_model}, the adaptor expects {adaptor.d_model}")
    n_layer = int(cfg.encoder_layers)
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, max(n_layer, 3))  # conv1d.{1,2} use block ids
    w = gguf.GGUFWriter(str(out_path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])
    try:
        w.add_type(gguf.GGUFType.MMPROJ)
        w.add_name("llasm ultravox mmproj")
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        w.add_clip_has_audio_encoder(True)
        w.add_clip_projector_type(gguf.VisionProjectorType.ULTRAVOX)
        w.add_audio_projection_dim(adaptor.n_embd)
        w.add_audio_embedding_length(int(cfg.d_model))
        w.add_audio_feed_forward_length(int(cfg.encoder_ffn_dim))
        w.add_audio_block_count(n_layer)
        w.add_audio_head_count(int(cfg.encoder_attention_heads))
        w.add_audio_attention_layernorm_eps(1e-5)
        w.add_audio_num_mel_bins(int(cfg.num_mel_bins))
        w.add_audio_stack_factor(int(adaptor.stack))

        tensors: dict[str, np.ndarray] = {}
        for name, t in enc.state_dict().items():
            tensors["audio_tower." + name] = t.detach().float().numpy()
        for ours, theirs in _PROJECTOR.items():
            tensors[theirs] = np.asarray(adaptor_tensors[ours], dtype=np.float32)
        for name, arr in tensors.items():
            new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise ExportError(f"no llama.cpp mmproj name for {name!r}: unexpected Whisper encoder layout")
            if name.endswith(("conv1.bias", "conv2.bias")):
                arr = arr[:, None]  # llama.cpp adds the conv bias as a [d, 1] column
            if name.endswith(".weight") and arr.ndim >= 2 and "position" not in name:
                arr = arr.astype(np.float16)  # conv kernels must be f16 for ggml's im2col; matmuls f16 too
            else:
                arr = arr.astype(np.float32)
            w.add_tensor(new, np.ascontiguousarray(arr))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return Path(out_path)
