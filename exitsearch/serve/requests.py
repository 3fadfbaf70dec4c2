"""What a prediction request may hold, and the one-line 4xx answer to everything else.

A request is one image or a batch:

* the raw bytes of a PNG, JPEG or WebP image (``Content-Type: image/png``, ``image/jpeg``,
  ``image/webp`` or ``application/octet-stream``), options in the query string
  (``?top_k=3&operating_point=2`` or ``?budget=40%``);
* a JSON body ``{"image": "<base64>"}`` or ``{"images": ["<base64>", ...]}`` with the same
  options as keys.

Nothing here trusts the client: the body size is capped before it is read in full, an image's
pixel count is checked from its header before it is decoded (a small PNG can expand to
gigabytes: a decompression bomb), and only 8-bit grey or colour images are accepted. A server
opens a request first (:func:`open_request`: headers only) and then decodes its images one at a
time (:func:`decode_images`), each shrunk to the model's size before the next is decoded, so a
batch of large images never sits in memory at full size all at once.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from exitsearch.budget import BudgetUnit, parse_budget
from exitsearch.errors import ExitSearchError

__all__ = [
    "IMAGE_FORMATS",
    "Limits",
    "PredictRequest",
    "RequestError",
    "decode_images",
    "open_request",
    "parse_request",
]

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
_RAW_TYPES = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")
# 8-bit modes with one or three channels; palette images carry one of those per entry
_MODES = {"1": "grey", "L": "grey", "P": "palette", "RGB": "colour"}


class RequestError(ExitSearchError):
    """A request the server refuses: ``status`` is the HTTP status, the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may carry.

    Attributes:
        max_bytes: body size (the bytes sent, base64 included).
        max_images: images in one request.
        max_pixels: width x height of one image, read from its header before decoding.
        max_request_pixels: the same summed over a request's images (64 flat 16-megapixel
            PNGs fit in 5 MiB and took 34 s of decoding on this machine's cores).
        body_idle_s: seconds a request's body may send nothing (then 408): a client that
            stops mid-body would hold its place among the requests a replica takes for good,
            and a few hundred of them left every other request waiting (nginx's
            ``client_body_timeout`` is the same idea).
    """

    max_bytes: int = 8 * 2**20
    max_images: int = 64
    max_pixels: int = 4096 * 4096
    max_request_pixels: int = 4 * 4096 * 4096
    body_idle_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_images", "max_pixels", "max_request_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        idle = self.body_idle_s
        if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not 0 < idle < 1e9:
            raise ValueError(f"body_idle_s must be a positive number of seconds, got {idle!r}")


@dataclass(frozen=True)
class PredictRequest:
    """A checked request: its images (PIL, 8-bit grey, palette or RGB) and its options.

    Attributes:
        images: the images, in request order: decoded (:func:`parse_request`), or opened with
            their headers checked and their pixels not yet read (:func:`open_request`).
        batch: whether the request sent a list (the answer is then a list too).
        top_k: classes returned per image with their probabilities (None: the server's
            default).
        operating_point: the operating point asked for by index, if any.
        budget: the operating point asked for by budget (e.g. ``40%``), if any.
    """

    images: tuple[Any, ...]
    batch: bool
    top_k: int | None = None
    operating_point: int | None = None
    budget: str | None = None

    @property
    def pixels(self) -> int:
        """Width x height summed over the images (from their headers)."""
        return sum(im.size[0] * im.size[1] for im in self.images)


def parse_request(
    content_type: str | None,
    body: bytes,
    query: Mapping[str, str],
    limits: Limits,
) -> PredictRequest:
    """Check a prediction request and decode its images (:func:`open_request`, then
    :func:`decode_images`).

    Raises:
        RequestError: 400 malformed (JSON, base64, options, not an image, truncated), 413 too
            large (bytes, images, pixels), 415 a media type or image format not accepted, 422 an
            image with channels the model cannot read (alpha, CMYK, 16-bit, float).
    """
    req = open_request(content_type, body, query, limits)
    return dataclasses.replace(req, images=tuple(decode_images(req)))


def decode_images(req: PredictRequest, transform: Callable[[Any], Any] | None = None) -> list[Any]:
    """The images of an opened request, decoded one at a time; with ``transform`` (e.g. the
    model's resize and crop) what it makes of each, the full-size image let go of before the
    next is decoded.

    Raises:
        RequestError: 400 an image that is truncated or corrupt.
    """
    from PIL import Image

    out = []
    for i, opened in enumerate(req.images):
        where = f"images[{i}]" if req.batch else "the image"
        # a handle of its own on the image's bytes: its pixels are freed with it, where the
        # request's opened image would keep them
        opened.fp.seek(0)
        image = Image.open(opened.fp, formats=IMAGE_FORMATS)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise RequestError(400, f"{where} is truncated or corrupt: {exc}") from None
        out.append(image if transform is None else transform(image))
    return out


def open_request(
    content_type: str | None,
    body: bytes,
    query: Mapping[str, str],
    limits: Limits,
) -> PredictRequest:
    """Check a prediction request: its body, options and every image's header (format, size,
    channels); the images' pixels are not read (:func:`decode_images`).

    Raises:
        RequestError: as :func:`parse_request`, except for images whose data are cut short
            or corrupt (found by :func:`decode_images`).
    """
    if len(body) > limits.max_bytes:
        raise RequestError(413, f"request body of {len(body)} bytes exceeds {limits.max_bytes}")
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json":
        doc = _json(body)
        options = {k: v for k, v in doc.items() if k not in ("image", "images")}
        twice = sorted(set(options) & set(query))
        if twice:
            raise RequestError(400, f"{twice[0]!r} given both in the JSON body and the query")
        options.update(query)
        encoded, batch = _encoded_images(doc)
        if len(encoded) > limits.max_images:
            raise RequestError(
                413, f"{len(encoded)} images in one request; at most {limits.max_images}"
            )
        blobs = [_b64(item, i if batch else None) for i, item in enumerate(encoded)]
    elif kind in _RAW_TYPES or (not kind and body):
        options, batch, blobs = dict(query), False, [body]
    else:
        raise RequestError(
            415,
            f"unsupported Content-Type {kind or '(none)'!r}; send image bytes (image/png, "
            "image/jpeg, image/webp, application/octet-stream) or application/json",
        )
    if not blobs or not blobs[0]:
        raise RequestError(400, "the request holds no image")
    images = tuple(_open(blob, i if batch else None, limits) for i, blob in enumerate(blobs))
    req = PredictRequest(images=images, batch=batch, **_options(options))
    if req.pixels > limits.max_request_pixels:
        raise RequestError(
            413,
            f"the request's {len(images)} images hold {req.pixels} pixels; at most "
            f"{limits.max_request_pixels} are decoded per request",
        )
    return req


def _json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise RequestError(400, 'the JSON body is empty; send {"image": ...} or {"images": [...]}')
    try:
        doc = json.loads(body)
    except ValueError as exc:  # undecodable, malformed, or a number over int()'s 4300 digits
        raise RequestError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise RequestError(
            400, 'the JSON body must be an object: {"image": ...} or {"images": [...]}'
        )
    return doc


def _encoded_images(doc: Mapping[str, Any]) -> tuple[list[Any], bool]:
    if ("image" in doc) == ("images" in doc):
        raise RequestError(
            400, 'the JSON body needs exactly one of "image" (base64) or "images" (a list)'
        )
    if "image" in doc:
        return [doc["image"]], False
    items = doc["images"]
    if not isinstance(items, list) or not items:
        raise RequestError(400, '"images" must be a non-empty list of base64 strings')
    return items, True


def _b64(item: Any, i: int | None) -> bytes:
    where = "the image" if i is None else f"images[{i}]"
    if not isinstance(item, str):
        raise RequestError(400, f"{where} must be a base64 string, got {type(item).__name__}")
    if item.startswith("data:"):  # a data URL, as a browser's FileReader gives it
        head, _, data = item.partition(",")
        if not head.endswith(";base64"):
            raise RequestError(400, f"{where} is a data URL without base64 in it")
        item = data
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where} is not valid base64") from None


def _open(blob: bytes, i: int | None, limits: Limits) -> Any:
    from PIL import Image

    where = "the image" if i is None else f"images[{i}]"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(blob), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        size = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow names the size it read
        held = f"holds {size.group(1)} pixels" if size else "has too many pixels"
        raise RequestError(
            413, f"{where} {held}; at most {limits.max_pixels} pixels are decoded"
        ) from None
    except Image.UnidentifiedImageError:
        raise RequestError(
            415, f"{where} is not a {', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]} image"
        ) from None
    except OSError as exc:
        raise RequestError(400, f"{where} cannot be read: {exc}") from None
    w, h = image.size
    if w * h > limits.max_pixels:
        raise RequestError(
            413, f"{where} is {w}x{h} pixels; at most {limits.max_pixels} pixels are decoded"
        )
    if image.mode not in _MODES:
        raise RequestError(422, _channels_message(where, image.mode))
    if getattr(image, "n_frames", 1) > 1:
        raise RequestError(422, f"{where} is animated ({image.n_frames} frames); send one frame")
    # a palette's transparency is in the header (PNG's tRNS chunk comes before the pixels)
    if image.mode == "P" and "transparency" in image.info:
        raise RequestError(422, _channels_message(where, "P with transparency"))
    return image


_MODE_KINDS = {"I": "16- or 32-bit integer"}


def _channels_message(where: str, mode: str) -> str:
    if "A" in mode or "transparency" in mode:
        why = "has an alpha channel; flatten it onto a background first"
    elif mode == "CMYK":
        why = "is CMYK; convert it to RGB first"
    else:
        kind = _MODE_KINDS.get(mode.split(";")[0], "multi-band")
        why = f"is {kind} (mode {mode}); send 8-bit grey or RGB"
    return f"{where} {why}"


def _options(raw: Mapping[str, Any]) -> dict[str, Any]:
    known = {"top_k", "operating_point", "budget"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RequestError(400, f"unknown option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    if "top_k" in raw:
        out["top_k"] = _positive_int(raw["top_k"], "top_k")
    if "operating_point" in raw:
        value = raw["operating_point"]
        if isinstance(value, str) and _INTEGER.fullmatch(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(400, f"operating_point must be an index, got {value!r}")
        out["operating_point"] = value  # the model says whether it has that point (422)
    if "budget" in raw:
        value = raw["budget"]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = repr(value)  # FLOPs per sample
        # malformed: 400; one that no operating point fits is the model's to say (422)
        error = budget_error(value if isinstance(value, str) else "", shown=raw["budget"])
        if error:
            raise RequestError(400, error)
        out["budget"] = value.strip()
    if "operating_point" in out and "budget" in out:
        raise RequestError(400, "give an operating_point or a budget, not both")
    return out


_AS_GIVEN = object()


def budget_error(text: str, shown: Any = _AS_GIVEN) -> str | None:
    """Why ``text`` is no budget a server takes (a mean cost per sample: a share of the
    backbone or FLOPs, not ms), or None where it is one (whether a point fits it is the
    model's to say); ``shown``: what to quote as given (default ``text``)."""
    shown = text if shown is _AS_GIVEN else shown
    try:
        unit = parse_budget(text).unit
    except ExitSearchError as exc:
        if not text.strip() or "cannot read" in str(exc):
            return (
                'budget must be a mean cost per sample such as "40%" (of the backbone), '
                f'"30MFLOPs" or a number of FLOPs, got {shown!r}'
            )
        return str(exc).split("; accepted")[0]  # read, and out of range (every unit's list)
    if unit is BudgetUnit.MILLISECONDS:
        return (
            f"budget {text!r} is in milliseconds; a budget here is a mean cost per sample such "
            'as "40%" or "30MFLOPs" (the latency target is the server\'s --slo-ms)'
        )
    return None


# ASCII digits only, and not too many: str.isdigit() passes "³" (int() then fails: a 500)
# and "٣" (read as 3), and int() refuses over 4300 digits
_INTEGER = re.compile(r"\s*-?[0-9]{1,18}\s*")


def _positive_int(value: Any, name: str) -> int:
    given = value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(400, f"{name} must be a positive integer, got {given!r}")
    return value
