"""The inbound JSON API (`/api/v1/`): other systems fire triggers and start business processes.

Authenticated with an API key (`Authorization: Bearer b24r_…` or `X-API-Key`) scoped to one
installation and to the triggers and templates it may fire. A fire answers 202 once it is durably
journaled; the sender delivers it and `GET /api/v1/fires/{id}` reports `pending`, `delivered` or
`failed`. With an `Idempotency-Key` header the same key and the same request answer the same entry
again (nothing fires twice); the same key with a different request answers 409.
"""

# no `from __future__ import annotations`: FastAPI must see the dependencies defined inside
# build_api_router, which string annotations would hide from it
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from b24robots.errors import InputError, NotFound
from b24robots.jobs.outbound import Fired, OutboundError
from b24robots.robots.triggers import Entity
from b24robots.store.apikeys import ApiKey
from b24robots.store.journal import Invocation, call_status
from b24robots.web.services import Services

PREFIX = "/api/v1"
IDEMPOTENCY_MAX = 255

_bearer = HTTPBearer(auto_error=False, description="an API key created in the admin UI or with `b24robots api-keys`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same API key, as a header")


class ApiProblem(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason


class EntityRef(BaseModel):
    """Name the CRM entity either as a document id or as an entity type id and an id."""

    entity: str | None = Field(None, description="a document id: DEAL_42, LEAD_5, SMART_INVOICE_3, DYNAMIC_147_5")
    entity_type_id: int | None = Field(
        None, description="owner type: lead 1, deal 2, contact 3, company 4, quote 7, smart invoice 31, smart process"
    )
    entity_id: int | None = Field(None, description="the entity's id (with entity_type_id)")

    def resolve(self) -> Entity:
        if self.entity is not None and self.entity_type_id is None and self.entity_id is None:
            return Entity.parse(self.entity)
        if self.entity is None and self.entity_type_id is not None and self.entity_id is not None:
            return Entity(self.entity_type_id, self.entity_id)
        raise InputError("entity", "give either 'entity' (e.g. DEAL_42) or both 'entity_type_id' and 'entity_id'")


class FireRequest(EntityRef):
    model_config = {"json_schema_extra": {"examples": [{"entity": "DEAL_42"}, {"entity_type_id": 2, "entity_id": 42}]}}


class WorkflowStartRequest(EntityRef):
    template_id: int = Field(..., description="the business-process template id (TEMPLATE_ID)", gt=0)
    parameters: dict[str, Any] = Field(default_factory=dict, description="the template's parameters")
    model_config = {"json_schema_extra": {"examples": [{"template_id": 12, "entity": "DEAL_42", "parameters": {}}]}}


class FireStatus(BaseModel):
    id: int = Field(..., description="the journal entry id")
    kind: Literal["trigger", "workflow"]
    target: str = Field(..., description="the trigger code, or bp:<template id>")
    entity: str
    status: Literal["pending", "delivered", "failed"]
    error: str = ""
    result: Any = Field(None, description="what the portal answered (the started workflow's id)")
    received_at: float
    delivered_at: float | None = None
    status_url: str


class Problem(BaseModel):
    error: str
    reason: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no API key, an unknown or a revoked one"},
    403: {"model": Problem, "description": "the key may not fire this trigger or template"},
    404: {"model": Problem, "description": "no such trigger or journal entry"},
    409: {"model": Problem, "description": "idempotency key reused for another request, or the portal cannot fire"},
    422: {"model": Problem, "description": "a bad entity, or one that does not exist on the portal"},
}


def status_of(inv: Invocation) -> FireStatus:
    return FireStatus(
        id=inv.id,
        kind="workflow" if inv.robot_code.startswith("bp:") else "trigger",
        target=inv.robot_code,
        entity=inv.document_id[2] if len(inv.document_id) == 3 else "",
        status=call_status(inv),
        error=inv.error,
        result=(inv.outputs or {}).get("result"),
        received_at=inv.received_at,
        delivered_at=inv.delivered_at,
        status_url=f"{PREFIX}/fires/{inv.id}",
    )


