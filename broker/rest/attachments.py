"""``/{level}/{id}/attachments/...`` (``broker.core.attachments``), at the four levels, with Orthanc
1.10's answers: names, data (as stored with ``compressed-data``), sizes, MD5s, ``info``,
``is-compressed``, and ``compress``, ``uncompress``, ``verify-md5``; PUT and DELETE of user
attachments.

Handlers need ``services.attachments``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from broker.core.attachments import info
from broker.core.index import Attachment
from broker.core.levels import Level
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()
Handler = Callable[[RestRequest, Services], Any]

#: What ``GET …/attachments/{name}`` lists, in Orthanc 1.10's order (it lists ``uuid`` but answers 404
#: to it, and so does luabroker).
OPERATIONS = ["compress", "compressed-data", "compressed-md5", "compressed-size", "data", "info", "is-compressed",
              "md5", "size", "uncompress", "verify-md5", "uuid"]


def _md5(services: Services, attachment: Attachment, stored: bool) -> str:
    """The recorded MD5, or computed when the index has none (files stored without MD5)."""
    recorded = attachment.stored_md5 if stored else attachment.md5
    if recorded is not None:
        return recorded
    return hashlib.md5(services.store.read_attachment(attachment, as_stored=stored)).hexdigest()


def _views(services: Services, attachment: Attachment) -> dict[str, Callable[[], Any]]:
    store = services.store
    mime = services.attachments.types.mime(attachment.content_type)
    return {
        "data": lambda: RestResponse.binary(store.read_attachment(attachment), mime),
        "compressed-data": lambda: RestResponse.binary(store.read_attachment(attachment, as_stored=True)),
        "size": lambda: RestResponse.text(str(attachment.size)),
        "compressed-size": lambda: RestResponse.text(str(attachment.stored_size)),
        "md5": lambda: RestResponse.text(_md5(services, attachment, stored=False)),
        "compressed-md5": lambda: RestResponse.text(_md5(services, attachment, stored=True)),
        "is-compressed": lambda: RestResponse.text("1" if attachment.compression else "0"),
        "info": lambda: info(attachment),
    }


def _handlers(level: Level) -> None:
    base = f"/{level.plural}/{{id}}/attachments"

    def list_attachments(request: RestRequest, services: Services) -> Any:
        attachments = services.attachments.list(level, request.params["id"])
        names = {services.attachments.types.name(a.content_type): a.content_type for a in attachments}
        return names if "full" in request.query else list(names)

    def operations(request: RestRequest, services: Services) -> Any:
        services.attachments.get(level, request.params["id"], request.params["name"])
        return OPERATIONS

    def view(name: str) -> Handler:
        def get_view(request: RestRequest, services: Services) -> Any:
            attachment = services.attachments.get(level, request.params["id"], request.params["name"])
            return _views(services, attachment)[name]()
        return get_view

    def put(request: RestRequest, services: Services) -> Any:
        services.attachments.put(level, request.params["id"], request.params["name"], request.body)
        return {}

    def delete(request: RestRequest, services: Services) -> Any:
        services.attachments.delete(level, request.params["id"], request.params["name"])
        return RestResponse.text("")

    def compression(compressed: bool) -> Handler:
        def set_compression(request: RestRequest, services: Services) -> Any:
            services.attachments.set_compression(level, request.params["id"], request.params["name"], compressed)
            return {}
        return set_compression

    def verify_md5(request: RestRequest, services: Services) -> Any:
        services.attachments.verify_md5(level, request.params["id"], request.params["name"])
        return {}

    routes.add("GET", base, list_attachments)
    routes.add("GET", f"{base}/{{name}}", operations)
    routes.add("PUT", f"{base}/{{name}}", put)
    routes.add("DELETE", f"{base}/{{name}}", delete)
    for name in ("data", "compressed-data", "size", "compressed-size", "md5", "compressed-md5", "is-compressed",
                 "info"):
        routes.add("GET", f"{base}/{{name}}/{name}", view(name))
    routes.add("POST", f"{base}/{{name}}/compress", compression(True))
    routes.add("POST", f"{base}/{{name}}/uncompress", compression(False))
    routes.add("POST", f"{base}/{{name}}/verify-md5", verify_md5)


for _level in Level:
    _handlers(_level)
