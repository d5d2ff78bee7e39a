"""Plain HTTP download and upload of circuit documents in the interchange formats.

``GET /circuits/{ref}.{fmt}`` (read scope) returns the document as a file;
``POST /circuits?format=...`` (write scope) stores the request body and returns the id.
A refused upload answers 422 in FastAPI's own validation-error shape, with ``loc`` naming
the query parameter or the body, and stores nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel

from circuitreg.services.interchange.errors import InterchangeError
from circuitreg.services.interchange.stored import load_document

from .deps import ReaderDep, ServicesDep, WriterDep
from .graphql_api.errors import InputError
from .graphql_api.importing import export_document, exportable_formats, import_document

router = APIRouter(tags=["circuits"])
EXPORT_NOTE_HEADER = "X-Circuitreg-Export-Note"
"""Set on a download when the format leaves part of the circuit out (notes joined by |)."""


class StoredCircuit(BaseModel):
    """The result of an upload."""

    id: str


class Problem(BaseModel):
    """An error a client can act on."""

    detail: str


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No token, or an unknown token."},
    403: {"model": Problem, "description": "The token lacks the scope."},
}


def unprocessable(loc: list[str], message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own request-validation errors."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": loc, "msg": message, "type": "value_error"}],
    )


@router.get(
    "/circuits/{circuit_ref}.{fmt}",
    summary="Download a circuit (by id or alias) in an interchange format.",
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The file.",
            "headers": {
                EXPORT_NOTE_HEADER: {
                    "description": "What the format leaves out of the circuit, if anything "
                    "(e.g. MIB has no token positions: a positional circuit exports summed).",
                    "schema": {"type": "string"},
                }
            },
        },
        404: {"model": Problem, "description": "No such circuit or format."},
        **AUTH_ERRORS,
    },
    response_class=Response,
)
async def download_circuit(
    circuit_ref: str, fmt: str, services: ServicesDep, _caller: ReaderDep
) -> Response:
    if fmt not in exportable_formats():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"unknown export format {fmt!r}; known: {', '.join(exportable_formats())}",
        )
    circuit_id = await services.call(services.store.resolve, circuit_ref)
    if circuit_id is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no circuit with id or alias {circuit_ref!r}"
        )
    try:
        doc = await services.call(load_document, services.store, services.artifacts, circuit_id)
    except InterchangeError as exc:  # vanished meanwhile, or its dense scores are unreadable
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    try:
        body, media_type, extension, notes = await services.call(export_document, doc, fmt)
    except InterchangeError as exc:
        raise unprocessable(["path", "fmt"], str(exc)) from None
    headers = {"Content-Disposition": f'attachment; filename="{doc.id}.{extension}"'}
    if notes:  # what the format leaves out, e.g. a positional circuit's positions in MIB
        headers[EXPORT_NOTE_HEADER] = " | ".join(notes)
    return Response(body, media_type=media_type, headers=headers)


@router.post(
    "/circuits",
    summary="Upload a circuit document; the body is the file, in `format` or detected.",
    status_code=status.HTTP_201_CREATED,
    responses={
        413: {"model": Problem, "description": "The body is too large."},
        422: {"description": "Malformed file or options; nothing was stored."},
        **AUTH_ERRORS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def upload_circuit(
    request: Request,
    services: ServicesDep,
    _caller: WriterDep,
    format: Annotated[str | None, Query(max_length=50)] = None,
    model: Annotated[str | None, Query(max_length=500)] = None,
    task: Annotated[str | None, Query(max_length=500)] = None,
    method: Annotated[str | None, Query(max_length=500)] = None,
) -> StoredCircuit:
    body = await request.body()  # its size is capped by BodyLimitMiddleware (max_upload_bytes)
    if not body:
        raise unprocessable(["body"], "empty request body")
    try:
        circuit_id = await import_document(
            services, bytes(body), format, {"model": model, "task": task, "method": method}
        )
    except InputError as exc:
        loc = ["query", "format"] if exc.field == "format" else ["body"]
        raise unprocessable(loc, str(exc)) from None
    return StoredCircuit(id=circuit_id)
