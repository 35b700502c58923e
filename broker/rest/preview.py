"""``GET /instances/{id}/preview`` and ``/rendered``, per instance and per frame, as Orthanc 1.10.

The image is rendered by ``broker.core.preview`` (Orthanc's preview rules). Answers, as Orthanc's:

* the format from the ``Accept`` header: PNG (also without the header, or for ``*/*``), JPEG
  (``image/jpeg``, ``?quality=`` 1..100, 90 by default) or PAM (``image/x-portable-arbitrarymap``);
  an ``Accept`` that names none of them: 404, empty body;
* an invalid ``quality`` for a JPEG: 415, empty body;
* an unknown instance, or a frame that does not exist (or is not a number): 404, empty body;
* a frame that cannot be decoded or previewed: 415, empty body.

Handlers need ``services.store``.
"""
from __future__ import annotations

from broker.core import preview
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()


def _window_value(request: RestRequest, name: str) -> float | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise OrthancError(ErrorCode.BAD_REQUEST, f'"{name}" must be a number') from None


def _render(request: RestRequest, data: bytes, frame: int) -> preview.Rendered:
    """``/preview`` stretches the stored values; ``/rendered`` windows the rescaled ones, and resizes
    to ``?width=``/``?height=`` (the aspect ratio kept; ``?smooth`` interpolates)."""
    if not request.path.endswith("/rendered"):
        return preview.render_frame(data, frame)
    image = preview.render_windowed(data, frame, _window_value(request, "window-center"),
                                    _window_value(request, "window-width"))
    return preview.resized(image, _window_value(request, "width"), _window_value(request, "height"),
                           "smooth" in request.query and request.query.get("smooth") not in ("0", "false"))


def _answer(request: RestRequest, services: Services, frame: int) -> RestResponse:
    mime = preview.negotiate(request.headers.get("accept"))
    if mime is None:
        raise BareHttpStatus(404, f"No image format acceptable for: {request.headers.get('accept')!r}")
    try:
        data, _ = services.store.read_instance(request.params["id"])
    except OrthancError as exc:
        raise BareHttpStatus(404, exc.details or exc.message) from None
    try:
        image = _render(request, data, frame)
    except preview.NoSuchFrame as exc:
        raise BareHttpStatus(404, str(exc)) from None
    except preview.Undecodable as exc:
        raise BareHttpStatus(415, str(exc)) from None
    quality = preview.DEFAULT_JPEG_QUALITY
    if mime == preview.JPEG:
        parsed = preview.parse_quality(request.query.get("quality"))
        if parsed is None:
            raise BareHttpStatus(415, "quality must be an integer between 1 and 100")
        quality = parsed
    return RestResponse.binary(preview.encode(image, mime, quality), mime)


@routes.get("/instances/{id}/preview")
def instance_preview(request: RestRequest, services: Services) -> RestResponse:
    return _answer(request, services, 0)


@routes.get("/instances/{id}/rendered")
def instance_rendered(request: RestRequest, services: Services) -> RestResponse:
    return _answer(request, services, 0)


@routes.get("/instances/{id}/frames/{frame}/rendered")
@routes.get("/instances/{id}/frames/{frame}/preview")
def frame_preview(request: RestRequest, services: Services) -> RestResponse:
    text = request.params["frame"]
    if not text.isdigit():
        raise BareHttpStatus(404, f"Not a frame number: {text!r}")
    return _answer(request, services, int(text))
