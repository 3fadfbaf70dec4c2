"""Requests: what a client may send, and a one-line 4xx with the right status for the rest."""

from __future__ import annotations

import base64
import gc
import io
import json
import struct
import weakref
import zlib

import numpy as np
import pytest
from PIL import Image

from exitsearch.serve.requests import (
    Limits,
    RequestError,
    decode_images,
    open_request,
    parse_request,
)

LIMITS = Limits(max_bytes=200_000, max_images=4, max_pixels=256 * 256)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def grey(seed: int = 0, size: int = 28) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width x height`` grey pixels, with one tiny
    IDAT: what a decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def status_of(*args: object) -> tuple[int, str]:
    with pytest.raises(RequestError) as info:
        parse_request(*args)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and message
    return info.value.status, message


def test_raw_png_and_jpeg_with_query_options():
    req = parse_request("image/png", encode(grey()), {"top_k": "3", "operating_point": "2"}, LIMITS)
    assert len(req.images) == 1 and not req.batch
    assert req.top_k == 3 and req.operating_point == 2 and req.budget is None
    assert np.array_equal(np.asarray(req.images[0]), np.asarray(grey()))  # PNG is lossless
    jpeg = parse_request("image/jpeg", encode(grey().convert("RGB"), "JPEG"), {}, LIMITS)
    assert jpeg.images[0].mode == "RGB" and jpeg.top_k is None


def test_a_base64_data_url_reads_as_its_image():
    """What a browser's FileReader.readAsDataURL gives."""
    url = "data:image/png;base64," + base64.b64encode(encode(grey(2))).decode()
    req = parse_request("application/json", json.dumps({"images": [url]}).encode(), {}, LIMITS)
    assert np.array_equal(np.asarray(req.images[0]), np.asarray(grey(2)))


def test_json_single_and_batch():
    b64 = [base64.b64encode(encode(grey(i))).decode() for i in range(3)]
    one = parse_request("application/json", json.dumps({"image": b64[0]}).encode(), {}, LIMITS)
    assert not one.batch and len(one.images) == 1
    many = parse_request(
        "application/json; charset=utf-8",
        json.dumps({"images": b64, "budget": "40%", "top_k": 1}).encode(),
        {},
        LIMITS,
    )
    assert many.batch and len(many.images) == 3 and many.budget == "40%" and many.top_k == 1
    for i, image in enumerate(many.images):
        assert np.array_equal(np.asarray(image), np.asarray(grey(i)))


@pytest.mark.parametrize(
    ("content_type", "body", "status", "fragment"),
    [
        ("image/png", b"not an image at all", 415, "is not a PNG, JPEG or WEBP image"),
        ("text/plain", b"hello", 415, "unsupported Content-Type 'text/plain'"),
        ("application/json", b"{", 400, "malformed JSON"),
        ("application/json", b'{"top_k": 1' + b"0" * 5000 + b"}", 400, "malformed JSON"),
        ("application/json", b" ", 400, "the JSON body is empty"),
        ("application/json", b'{"images": ["x", "@@"]}', 400, "images[0] is not valid base64"),
        ("application/json", b'{"image": "data:image/png,abc"}', 400, "without base64"),
        ("application/json", b"[1, 2]", 400, "must be an object"),
        ("application/json", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        ("application/json", b'{"image": "@@@"}', 400, "not valid base64"),
        ("application/json", b'{"image": 3}', 400, "must be a base64 string"),
        ("application/json", b'{"images": []}', 400, "non-empty list"),
        ("application/json", b'{"foo": 1}', 400, 'exactly one of "image"'),
        ("image/png", b"", 400, "holds no image"),
        ("image/png", b"x" * 200_001, 413, "exceeds 200000"),
    ],
)
def test_malformed_requests(content_type: str, body: bytes, status: int, fragment: str):
    got, message = status_of(content_type, body, {}, LIMITS)
    assert got == status and fragment in message


def test_options_are_checked():
    png = encode(grey())
    for query, fragment in [
        ({"top_k": "0"}, "top_k must be a positive integer"),
        ({"top_k": "two"}, "top_k must be a positive integer"),
        ({"top_k": "\u00b3"}, "top_k must be a positive integer"),  # a digit to isdigit()
        ({"top_k": "\u0663"}, "top_k must be a positive integer"),  # Arabic-Indic three
        ({"operating_point": "\u00b3"}, "operating_point must be an index"),
        ({"top_k": "9" * 5000}, "top_k must be a positive integer"),  # over int()'s digits
        ({"operating_point": "first"}, "operating_point must be an index"),
        ({"operating_point": "1", "budget": "40%"}, "not both"),
        ({"budget": "fast"}, 'budget must be a mean cost per sample such as "40%"'),
        ({"budget": "12ms"}, "budget '12ms' is in milliseconds"),
        ({"top_k": "0"}, "got '0'"),  # as sent
        ({"colour": "red"}, "unknown option 'colour'"),
    ]:
        status, message = status_of("image/png", png, query, LIMITS)
        assert status == 400 and fragment in message, (query, message)


def test_json_body_takes_query_options_too():
    """Options in the query string apply to a JSON body as to raw bytes; one given in both
    places, or one unknown, is refused rather than ignored."""
    doc = json.dumps({"image": base64.b64encode(encode(grey())).decode(), "top_k": 2}).encode()
    req = parse_request("application/json", doc, {"operating_point": "3"}, LIMITS)
    assert req.operating_point == 3 and req.top_k == 2
    status, message = status_of("application/json", doc, {"top_k": "3"}, LIMITS)
    assert status == 400 and "'top_k' given both" in message
    status, message = status_of("application/json", doc, {"foo": "1"}, LIMITS)
    assert status == 400 and "unknown option 'foo'" in message


def test_negative_points_and_numeric_budgets_reach_the_model():
    """A negative index is the model's to refuse (422, as any point it lacks); a budget sent
    as a JSON number is FLOPs per sample."""
    png = encode(grey())
    assert parse_request("image/png", png, {"operating_point": "-1"}, LIMITS).operating_point == -1
    b64 = base64.b64encode(png).decode()
    doc = json.dumps({"image": b64, "budget": 30000000}).encode()
    assert parse_request("application/json", doc, {}, LIMITS).budget == "30000000"
    doc = json.dumps({"image": b64, "budget": True}).encode()
    assert status_of("application/json", doc, {}, LIMITS)[0] == 400


def test_too_many_images_and_pixels():
    b64 = base64.b64encode(encode(grey())).decode()
    status, message = status_of(
        "application/json", json.dumps({"images": [b64] * 5}).encode(), {}, LIMITS
    )
    assert status == 413 and "at most 4" in message
    status, message = status_of("image/png", encode(grey(size=300)), {}, LIMITS)
    assert status == 413 and "300x300 pixels" in message


def test_decompression_bomb_is_refused_from_its_header():
    bomb = png_header_only(100_000, 100_000)  # 10^10 pixels in a 100-byte file
    assert len(bomb) < 200
    status, message = status_of("image/png", bomb, {}, Limits())
    assert status == 413 and f"at most {Limits().max_pixels} pixels" in message
    assert "holds 10000000000 pixels" in message, message


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (Image.new("RGBA", (8, 8)), "alpha channel"),
        (Image.new("LA", (8, 8)), "alpha channel"),
        (Image.new("I;16", (8, 8)), "is 16- or 32-bit integer (mode I;16)"),
    ],
)
def test_channels_the_model_cannot_read(image: Image.Image, fragment: str):
    status, message = status_of("image/png", encode(image), {}, LIMITS)
    assert status == 422 and fragment in message