def build_api_router(svc: Services) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["inbound API"], responses=ERRORS)

    async def api_key(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> ApiKey:
        plaintext = bearer.credentials if bearer is not None else header
        if not plaintext:
            raise ApiProblem(401, "unauthorized", "send the API key as 'Authorization: Bearer <key>' or 'X-API-Key'")
        key = await run_in_threadpool(svc.apikeys.authenticate, plaintext)
        if key is None:
            raise ApiProblem(401, "unauthorized", "the API key is unknown or revoked")
        return key

    def idem(value: str | None) -> str | None:
        if value is not None and (not value.strip() or len(value) > IDEMPOTENCY_MAX):
            raise ApiProblem(400, "bad_request", f"Idempotency-Key must be 1 to {IDEMPOTENCY_MAX} characters")
        return value.strip() if value else None

    def entity_of(body: EntityRef) -> Entity:
        try:
            return body.resolve()
        except InputError as exc:
            raise ApiProblem(422, "bad_entity", str(exc)) from None

    def answer(fired: Fired) -> JSONResponse:
        headers = {} if fired.created else {"Idempotent-Replayed": "true"}
        return JSONResponse(status_of(fired.entry).model_dump(), status_code=202, headers=headers)

    @router.post(
        "/triggers/{code}/fire",
        status_code=202,
        response_model=FireStatus,
        summary="Fire a CRM automation trigger for one entity",
    )
    async def fire(
        code: str,
        body: FireRequest,
        key: Annotated[ApiKey, Depends(api_key)],
        idempotency_key: Annotated[
            str | None, Header(description="the same key fires once; retries with it are safe")
        ] = None,
    ) -> JSONResponse:
        if not key.allows_trigger(code):
            raise ApiProblem(403, "forbidden", f"this API key may not fire trigger {code!r}")
        entity = entity_of(body)
        request = {"op": "fire", "trigger": code.lower(), "entity": entity.document_key}
        inst = await run_in_threadpool(svc.installations.by_id, key.installation_id)
        fired = await svc.outbound.fire_trigger(
            inst.member_id, code, entity, origin="api", key=idem(idempotency_key), body=request
        )
        return answer(fired)

    @router.post(
        "/workflows/start",
        status_code=202,
        response_model=FireStatus,
        summary="Start a business process (bizproc.workflow.start) on one entity",
    )
    async def start(
        body: WorkflowStartRequest,
        key: Annotated[ApiKey, Depends(api_key)],
        idempotency_key: Annotated[
            str | None, Header(description="the same key starts once; retries with it are safe")
        ] = None,
    ) -> JSONResponse:
        if not key.allows_template(body.template_id):
            raise ApiProblem(403, "forbidden", f"this API key may not start template {body.template_id}")
        entity = entity_of(body)
        request = {
            "op": "start",
            "template": body.template_id,
            "entity": entity.document_key,
            "parameters": body.parameters,
        }
        inst = await run_in_threadpool(svc.installations.by_id, key.installation_id)
        fired = await svc.outbound.start_workflow(
            inst.member_id,
            body.template_id,
            entity,
            body.parameters,
            origin="api",
            key=idem(idempotency_key),
            body=request,
        )
        return answer(fired)

    @router.get("/fires/{entry_id}", response_model=FireStatus, summary="Whether a fire was delivered")
    async def fire_status(entry_id: int, key: Annotated[ApiKey, Depends(api_key)]) -> FireStatus:
        try:
            inv = await run_in_threadpool(svc.journal.get, entry_id)
        except NotFound:
            inv = None
        if inv is None or inv.kind != "call" or inv.installation_id != key.installation_id:
            raise ApiProblem(404, "not_found", f"no fire {entry_id} for this API key's portal")
        return status_of(inv)

    return router


def problem_response(exc: ApiProblem | OutboundError) -> JSONResponse:
    if isinstance(exc, ApiProblem):
        return JSONResponse({"error": exc.error, "reason": exc.reason}, status_code=exc.status)
    names = {404: "not_found", 409: "conflict", 422: "unprocessable"}
    return JSONResponse({"error": names.get(exc.status, "refused"), "reason": str(exc)}, status_code=exc.status)
