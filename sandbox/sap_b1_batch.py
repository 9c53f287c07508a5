"""``$batch`` bodies of the SAP B1 Service Layer: multipart/mixed in, multipart/mixed out.

Wire rules (``vendors/sap_b1.md`` §2.7): CRLF line ends only; parts separated by ``--<boundary>``
and closed by ``--<boundary>--``; an ``application/http`` part is ``METHOD URL HTTP/1.1``, headers,
an empty line, then the body (a GET still needs the empty line); a changeset is a nested
``multipart/mixed`` part holding writes only, each with a ``Content-ID``. Malformed → code -1000
"Incomplete Batch Request Body!".
"""
from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from sandbox.sap_b1_company import B1Error

INCOMPLETE = "Incomplete Batch Request Body!"
NO_SEPARATOR = "Incomplete request, there should be two '\\r\\n' between sub-request header and content!"
CRLF = "\r\n"


@dataclass
class SubRequest:
    method: str
    url: str
    headers: dict[str, str]          # lower-case names
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    requests: list[SubRequest] = field(default_factory=list)


@dataclass
class SubResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    content_id: str | None = None


@dataclass
class ChangeSetResponse:
    responses: list[SubResponse]


def boundary_of(content_type: str) -> str:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/mixed":
        raise B1Error(-1000, INCOMPLETE)
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip():
            return value.strip().strip('"')
    raise B1Error(-1000, INCOMPLETE)


def _split(text: str, boundary: str) -> list[str]:
    """The parts between ``--boundary`` lines; the body must end with ``--boundary--``."""
    delimiter = "--" + boundary
    if (CRLF + delimiter + "--") not in (CRLF + text):
        raise B1Error(-1000, INCOMPLETE)
    body, _, _ = (CRLF + text).partition(CRLF + delimiter + "--")
    chunks = body.split(CRLF + delimiter)
    parts = []
    for chunk in chunks[1:]:   # chunks[0] is the preamble
        if not chunk.startswith(CRLF):
            raise B1Error(-1000, INCOMPLETE)
        parts.append(chunk[2:])
    if not parts:
        raise B1Error(-1000, INCOMPLETE)
    return parts


def _headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(CRLF) if block else []:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise B1Error(-1000, INCOMPLETE)
        headers[name.strip().lower()] = value.strip()
    return headers


def _mime(part: str) -> tuple[dict[str, str], str]:
    head, sep, rest = part.partition(CRLF + CRLF)
    if not sep:   # includes bare-LF bodies: the Service Layer insists on CRLF
        raise B1Error(-1000, INCOMPLETE)
    return _headers(head), rest


def _http(part_headers: dict[str, str], content: str) -> SubRequest:
    request_line, sep, rest = content.partition(CRLF)
    words = request_line.split()
    if not sep or len(words) not in (2, 3):
        raise B1Error(-1000, INCOMPLETE)
    if rest.startswith(CRLF):                  # no headers, then the empty line
        head, body = "", rest[2:]
    else:
        head, sep, body = rest.partition(CRLF + CRLF)
        if not sep:
            raise B1Error(-1000, NO_SEPARATOR)
    headers = _headers(head)
    if body.endswith(CRLF):
        body = body[:-2]
    content_id = part_headers.get("content-id") or headers.get("content-id")
    return SubRequest(words[0].upper(), words[1], headers, body.encode("utf-8"), content_id)


def parse_batch(body: bytes, content_type: str) -> list[SubRequest | ChangeSet]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise B1Error(-1000, INCOMPLETE) from None
    items: list[SubRequest | ChangeSet] = []
    for part in _split(text, boundary_of(content_type)):
        headers, content = _mime(part)
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/mixed":
            changeset = ChangeSet()
            for inner in _split(content, boundary_of(headers["content-type"])):
                inner_headers, inner_content = _mime(inner)
                if inner_headers.get("content-type", "").split(";")[0].strip().lower() != "application/http":
                    raise B1Error(-1000, INCOMPLETE)
                changeset.requests.append(_http(inner_headers, inner_content))
            items.append(changeset)
        elif kind == "application/http":
            items.append(_http(headers, content))
        else:
            raise B1Error(-1000, INCOMPLETE)
    return items


def _http_part(response: SubResponse) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if response.content_id is not None:
        lines.append(f"Content-ID: {response.content_id}")
    lines += ["", f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines += ["", response.body.decode("utf-8")]
    return CRLF.join(lines)


def build_response(items: Iterable[SubResponse | ChangeSetResponse]) -> tuple[str, bytes]:
    """``(content type, body)`` of the batch reply."""
    boundary = f"batchresponse_{_uuid()}"
    chunks = []
    for item in items:
        if isinstance(item, ChangeSetResponse):
            inner = f"changesetresponse_{_uuid()}"
            body = "".join(f"--{inner}{CRLF}{_http_part(r)}{CRLF}" for r in item.responses) + f"--{inner}--"
            chunks.append(f"--{boundary}{CRLF}Content-Type: multipart/mixed;boundary={inner}{CRLF}{CRLF}{body}{CRLF}")
        else:
            chunks.append(f"--{boundary}{CRLF}{_http_part(item)}{CRLF}")
    text = "".join(chunks) + f"--{boundary}--{CRLF}"
    return f"multipart/mixed;boundary={boundary}", text.encode("utf-8")


def _uuid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
