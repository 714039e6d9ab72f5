"""The model of push-kb: a .msu arriving chunk by chunk into install-kb's staging folder.

Windows behaviour it stands on:
- over PSRP each chunk is one PIPELINE_INPUT message, sent in wxf:Send on the pipeline's stdin
  stream while it runs and ended by END_OF_PIPELINE_INPUT (MS-PSRP 2.2.2.17, 2.2.2.18 and
  3.1.5.3.5, learn.microsoft.com/en-us/openspecs/windows_protocols/ms-psrp/); the script's process
  block takes them one at a time, as they arrive;
- over WinRS the chunks are part of the command's stdin, which the client pipes to the running
  command in Send messages (MS-WSMV 3.1.4.13, rsp:Send with a stdin stream,
  learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsmv/) and the bootstrap reads to its
  end before it binds the parameters: they reach the script as -InputObject, one process call;
- the partial file keeps what was written before a connection dropped (the script closes the
  file after every chunk).

Lab stand-in: a pushed file is a HostState.PushedFile (size, a SHA-256 carried along, the first
bytes), never its bytes; HostState.push_bytes_received counts every byte written, so a test can
tell what a resumed push sent again.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..engine import ErrorInfo, Stop
from ..host import PushedFile
from .helpers import require_elevated
from .long_steps import int_param, run_folder, text_param
from .registry import StepContext, model

LONG_MAX = 9223372036854775807


@model("push-kb", sha256="8677c00e0e8e931f25dad047de4ef4f80edc4e186ccd0a06957dca42f25599aa")
async def push_kb(ctx: StepContext) -> None:
    name = text_param(ctx, "FileName", r"^[\w.\-]+\.msu$", mandatory=True)
    expected = text_param(ctx, "Sha256", r"^[0-9a-fA-F]{64}$", mandatory=True).lower()
    size = int_param(ctx, "Size", -1, 0, LONG_MAX)
    offset = int_param(ctx, "Offset", -1, -1, LONG_MAX)
    run_id = text_param(ctx, "RunId")
    require_elevated(ctx)
    state = ctx.host.state
    folder = run_folder(run_id, "install-kb")
    partial_key = f"{folder}\\push\\{name}.partial".lower()
    final_key = f"{folder}\\packages\\{name}".lower()
    facts: dict[str, Any] = {"file": name, "size": size, "staged": False, "have": 0, "written": 0}

    def finish(status: str, code: int, message: str) -> None:
        ctx.finish(status, code, facts=facts, messages=[message])

    # --- begin: already staged with the right hash, the offset ---
    staged = state.pushed.get(final_key)
    if staged is not None:
        if staged.sha256 == expected:
            facts.update(staged=True, have=size)
            finish("ok", 0, f"{name} is staged with the expected SHA-256")
        ctx.verbose(f"{name} is staged with SHA-256 {staged.sha256}, not {expected}: receiving it again")
        del state.pushed[final_key]
    partial = state.pushed.get(partial_key)
    have = partial.size if partial is not None else 0
    facts["have"] = have
    if offset > have:
        finish("failed", 1, f"the host holds {have} bytes of {name}, not {offset}: send from {have}")
    if 0 <= offset < have:
        assert partial is not None
        if not partial.cut(offset):
            raise Stop(1, ErrorInfo(f"lab: push-kb cut to {offset}, not a chunk boundary (the lab keeps no bytes)",
                                    category="NotImplemented", fqid="WuremoteLabLimit",
                                    exception_type="System.NotSupportedException", command="push-kb"))
        have = offset

    # --- process: each chunk appended ---
    if offset >= 0:
        async for chunk in ctx.input_items():
            try:
                data = base64.b64decode(str(chunk), validate=True)
            except (binascii.Error, ValueError):
                raise Stop(1, ErrorInfo("Exception calling \"FromBase64String\" with \"1\" argument(s): \"The input is "
                                        "not a valid Base-64 string as it contains a non-base 64 character, more than "
                                        "two padding characters, or an illegal character among the padding "
                                        "characters.\"", category="NotSpecified", fqid="FormatException",
                                        exception_type="System.Management.Automation.MethodInvocationException",
                                        command="")) from None
            if have + len(data) > size:
                state.pushed.pop(partial_key, None)
                facts["have"] = 0
                finish("failed", 1, f"{name}: more than the {size} bytes announced arrived; the partial file is deleted")
            partial = state.pushed.setdefault(partial_key, PushedFile())
            partial.append(data)
            state.push_bytes_received += len(data)
            have += len(data)
            facts["written"] += len(data)

    # --- end: complete, hashed, moved into packages ---
    facts["have"] = have
    if have < size:
        finish("ok", 0, f"{name}: {have} of {size} bytes received")
    partial = state.pushed.setdefault(partial_key, PushedFile())  # a 0-byte file is written by its first open
    if partial.sha256 != expected:
        del state.pushed[partial_key]
        facts["have"] = 0
        finish("failed", 1, f"{name}: SHA-256 {partial.sha256} does not match the expected {expected}; "
                            "the partial file is deleted")
    state.pushed[final_key] = state.pushed.pop(partial_key)
    facts["staged"] = True
    finish("ok", 0, f"{name} staged: {size} bytes, SHA-256 checked")
