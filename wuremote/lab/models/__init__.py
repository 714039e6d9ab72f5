"""The lab's models of wuremote's own scripts, recognised by metadata header and content hash.

A payload is recognised only when its step script's sha256 (prelude taken out) and the
prelude's sha256 are the ones recorded here, so a script edited without its model fails
loudly on the lab instead of being emulated from stale knowledge.  Each model applies the
step's effect to the host model and emits the streams, result and exit code the script
would.
"""

from __future__ import annotations

# Each module registers its models on import.
from . import boot_info, detached, diagnose, failsafe, helpers, install_updates, logs, long_steps, maintenance, push, reset_components  # noqa: F401
from .registry import (
               BOOTSTRAP_SHA256,
               MODELS,
               PRELUDE_SHA256,
               Known,
               Model,
               ModelFn,
               StepContext,
               is_bootstrap,
               model,
               recognize_psrp,
               recognize_winrs,
)

__all__ = ["BOOTSTRAP_SHA256", "MODELS", "PRELUDE_SHA256", "Known", "Model", "ModelFn", "StepContext", "is_bootstrap",
           "model", "recognize_psrp", "recognize_winrs"]