def test_cmyk_jpeg_is_refused():
    status, message = status_of("image/jpeg", encode(Image.new("CMYK", (8, 8)), "JPEG"), {}, LIMITS)
    assert status == 422 and "CMYK" in message


def test_truncated_image():
    png = encode(grey(size=64))
    status, message = status_of("image/png", png[: len(png) // 2], {}, LIMITS)
    assert status == 400 and "truncated or corrupt" in message


def test_pixels_summed_over_a_request_are_capped():
    limits = Limits(max_pixels=64 * 64, max_request_pixels=3 * 64 * 64)
    three = json.dumps({"images": [base64.b64encode(encode(grey(size=64))).decode()] * 3})
    assert len(parse_request("application/json", three.encode(), {}, limits).images) == 3
    four = json.dumps({"images": [base64.b64encode(encode(grey(size=64))).decode()] * 4})
    status, message = status_of("application/json", four.encode(), {}, limits)
    assert status == 413 and "4 images hold 16384 pixels; at most 12288" in message


def test_a_request_is_opened_first_and_decoded_image_by_image():
    """The headers are checked without decoding; decoding with a transform keeps what it
    makes of each image."""
    pngs = [encode(grey(seed=i, size=40)) for i in range(3)]
    doc = json.dumps({"images": [base64.b64encode(p).decode() for p in pngs]}).encode()
    req = open_request("application/json", doc, {}, Limits())
    assert req.pixels == 3 * 40 * 40 and req.batch
    sizes = decode_images(req, lambda im: np.asarray(im).shape)
    assert sizes == [(40, 40)] * 3
    # decoding again gives the same pixels (each decode reads the bytes from the start)
    again = decode_images(req, np.asarray)
    assert all(np.array_equal(a, np.asarray(grey(seed=i, size=40))) for i, a in enumerate(again))
    # a truncated image passes the header check and fails when decoded, in one line
    cut = open_request("image/png", pngs[0][: len(pngs[0]) // 2], {}, Limits())
    with pytest.raises(RequestError, match="the image is truncated or corrupt") as err:
        decode_images(cut)
    assert err.value.status == 400


def test_decoding_lets_go_of_each_full_size_image_before_the_next():
    """With a transform, only what it returns is kept: when image i is decoded no earlier
    full-size image is alive, nor any after the call (the request holds its bytes only)."""
    pngs = [encode(grey(seed=i, size=64)) for i in range(4)]
    doc = json.dumps({"images": [base64.b64encode(p).decode() for p in pngs]}).encode()
    req = open_request("application/json", doc, {}, Limits())
    seen: list[weakref.ref] = []
    alive_at_each: list[int] = []

    def shrink(image: Image.Image) -> np.ndarray:
        gc.collect()
        alive_at_each.append(sum(r() is not None for r in seen))
        seen.append(weakref.ref(image))
        return np.asarray(image.resize((8, 8)))

    out = decode_images(req, shrink)
    gc.collect()
    assert [a.shape for a in out] == [(8, 8)] * 4
    assert alive_at_each == [0, 0, 0, 0]
    assert all(r() is None for r in seen)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_bytes": 0}, {"max_images": 1.5}, {"body_idle_s": 0}, {"body_idle_s": float("inf")}],
)
def test_limits_are_checked(kwargs: dict[str, object]):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Limits(**kwargs)  # type: ignore[arg-type]
