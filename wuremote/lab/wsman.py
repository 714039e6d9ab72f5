"""WS-Management envelopes as a Windows host reads and writes them.

The lab's middle layer (HTTP below, WinRS shells and PSRP pools above): parse a request
envelope into a :class:`Request`, build responses whose RelatesTo is the request's
MessageID, and build the faults Windows sends, with their real WSManFault codes.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "wmi": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError",
    "cim": "http://schemas.dmtf.org/wbem/wscim/1/common",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "b": "http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
SHELL_ACTION = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTION_COMMAND = SHELL_ACTION + "Command"
ACTION_SEND = SHELL_ACTION + "Send"
ACTION_RECEIVE = SHELL_ACTION + "Receive"
ACTION_SIGNAL = SHELL_ACTION + "Signal"

RESOURCE_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
RESOURCE_PWSH_PREFIX = "http://schemas.microsoft.com/powershell/"
COMMAND_STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
COMMAND_STATE_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"
SIGNAL_PREFIX = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/"

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"


def q(prefix: str, tag: str) -> str:
    return f"{{{NS[prefix]}}}{tag}"


@dataclass
class Request:
    action: str
    message_id: str
    resource_uri: str
    to: str
    selectors: dict[str, str]
    options: dict[str, str]
    operation_timeout: float
    max_envelope_size: int
    body: ET.Element
    locale: str = "en-US"

    def body_child(self) -> ET.Element | None:
        return self.body[0] if len(self.body) else None


class WSManFault(Exception):
    """A fault Windows would answer with; rendered by :func:`fault_envelope`."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        subcode: str = "w:InternalError",
        value: str = "s:Receiver",
        reason: str | None = None,
        detail: str | None = None,
        provider: str | None = None,
        http_status: int = 500,
        wmi_error: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode
        self.value = value
        self.reason = reason or message
        self.detail = detail
        self.provider = provider
        self.http_status = http_status
        # Some faults reach the client as a CIM MSFT_WmiError in s:Detail, with no f:WSManFault
        # (the operations quota: pywinrm's test_wsman_fault_wmi_error_detail, a real answer).
        self.wmi_error = wmi_error


# The faults the clients meet in practice, worded and coded as Windows words and codes them.
def operation_timeout() -> WSManFault:
    text = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
    return WSManFault(2150858793, text, subcode="w:TimedOut", value="s:Receiver")


