"""``trainer.compile=true``: torch.compile where it works, a clear log line where it does not.

The model is compiled in place (``nn.Module.compile``), so parameter names and
checkpoints are the same with and without compilation. Frames the compiler
cannot handle fall back to eager execution instead of ending the run.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run here (None when it can): platform, Python version, compiler toolchain."""
    import torch._dynamo as dynamo

    if not dynamo.is_dynamo_supported():
        return "TorchDynamo does not support this Python version or platform"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "the inductor backend needs Triton for CUDA and it is not installed"
        return None
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:  # no C++ compiler on PATH (or $CXX points nowhere)
        return f"the inductor backend needs a C++ compiler for CPU code ({str(exc).splitlines()[0][:120]})"
    return None


def maybe_compile(model: nn.Module, enabled: bool, device: torch.device | str = "cpu") -> nn.Module:
    """Compile ``model`` in place when ``enabled`` and supported; log which of the two happened."""
    if not enabled:
        return model
    reason = compile_unavailable(torch.device(device))
    if reason is not None:
        log.warning("trainer.compile=true: not compiling, %s; training runs in eager mode", reason)
        return model
    import torch._dynamo as dynamo

    dynamo.config.suppress_errors = (
        True  # a graph that fails to compile runs eagerly, with a warning
    )
    model.compile()
    log.info(
        "trainer.compile=true: model compiled with torch.compile (inductor on %s); "
        "the first steps are slow while it compiles",
        torch.device(device).type,
    )
    return model
