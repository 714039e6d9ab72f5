"""One host's WS-Management service: HTTP request in, the right shell provider, envelope or fault out."""

from __future__ import annotations

from . import wsman
from .host import Host
from .http import HttpRequest, HttpResponse
from .psrp import PSRPService
from .winrs import WinRSService


class WSManService:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.winrs = WinRSService(host)
        self.psrp = PSRPService(host)

    async def __call__(self, http: HttpRequest, user: str) -> HttpResponse:
        request = None
        try:
            request = wsman.parse_request(http.body)
            uri = request.resource_uri
            if uri.lower() == wsman.RESOURCE_CMD:
                body = await self.winrs.handle(request, user)
            elif uri.lower().startswith(wsman.RESOURCE_PWSH_PREFIX):
                body = await self.psrp.handle(request, user)
            else:
                raise wsman.unknown_configuration(uri)
            return HttpResponse(200, body)
        except wsman.WSManFault as fault:
            return HttpResponse(fault.http_status, wsman.fault_envelope(request, fault, self.host.name))
        except Exception as exc:  # noqa: BLE001 - the lab's own error: a 500 fault, as a failing provider gives, never a dropped connection
            own = wsman.lab_error(exc)
            return HttpResponse(own.http_status, wsman.fault_envelope(request, own, self.host.name))