def shell_not_found(shell_id: str = "") -> WSManFault:
    # As Windows words it: the ShellId in the text, the message directly in f:Message (no ProviderFault).
    return WSManFault(
        2150858843,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not found on the server. "
        "Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. "
        "Provide the correct ShellId or create a new shell and retry the operation. ",
        subcode="w:InvalidSelectors",
        value="s:Sender",
        reason="The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ",
        detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def command_not_found() -> WSManFault:
    return WSManFault(
        2150858843,
        "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. "
        "Either the command has completed execution or the client specified an invalid command identifier. ",
        subcode="w:InvalidSelectors",
        value="s:Sender",
        reason="The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ",
        detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def shell_quota(user: str, limit: int, *, psrp: bool = False) -> WSManFault:
    if psrp:
        # The PowerShell endpoint's own quota (plugin MaxShellsPerUser, 25): ERROR_WSMAN_QUOTA_MAX_SHELLS_PPQ
        # (0x803381E4, PowerShell's WsManErrorCode table), worded as PowerShell users meet it
        # (Microsoft365DSC/Microsoft365DSC#966).
        return WSManFault(
            2150859236,
            "The WS-Management service cannot process the request. The maximum number of concurrent shells for this "
            "user has been exceeded. Close existing shells or raise the quota for this user. ",
            subcode="w:InternalError",
            value="s:Receiver",
        )
    # ERROR_WSMAN_QUOTA_MAX_SHELLS (0x803381A5) as WinRS' MaxShellsPerUser (30) is hit.
    return WSManFault(
        2150859173,
        f"The WS-Management service cannot process the request. This user is allowed a maximum number of {limit} "
        f"concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. ",
        subcode="w:QuotaLimit",
        value="s:Receiver",
        detail="http://schemas.microsoft.com/wbem/wsman/1/wsman/fault/QuotaLimit",
    )


def unknown_configuration(uri: str) -> WSManFault:
    # ERROR_WSMAN_INVALID_RESOURCE_URI (0x8033803B), as pypsrp users meet it for a configuration name the host lacks.
    return WSManFault(
        2150858811,
        "The WS-Management service cannot process the request. The resource URI "
        f"({uri}) was not found in the WS-Management catalog. The catalog contains the metadata that describes "
        "resources, or logical endpoints. ",
        subcode="w:DestinationUnreachable",
        value="s:Sender",
        reason="The WS-Management service cannot process the request. The resource URI was not found in the WS-Management catalog. ",
        detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidResourceURI",
    )


def action_not_supported(action: str) -> WSManFault:
    return WSManFault(
        2150858771,
        f"The WS-Management service does not support the specified action: {action} ",
        subcode="a:ActionNotSupported",
        value="s:Sender",
        http_status=500,
    )


def lab_error(exc: BaseException) -> WSManFault:
    """Something the lab cannot model, answered as a provider failure is (HTTP 500, w:InternalError,
    E_FAIL) so a client reports it instead of seeing its connection dropped."""
    return WSManFault(2147500037, f"The WS-Management service cannot process the request. The lab cannot model "
                                  f"this request ({type(exc).__name__}: {exc}). ", subcode="w:InternalError", value="s:Receiver")


def invalid_message(text: str) -> WSManFault:
    return WSManFault(2150858767, text, subcode="a:InvalidMessageInformationHeader", value="s:Sender")


_DURATION = re.compile(r"^PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match or not any(match.groups()):
        raise invalid_message(
            "The WS-Management service cannot process the request. The XML contains an invalid timeout field "
            f"in the SOAP header: {text}. "
        )
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_request(data: bytes) -> Request:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise WSManFault(
            2150858754,
            f"The WS-Management service cannot process the request because the XML is invalid: {exc}. ",
            subcode="w:SchemaValidationError",
            value="s:Sender",
        ) from None
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        raise invalid_message("The WS-Management service cannot process the request. The SOAP envelope has no Header or Body. ")

    def text(path: str, default: str = "") -> str:
        node = header.find(path, NS)
        return (node.text or "").strip() if node is not None else default

    selectors = {
        node.attrib.get("Name", ""): (node.text or "").strip()
        for node in header.findall("w:SelectorSet/w:Selector", NS)
    }
    options = {
        node.attrib.get("Name", ""): (node.text or "").strip()
        for node in header.findall("w:OptionSet/w:Option", NS)
    }
    timeout_text = text("w:OperationTimeout", "PT60S")
    max_env = text("w:MaxEnvelopeSize", "153600")
    message_id = text("a:MessageID")
    if not message_id:
        raise invalid_message("The WS-Management service cannot process the request. The request has no MessageID header. ")
    locale_node = header.find("w:Locale", NS)
    locale = locale_node.attrib.get("{http://www.w3.org/XML/1998/namespace}lang", "en-US") if locale_node is not None else "en-US"
    return Request(
        action=text("a:Action"),
        message_id=message_id,
        resource_uri=text("w:ResourceURI"),
        to=text("a:To"),
        selectors=selectors,
        options=options,
        operation_timeout=parse_duration(timeout_text),
        max_envelope_size=int(max_env) if max_env.isdigit() else 153600,
        body=body,
        locale=locale,
    )


def new_id() -> str:
    return str(uuid.uuid4()).upper()


def envelope(request: Request, action: str, body_children: list[ET.Element] | None = None) -> bytes:
    """A response envelope: Action, a fresh MessageID, To anonymous, RelatesTo the request's MessageID."""
    root = ET.Element(q("s", "Envelope"), {"{http://www.w3.org/XML/1998/namespace}lang": request.locale})
    header = ET.SubElement(root, q("s", "Header"))
    ET.SubElement(header, q("a", "Action")).text = action
    ET.SubElement(header, q("a", "MessageID")).text = "uuid:" + new_id()
    ET.SubElement(header, q("a", "To")).text = ANONYMOUS
    ET.SubElement(header, q("a", "RelatesTo")).text = request.message_id
    body = ET.SubElement(root, q("s", "Body"))
    for child in body_children or []:
        body.append(child)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))


def fault_envelope(request: Request | None, fault: WSManFault, machine: str) -> bytes:
    root = ET.Element(q("s", "Envelope"), {"{http://www.w3.org/XML/1998/namespace}lang": "en-US"})
    header = ET.SubElement(root, q("s", "Header"))
    ET.SubElement(header, q("a", "Action")).text = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
    ET.SubElement(header, q("a", "MessageID")).text = "uuid:" + new_id()
    ET.SubElement(header, q("a", "To")).text = ANONYMOUS
    if request is not None:
        ET.SubElement(header, q("a", "RelatesTo")).text = request.message_id
    body = ET.SubElement(root, q("s", "Body"))
    node = ET.SubElement(body, q("s", "Fault"))
    code = ET.SubElement(node, q("s", "Code"))
    ET.SubElement(code, q("s", "Value")).text = fault.value
    sub = ET.SubElement(code, q("s", "Subcode"))
    ET.SubElement(sub, q("s", "Value")).text = fault.subcode
    reason = ET.SubElement(node, q("s", "Reason"))
    ET.SubElement(reason, q("s", "Text"), {"{http://www.w3.org/XML/1998/namespace}lang": "en-US"}).text = fault.reason
    detail = ET.SubElement(node, q("s", "Detail"))
    if fault.wmi_error:
        _wmi_error(detail, fault)
        return bytes(ET.tostring(root, encoding="utf-8"))
    if fault.detail:
        ET.SubElement(detail, q("w", "FaultDetail")).text = fault.detail
    wsman_fault = ET.SubElement(detail, q("f", "WSManFault"), {"Code": str(fault.code), "Machine": machine})
    message = ET.SubElement(wsman_fault, q("f", "Message"))
    if fault.provider:
        provider = ET.SubElement(
            message, q("f", "ProviderFault"), {"provider": fault.provider, "path": r"%systemroot%\system32\WsmSvc.dll"}
        )
        inner = ET.SubElement(provider, q("f", "WSManFault"), {"Code": str(fault.code), "Machine": machine})
        ET.SubElement(inner, q("f", "Message")).text = fault.message
    else:
        message.text = fault.message
    return bytes(ET.tostring(root, encoding="utf-8"))


def _wmi_error(detail: ET.Element, fault: WSManFault) -> None:
    """s:Detail/p:MSFT_WmiError as Windows sends it, field for field as in pywinrm's
    test_wsman_fault_wmi_error_detail (pywinrm reads error_Code as ``wmierror_code``)."""
    xsi_type = q("xsi", "type")
    error = ET.SubElement(detail, q("wmi", "MSFT_WmiError"), {q("b", "IsCIM_Error"): "true", xsi_type: "wmi:MSFT_WmiError_Type"})
    fields = [("CIMStatusCode", "cim:cimUnsignedInt", "27"), ("ErrorSourceFormat", "cim:cimUnsignedShort", "0"),
              ("ErrorType", "cim:cimUnsignedShort", "0"), ("Message", "cim:cimString", fault.message),
              ("MessageID", "cim:cimString", f"HRESULT 0x{fault.code:08x}"),
              ("PerceivedSeverity", "cim:cimUnsignedShort", "0"), ("ProbableCause", "cim:cimUnsignedShort", "0"),
              ("error_Category", "cim:cimUnsignedInt", "30"), ("error_Code", "cim:cimUnsignedInt", str(fault.code)),
              ("error_Type", "cim:cimString", "HRESULT"), ("error_WindowsErrorMessage", "cim:cimString", fault.message)]
    for name, kind, value in fields:
        ET.SubElement(error, q("wmi", name), {xsi_type: kind}).text = value


def check_shell_quota(owners: list[str], user: str, limit: int, *, psrp: bool = False) -> None:
    """Raise the quota fault when `user` already owns `limit` of the open shells (`owners`)."""
    if sum(1 for owner in owners if owner.lower() == user.lower()) >= limit:
        raise shell_quota(user, limit, psrp=psrp)


def shell_created(request: Request, shell_id: str, fields: list[tuple[str, str]]) -> bytes:
    """A Create response: the ResourceCreated selector (clients read the ShellId from it) and the Shell's fields."""
    created = ET.Element(q("x", "ResourceCreated"))
    ET.SubElement(created, q("a", "Address")).text = ANONYMOUS
    params = ET.SubElement(created, q("a", "ReferenceParameters"))
    ET.SubElement(params, q("w", "ResourceURI")).text = request.resource_uri
    selectors = ET.SubElement(params, q("w", "SelectorSet"))
    ET.SubElement(selectors, q("w", "Selector"), {"Name": "ShellId"}).text = shell_id
    info = ET.Element(q("rsp", "Shell"))
    for tag, value in [("ShellId", shell_id), *fields]:
        ET.SubElement(info, q("rsp", tag)).text = value
    return envelope(request, ACTION_CREATE + "Response", [created, info])
