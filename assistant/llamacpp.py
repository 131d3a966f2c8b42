"""llama.cpp process-wide plumbing shared by the runtime (assistant.llm) and the base-model cache
(assistant.basemodels, which requantizes a GGUF with llama.cpp): the backend is initialised once, and
llama.cpp's log is silenced while its error lines are kept for our one-line messages.

It imports nothing from the project, so any module may use it without an import cycle.
"""

from __future__ import annotations

import ctypes
import threading

GGML_LOG_LEVEL_ERROR = 4

_log_lock = threading.Lock()
_recent_errors: list[str] = []
_log_callback = None  # keeps the ctypes callback alive for as long as llama.cpp may call it
_backend_ready = False


def _on_log(level: int, text: bytes, _user: object) -> None:
    if level == GGML_LOG_LEVEL_ERROR and text:
        with _log_lock:
            _recent_errors.append(text.decode("utf-8", "replace").strip())
            del _recent_errors[:-8]


def init_backend() -> None:
    """Silence llama.cpp's log (errors kept, see `last_error`) and initialise its backend, once per process."""
    global _backend_ready, _log_callback
    if _backend_ready:
        return
    import llama_cpp

    _log_callback = llama_cpp.llama_log_callback(_on_log)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    _backend_ready = True


def last_error() -> str:
    """The error lines llama.cpp logged since the last call, joined ("" when none)."""
    with _log_lock:
        msg = "; ".join(e for e in _recent_errors if e)
        _recent_errors.clear()
    return msg
