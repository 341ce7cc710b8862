"""REST handlers of the server extension, under ``BASE_URL/remote-kernels/``.

    GET  kernels                  -> {"kernels": [view, ...]}   this user's remote kernels (overview.make_view)
    GET  kernels/KERNEL_ID        -> view                        404 if it is not one of them
    POST kernels/IDENT/cancel     -> {"message"}                 withdraw its job (kernel, session or job id)
    POST kernels/KERNEL_ID/shutdown -> {"message"}               shut down a kernel of this server (409 otherwise)
    POST kernels/KERNEL_ID/warn   -> {"message"}                 the pre-end signal to its batch job (Overview.warn)
    GET  specs/SPEC/choices       -> {"spec", "choices", "defaults"}  the resources users may choose (launch.py)
    POST specs/SPEC/choices       -> {"resources"}               a choice ({"resources": {...}}) checked; 400 with the
                                                                 bound it breaks

Every handler is jupyter_server's APIHandler (token/cookie authentication, XSRF for POST)
with ``@authorized`` on the "kernels" resource: read for GET, execute for POST.
"""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..commands import CommandFailed
from . import launch
from .overview import NotFound, Overview, Refused

AUTH_RESOURCE = "kernels"
PREFIX = "remote-kernels"


class _Handler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def overview(self) -> Overview:
        return self.settings["remote_kernels_overview"]

    def _reply(self, body: dict, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))


class KernelsHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self._reply({"kernels": await self.overview.kernels()})


class KernelHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        try:
            self._reply(await self.overview.kernel(kernel_id))
        except NotFound as e:
            raise web.HTTPError(404, str(e)) from None


class ActionHandler(_Handler):
    @web.authenticated
    @authorized
    async def post(self, ident: str, action: str) -> None:
        try:
            act = {"cancel": self.overview.cancel, "shutdown": self.overview.shut_down, "warn": self.overview.warn}
            message = await act[action](ident)
        except NotFound as e:
            raise web.HTTPError(404, str(e)) from None
        except Refused as e:
            raise web.HTTPError(409, str(e)) from None
        except CommandFailed as e:
            raise web.HTTPError(502, str(e)) from None
        self._reply({"message": message})


class ChoicesHandler(_Handler):
    """A spec's choosable resources (GET) and the check of a choice (POST).  Refusals are
    replied as {"message"}, not raised as HTTPError: they quote the user's values, which
    tornado would read as a format."""

    @web.authenticated
    @authorized
    async def get(self, spec: str) -> None:
        try:
            self._reply(await launch.choosable(self.kernel_spec_manager, spec))
        except NotFound as e:
            return self._reply({"message": str(e)}, 404)
        except Refused as e:
            return self._reply({"message": str(e)}, 409)

    @web.authenticated
    @authorized
    async def post(self, spec: str) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, 'the body must be JSON: {"resources": {...}}') from None
        try:
            resources = await launch.check(self.kernel_spec_manager, spec, body.get("resources")
                                           if isinstance(body, dict) else body)
        except NotFound as e:
            return self._reply({"message": str(e)}, 404)
        except Refused as e:
            return self._reply({"message": str(e)}, 400)
        self._reply({"resources": resources})


def setup_handlers(web_app) -> None:
    """Register the handlers on the server's tornado application, with one Overview."""
    settings = web_app.settings
    settings["remote_kernels_overview"] = Overview(settings["kernel_manager"], settings.get("session_manager"))
    base = url_path_join(settings.get("base_url", "/"), PREFIX)
    ident = r"(?P<kernel_id>[^/]+)"
    web_app.add_handlers(".*$", [
        (url_path_join(base, "kernels"), KernelsHandler),
        (url_path_join(base, "kernels", ident), KernelHandler),
        (url_path_join(base, "kernels", r"(?P<ident>[^/]+)", r"(?P<action>cancel|shutdown|warn)"), ActionHandler),
        (url_path_join(base, "specs", r"(?P<spec>[^/]+)", "choices"), ChoicesHandler),
    ])
