"""llasm export: turn a training checkpoint into a laptop bundle (CTranslate2/ONNX encoder, GGUF LLM)."""
