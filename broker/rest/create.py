"""``POST /tools/create-dicom`` (``broker.core.create``): the new instance is stored like an upload,
and the answer is that of ``POST /instances``.

Handlers need ``services.store``.
"""
from __future__ import annotations

import json
from typing import Any

from broker.core.create import create_instance
from broker.core.levels import Level
from broker.core.maintags import TAG_BY_NAME
from broker.core.store import Store
from broker.errors import ErrorCode, OrthancError
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest
from broker.services import Services

routes = RouteTable()


def parent_tags(store: Store, parent: Any) -> dict[int, str]:
    """The main tags of the parent and of its ancestors, which the new instance takes."""
    if not isinstance(parent, str):
        raise OrthancError(ErrorCode.BAD_REQUEST, '"Parent" must be a resource id')
    level = next((level for level in Level if store.exists(level, parent)), None)
    if level is None or level is Level.INSTANCE:
        raise OrthancError(ErrorCode.CREATE_DICOM_BAD_PARENT, f"No patient, study or series with id {parent}")
    tags: dict[int, str] = {}
    public_id = parent
    while True:
        view = store.view(level, public_id)
        assert view is not None
        for name, value in view.main_tags.items():
            if name in TAG_BY_NAME:
                tags.setdefault(TAG_BY_NAME[name], value)
        if view.parent is None or level.parent is None:
            return tags
        level, public_id = level.parent, view.parent


@routes.post("/tools/create-dicom")
def create_dicom(request: RestRequest, services: Services) -> Any:
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise OrthancError(ErrorCode.BAD_REQUEST, "The body must be a JSON object") from None
    store = services.store
    inherited = parent_tags(store, body["Parent"]) if isinstance(body, dict) and "Parent" in body else {}
    data = create_instance(body, store.default_encoding, inherited)
    return store.store_instance(data, request.origin).to_json()
