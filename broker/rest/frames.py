"""The frames of an instance (``broker.core.images``): ``/instances/{id}/frames`` (their numbers) and,
per frame, ``raw``, ``raw.gz``, ``image-uint8``, ``image-uint16``, ``image-int16``, ``matlab``,
``numpy``; per instance, the same views of frame 0 (``numpy``: of every frame); per series, ``numpy``
of every frame of every instance.

Answers, as Orthanc 1.10's: a frame number that is not a number: 404, empty body; a frame that does
not exist: 400 (``OrthancStatus`` 3), but for the images 404 with an empty body (for compressed
pixel data see ``_guarded``); a frame that cannot be decoded or converted (a colour frame to an integer image): 415,
empty body; no pixel data: 415 for the images, 500 ``NotImplemented`` for the other views;
``Accept`` as for ``/preview`` (16-bit images: PNG or PAM).

Handlers need ``services.store``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.core import images, preview
from broker.core.levels import Level
from broker.core.metadata import MetadataType
from broker.core.store import parse_integer
from broker.errors import BareHttpStatus, ErrorCode, OrthancError
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()
Handler = Callable[[RestRequest, Services], Any]
_SIXTEEN_BITS = (preview.PNG, preview.PAM)


def _frame(request: RestRequest) -> int:
    text = request.params.get("frame", "0")
    if not text.isdigit():
        raise BareHttpStatus(404, f"Not a frame number: {text!r}")
    return int(text)


def _guarded(view: Callable[[RestRequest, Services, bytes, int], Any], *, decoded: bool = True,
             image: bool = False) -> Handler:
    """Read the instance and translate the errors into Orthanc's answers for a missing frame: 404 for
    the images, 400 for the other views; in compressed pixel data, where Orthanc's decoder fails before
    it counts the frames, 415 for the images and 400 ``BadFileFormat`` for the other decoded views."""
    def handler(request: RestRequest, services: Services) -> Any:
        frame = _frame(request)
        data, _ = services.store.read_instance(request.params["id"])
        try:
            return view(request, services, data, frame)
        except images.NoSuchFrame as exc:
            compressed = decoded and images.is_encapsulated(data)
            if image:
                raise BareHttpStatus(415 if compressed else 404, str(exc)) from None
            code = ErrorCode.BAD_FILE_FORMAT if compressed else ErrorCode.PARAMETER_OUT_OF_RANGE
            raise OrthancError(code, str(exc)) from None
        except images.BitPacked as exc:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, str(exc)) from None
        except images.BadBinaryImage as exc:
            if image:
                raise BareHttpStatus(415, str(exc)) from None
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, str(exc)) from None
        except images.NoPixelData as exc:
            if image:
                raise BareHttpStatus(415, str(exc)) from None
            raise OrthancError(ErrorCode.NOT_IMPLEMENTED, str(exc), http_status=500) from None
        except images.Undecodable as exc:
            raise BareHttpStatus(415, str(exc)) from None
    return handler


def _raw(gzipped: bool) -> Handler:
    def raw(request: RestRequest, services: Services, data: bytes, frame: int) -> RestResponse:
        content, mime = images.raw_frame(data, frame)
        if gzipped:
            return RestResponse.binary(images.gzipped(content), "application/gzip")
        return RestResponse.binary(content, mime)
    return _guarded(raw, decoded=False)


def _image(kind: str) -> Handler:
    def image(request: RestRequest, services: Services, data: bytes, frame: int) -> RestResponse:
        decoded = preview.decode_frame(data, frame)  # Orthanc's order: decode, negotiate, convert
        formats = preview.FORMATS if kind == "uint8" else _SIXTEEN_BITS
        mime = preview.negotiate(request.headers.get("accept"), formats)
        if mime is None:
            raise BareHttpStatus(404, f"No image format acceptable for: {request.headers.get('accept')!r}")
        pixels = images.clamped(decoded, kind)
        if kind == "int16":
            pixels = pixels.view("uint16")  # Orthanc writes the 16-bit pattern of the signed values
        quality = preview.parse_quality(request.query.get("quality")) if mime == preview.JPEG else None
        return RestResponse.binary(preview.encode(preview.Rendered(pixels), mime,
                                                  quality or preview.DEFAULT_JPEG_QUALITY), mime)
    return _guarded(image, image=True)


def _matlab(request: RestRequest, services: Services, data: bytes, frame: int) -> RestResponse:
    return RestResponse.text(images.matlab(preview.decode_frame(data, frame)))


def _numpy_options(request: RestRequest) -> tuple[bool, bool]:
    """``rescale`` (true by default) and ``compress`` (false by default; a bare ``?compress`` is true)."""
    return (request.query.get("rescale", "1") not in ("0", "false"),
            request.query.get("compress", "0") not in ("0", "false"))


def _numpy(whole: bool) -> Handler:
    def numpy(request: RestRequest, services: Services, data: bytes, frame: int) -> RestResponse:
        rescale, compress = _numpy_options(request)
        return RestResponse.binary(images.numpy_file([data], None if whole else frame, rescale, compress))
    return _guarded(numpy)


@routes.get("/series/{id}/numpy")
def series_numpy(request: RestRequest, services: Services) -> RestResponse:
    """Every frame of every instance, in the order of ``IndexInSeries`` (then of arrival)."""
    store = services.store
    instances = store.views(Level.INSTANCE, store.related(Level.SERIES, request.params["id"], Level.INSTANCE))
    ordered = sorted(instances, key=lambda view: parse_integer(view.metadata.get(MetadataType.INDEX_IN_SERIES))
                     or 0)
    rescale, compress = _numpy_options(request)
    try:
        content = images.numpy_file([store.read_instance(view.public_id)[0] for view in ordered], None, rescale,
                                    compress)
    except images.NoPixelData as exc:
        raise OrthancError(ErrorCode.NOT_IMPLEMENTED, str(exc), http_status=500) from None
    except images.Undecodable as exc:
        raise BareHttpStatus(415, str(exc)) from None
    return RestResponse.binary(content)


@routes.get("/instances/{id}/frames")
def list_frames(request: RestRequest, services: Services) -> Any:
    data, _ = services.store.read_instance(request.params["id"])
    return list(range(images.frame_count(data)))


_FRAME = "/instances/{id}/frames/{frame}"
routes.add("GET", f"{_FRAME}/raw", _raw(False))
routes.add("GET", f"{_FRAME}/raw.gz", _raw(True))
for _base in (_FRAME, "/instances/{id}"):
    for _kind in ("uint8", "uint16", "int16"):
        routes.add("GET", f"{_base}/image-{_kind}", _image(_kind))
    routes.add("GET", f"{_base}/matlab", _guarded(_matlab))
    routes.add("GET", f"{_base}/numpy", _numpy(whole=_base != _FRAME))
