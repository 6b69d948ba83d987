"""The V2 binary tensor data extension over REST (what Triton and KServe accept, tritonclient's default).

A request or response body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw tensors,
in the order of the inputs (outputs) whose ``parameters.binary_data_size`` says how many bytes each takes.
Numbers are little-endian, row-major; BYTES elements are each a 4-byte little-endian length and the bytes.
A client asks for binary outputs with ``parameters.binary_data_output`` (all) or an output's
``parameters.binary_data``; JSON stays the answer otherwise.

Only numpy and orjson (both in the serving image) are imported. Every malformed body raises BinaryError naming
the input and what disagrees, never an IndexError from deep inside.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

HEADER = "inference-header-content-length"  # ASGI header names are lower-case
DTYPES = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_LENGTH = struct.Struct("<I")


class BinaryError(ValueError):
    """The body does not follow the binary extension (a client error: 400)."""


def parse_json(raw: bytes | memoryview, what: str = "request body") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BinaryError(f"{what} is not valid JSON ({exc})") from None


def split(body: bytes, header_length: str) -> tuple[Any, memoryview]:
    """(the JSON header, the binary tail) of a request carrying ``Inference-Header-Content-Length``."""
    try:
        length = int(header_length)
    except ValueError:
        raise BinaryError(f"Inference-Header-Content-Length {header_length!r} is not a number") from None
    if not 0 <= length <= len(body):
        raise BinaryError(f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes")
    view = memoryview(body)
    return parse_json(view[:length], "the JSON header"), view[length:]


def attach_inputs(doc: Any, tail: memoryview) -> None:
    """Replace each input's ``binary_data_size`` by its tensor read from ``tail``, in order."""
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    offset = 0
    for item in inputs if isinstance(inputs, list) else []:
        parameters = item.get("parameters") if isinstance(item, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        name = item.get("name")
        size = parameters.pop("binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BinaryError(f"input {name!r}: binary_data_size {size!r} is not a byte count")
        if "data" in item:
            raise BinaryError(f"input {name!r} has both data and binary_data_size")
        if offset + size > len(tail):
            raise BinaryError(
                f"input {name!r}: binary_data_size is {size} bytes but only {len(tail) - offset} are left "
                "in the body (truncated?)"
            )
        item["data"] = decode_tensor(
            name, item.get("datatype"), item.get("shape"), tail[offset : offset + size]
        )
        offset += size
    if offset != len(tail):
        raise BinaryError(
            f"{len(tail) - offset} byte(s) after the last binary input: the binary_data_size values "
            "and Inference-Header-Content-Length disagree with the body"
        )


def decode_tensor(name: Any, datatype: Any, shape: Any, raw: memoryview) -> np.ndarray | list[bytes]:
    """One input's raw bytes → a flat NumPy array (numbers) or a list of bytes (BYTES)."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BinaryError(f"input {name!r}: shape {shape!r} is not a list of sizes")
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_bytes(name, shape, count, raw)
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BinaryError(
            f"input {name!r}: datatype {datatype!r} has no binary form (one of BYTES, {', '.join(DTYPES)})"
        )
    if len(raw) != count * dtype.itemsize:
        raise BinaryError(
            f"input {name!r} ({datatype}, shape {shape}) takes {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype)


def _decode_bytes(name: Any, shape: list, count: int, raw: memoryview) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise BinaryError(f"input {name!r} (BYTES): element {len(out)} has a cut length prefix")
        (size,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if at + size > len(raw):
            raise BinaryError(
                f"input {name!r} (BYTES): element {len(out)} says {size} bytes, {len(raw) - at} are left"
            )
        out.append(bytes(raw[at : at + size]))
        at += size
    if len(out) != count:
        raise BinaryError(
            f"input {name!r} (BYTES): shape {shape} says {count} element(s), the data has {len(out)}"
        )
    return out


def output_selector(doc: dict) -> Callable[[str], bool]:
    """Which outputs the client wants in binary: per output ``binary_data``, else ``binary_data_output``."""
    parameters = doc.get("parameters") or {}
    default = parameters.get("binary_data_output") is True if isinstance(parameters, dict) else False
    chosen: dict[str, bool] = {}
    outputs = doc.get("outputs")
    for out in outputs if isinstance(outputs, list) else []:
        parameters = out.get("parameters") if isinstance(out, dict) else None
        if isinstance(parameters, dict) and "binary_data" in parameters:
            chosen[str(out.get("name"))] = parameters["binary_data"] is True
    return lambda name: chosen.get(name, default)


def encode_tensor(datatype: str, data: Any) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in np.ravel(np.asarray(data, dtype=object)):
            raw = value if isinstance(value, bytes) else str(value).encode()
            parts += [_LENGTH.pack(len(raw)), raw]
        return b"".join(parts)
    return np.ascontiguousarray(data, dtype=DTYPES[datatype]).tobytes()


def encode_response(doc: dict, binary: Callable[[str], bool]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None): the chosen outputs' data moved into the binary tail."""
    tail = []
    for out in doc.get("outputs") or []:
        if not binary(out.get("name", "")) or "data" not in out:
            continue
        raw = encode_tensor(out["datatype"], out.pop("data"))
        out["parameters"] = {**(out.get("parameters") or {}), "binary_data_size": len(raw)}
        tail.append(raw)
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_bytes_as_text)
    if not tail:
        return head, None
    return head + b"".join(tail), len(head)


def _bytes_as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
