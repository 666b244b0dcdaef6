"""The admin API (aiohttp): thin handlers over the registry; also served under /v2, /v3, /v4."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, cast

import structlog
from aiohttp import web

from admin_api import (
    discovery,
    introspection,
    invocation_ops,
    invocations,
    json_body,
    openapi,
    state,
    subscriptions,
)
from admin_api.introspection import ChangelogView
from admin_api.invocations import InvocationControl
from admin_api.json_body import Rejection
from admin_api.metrics import request_metrics
from admin_api.registration import (
    Outcome,
    RegistrationPlan,
    RegistryError,
    UriKind,
    deployment_services,
    find_deployment,
    plan_registration,
    plan_removal,
    plan_update,
    unchanged,
    uri_kind,
)
from admin_api.rest_model import (
    deployment_json,
    handler_json,
    parse_register_request,
    parse_update_request,
    register_response_json,
    service_json,
)
from admin_api.state import StateEditor
from admin_api.store import RegistryStore
from kafka_core import observability
from kafka_core.request_identity import RequestSigner, load_request_signer
from kafka_core.supervision import Unavailable, join_problems
from schemas.durations import parse_duration_ms
from schemas.ids import DeploymentId, InvalidId
from schemas.registry import CLUSTER_PREFIX, SERVICE_PREFIX, SUBSCRIPTION_PREFIX, DeploymentRecord
from schemas.settings import Settings

log = structlog.get_logger(__name__)

SERVER_VERSION = "1.7.12"
API_VERSIONS = (2, 3, 4)
STORE_KEY = web.AppKey("store", object)
CONTROL_KEY = web.AppKey("control", object)
CHANGELOG_KEY = web.AppKey("changelog", object)
STATE_KEY = web.AppKey("state_editor", object)
SETTINGS_KEY = web.AppKey("settings", Settings)
SIGNER_KEY = web.AppKey("request_signer", object)  # RequestSigner | None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, restate_code: str | None = None) -> web.Response:
    return _json({"message": message, "restate_code": restate_code}, status)


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


_V1 = re.compile(r"^/v1(?:/|$)")  # Restate knows V1 (and refuses it); other unknown /vN are 404


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except Rejection as e:  # axum's rejection of the body, before Restate's handler: text/plain
        return _plain(e.status, e.render(await request.read()))
    except RegistryError as e:
        return _error(e.status, e.message, e.restate_code)
    except Unavailable as e:  # Kafka did not take a write or did not answer within its bound
        log.warning("admin.unavailable", path=request.path, reason=str(e))
        return _error(503, str(e))
    except web.HTTPMethodNotAllowed as e:  # as Restate (axum): no body, the methods in `allow`
        return web.Response(status=405, headers={"allow": ",".join(sorted(e.allowed_methods))})
    except web.HTTPNotFound:  # as Restate: no body; an admin API version below V2 is refused
        if _V1.match(request.path):
            return _plain(
                400,
                "Unsupported Admin API version V1. This server supports versions between "
                f"V{API_VERSIONS[0]} and V{API_VERSIONS[-1]}.",
            )
        return web.Response(status=404)
    except web.HTTPException as e:
        if e.status >= 400:
            return _error(e.status, e.reason or "error")
        raise
    except Exception as e:
        log.exception("admin.unhandled", path=request.path)
        return _error(500, f"internal error: {e}")


def _store(request: web.Request) -> RegistryStore:
    return request.app[STORE_KEY]  # type: ignore[return-value]


def _signer(request: web.Request) -> RequestSigner | None:
    return request.app[SIGNER_KEY]  # type: ignore[return-value]


def _problem(app: web.Application) -> str | None:
    """Why this admin server cannot serve (a Kafka-backed part that is down), or None."""
    parts = (app.get(STORE_KEY), app.get(CONTROL_KEY), app.get(CHANGELOG_KEY))
    checks = [getattr(p, "health", None) for p in parts]
    return join_problems(*(check() for check in checks if callable(check)))


async def health(request: web.Request) -> web.Response:
    problem = _problem(request.app)
    if problem is not None:
        return _error(503, f"the admin API is not healthy: {problem}")
    return web.Response(status=200)


async def cluster_health(request: web.Request) -> web.Response:
    """Restate's `ClusterHealthResponse`. The cluster is named by the topic prefix (what
    separates one kinvoke cluster from another on a Kafka cluster); there is no embedded
    metadata cluster: the registry is a Kafka topic."""
    problem = _problem(request.app)
    if problem is not None:
        return _error(503, f"the cluster is not healthy: {problem}")
    settings = request.app[SETTINGS_KEY]
    return _json({"cluster_name": settings.topic_prefix, "metadata_cluster_health": None})


async def admin_openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi.admin_openapi(), content_type="application/json")


async def health_details(request: web.Request) -> web.Response:
    """kinvoke's own: `/health` keeps Restate's empty 200. Whether Kafka is reachable and whether
    the registry view is current (caught up with the metadata topic's end, asked now); 503 when
    either is not."""
    problem = _problem(request.app)
    catch_up = None if problem is not None else getattr(_store(request), "catch_up", None)
    report = await observability.health_report(problem, catch_up)
    if problem is not None:
        report["registry"]["problem"] = "not checked: Kafka is unreachable"
    return _json(report, 200 if report["healthy"] else 503)


def _kinvoke_version() -> str:
    try:
        return package_version("kinvoke")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


async def version(request: web.Request) -> web.Response:
    """Restate's VersionInformation; `kinvoke_version` beside it (the CLI, like any serde client
    of that struct, ignores fields it does not know)."""
    settings = request.app[SETTINGS_KEY]
    return _json(
        {
            "version": SERVER_VERSION,
            "min_admin_api_version": API_VERSIONS[0],
            "max_admin_api_version": API_VERSIONS[-1],
            "ingress_endpoint": settings.ingress_url(),
            "features": {},
            "kinvoke_version": _kinvoke_version(),
        }
    )


def _api_version(request: web.Request) -> int | None:
    """The admin API version the path asked for (`/v2/...`); None without a prefix (Restate's
    `AdminApiVersion::Unknown`, which behaves as the latest)."""
    head = request.path.split("/", 2)[1]
    return int(head[1:]) if head in {f"v{v}" for v in API_VERSIONS} else None


async def _read_json(request: web.Request) -> Any:
    """axum's `Json` extractor: a JSON content-type (415 otherwise), then JSON (400 otherwise)."""
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))):
        raise Rejection(415, "Expected request with `Content-Type: application/json`")
    try:
        return json.loads(await request.read())
    except ValueError as e:
        raise Rejection(400, f"Failed to parse the request body as JSON: {e}") from None


def _check_uri(uri: str) -> None:
    """Restate's `validate_uri`: only absolute URIs, refused before any discovery."""
    if uri_kind(uri) != UriKind.ABSOLUTE:
        raise RegistryError(
            400,
            f"The request field 'uri' is invalid. Reason: The provided uri {uri} is not absolute, "
            "only absolute URIs can be used.",
        )


def _deployment_id(request: web.Request) -> str:
    """The `{deployment}` path parameter, decoded as Restate decodes a `DeploymentId` (400, as
    axum's path rejection, when it is not one)."""
    raw = request.match_info["deployment"]
    prefix, sep, rest = raw.partition("_")
    reason = None
    if not raw:
        reason = "bad length"
    elif not sep:
        reason = "bad format"
    elif prefix != "dp":
        known = {"inv", "sub", "sign", "prom", "snap", "pid"}
        mismatch = "id doesn't match the expected type"
        reason = mismatch if prefix in known else f"unrecognized resource type: {prefix}"
    elif not rest:
        reason = "bad length"
    elif rest[0] != "1":
        reason = "unrecognized codec version"
    elif len(rest) != 23:
        reason = "bad length"
    else:
        try:
            return str(DeploymentId.parse(raw))
        except InvalidId:
            reason = "base62 decode error"
    raise RegistryError(400, f"Invalid URL: {reason}")


def _existing_deployment(request: web.Request, dep_id: str) -> DeploymentRecord:
    dep = _store(request).snapshot().deployment(dep_id)
    if dep is None:
        raise RegistryError(404, f"The requested deployment '{dep_id}' does not exist")
    return dep


async def _write(request: web.Request, records: list[tuple[str, bytes | None]]) -> None:
    if records:  # the Kafka store waits for the last record it wrote: nothing to wait for here
        await _store(request).write(records)


async def register_deployment(request: web.Request) -> web.Response:
    """`POST /deployments`, with Restate's rules: a registered URI is answered as it is (200,
    no discovery) unless `force`; `force` re-discovers and replaces its services (200); a new
    URI is 201, also as a dry run (the CLI's `deployments register` sends one first)."""
    body = parse_register_request(await _read_json(request))
    if body.lambda_arn is not None:
        raise RegistryError(501, "Lambda deployments are not supported by kinvoke")
    _check_uri(body.uri)
    version = _api_version(request)
    # `force` defaults to true only for admin API v1/v2 clients.
    force = body.force if body.force is not None else version == 2
    store = _store(request)
    registry = store.snapshot()
    existing = find_deployment(registry, body.uri)
    if existing is not None and not force:
        plan = unchanged(registry, existing)
    else:
        discovered = await discovery.discover(
            body.uri,
            use_http_11=body.use_http_11,
            additional_headers=body.additional_headers,
            signer=_signer(request),
        )
        now_ms = int(time.time() * 1000)
        plan = plan_registration(
            store.snapshot(),
            discovered,
            uri=body.uri,
            overwrite=force,
            allow_breaking=force or body.breaking,
            additional_headers=body.additional_headers or {},
            metadata=body.metadata,
            now_ms=now_ms,
            new_deployment_id=str(DeploymentId.generate(now_ms, secrets.randbits(80))),
        )
        if not body.dry_run:
            await _write(request, plan.records())
    status = _register_status(plan, version)
    log.info(
        "deployment.registered",
        id=plan.deployment.id,
        uri=plan.deployment.uri,
        status=status,
        outcome=plan.outcome.value,
        dry_run=body.dry_run,
        services=[s.name for s in plan.services],
    )
    return _json(
        register_response_json(plan.deployment, plan.services),
        status,
        headers={"location": f"deployments/{plan.deployment.id}"},
    )


def _register_status(plan: RegistrationPlan, version: int | None) -> int:
    """201 created; 200 unchanged or overwritten (admin API v3+); v2 answered 409 and 201."""
    if plan.outcome == Outcome.CREATED:
        return 201
    if version is not None and version < 3:
        if plan.outcome == Outcome.UNCHANGED:
            raise RegistryError(409, f"Conflict: deployment {plan.deployment.id} already exists")
        return 201
    return 200


async def list_deployments(request: web.Request) -> web.Response:
    registry = _store(request).snapshot()
    deps = sorted(registry.deployments.values(), key=lambda d: d.created_at_ms)
    return _json({"deployments": [deployment_json(d) for d in deps]})


async def get_deployment(request: web.Request) -> web.Response:
    dep = _existing_deployment(request, _deployment_id(request))
    return _json(deployment_json(dep, deployment_services(_store(request).snapshot(), dep)))


async def update_deployment(request: web.Request) -> web.Response:
    """`PATCH /deployments/{id}` (`PUT` under /v2): without `uri`, `additional_headers` or
    `use_http_11` nothing changes (200 with the deployment); else it is discovered again at the
    (new) address and updated, its services replaced only with `overwrite`."""
    dep_id = _deployment_id(request)
    body = parse_update_request(await _read_json(request))
    if request.method == "PUT" and _api_version(request) != 2:
        raise RegistryError(405, "PUT deployment is deprecated, use PATCH instead")
    if (
        body.uri is None
        and body.additional_headers is None
        and body.use_http_11 is None
        and not (body.lambda_address)
    ):
        dep = _existing_deployment(request, dep_id)
        return _json(deployment_json(dep, deployment_services(_store(request).snapshot(), dep)))
    if body.uri is not None:
        _check_uri(body.uri)
    existing = _store(request).snapshot().deployment(dep_id)
    if existing is None and not body.lambda_variant:
        raise RegistryError(404, f"The requested deployment '{dep_id}' does not exist")
    if existing is None:
        raise RegistryError(404, f"not found in the schema registry: deployment with id '{dep_id}'")
    if body.lambda_address:
        raise RegistryError(
            400,
            "cannot update the deployment, as the deployment type is http while the update options are "
            "for type lambda",
        )
    if body.uri is not None:
        uri, use_http_11 = body.uri, bool(body.use_http_11)
    else:
        uri = existing.uri
        same_version = existing.http_version == "HTTP/1.1"
        use_http_11 = body.use_http_11 if body.use_http_11 is not None else same_version
    headers = body.additional_headers if body.additional_headers is not None else existing.additional_headers
    discovered = await discovery.discover(
        uri, use_http_11=use_http_11, additional_headers=headers, signer=_signer(request)
    )
    plan = plan_update(
        _store(request).snapshot(),
        existing,
        discovered,
        uri=uri,
        additional_headers=headers,
        overwrite=body.overwrite,
    )
    if not body.dry_run:
        await _write(request, plan.records())
    log.info(
        "deployment.updated",
        id=dep_id,
        uri=plan.deployment.uri,
        overwrite=body.overwrite,
        dry_run=body.dry_run,
        services=[s.name for s in plan.services],
    )
    return _json(deployment_json(plan.deployment, plan.services))


async def delete_deployment(request: web.Request) -> web.Response:
    """`DELETE /deployments/{id}`: only `?force=true` is supported (202; its services go unless
    another deployment serves them); otherwise 501, as Restate."""
    dep_id = _deployment_id(request)
    if not json_body.bool_query(request.query, "force"):
        return web.Response(status=501)
    registry = _store(request).snapshot()
    dep = registry.deployment(dep_id)
    if dep is None:
        raise RegistryError(404, f"not found in the schema registry: deployment with id '{dep_id}'")
    await _write(request, plan_removal(registry, dep))
    log.info("deployment.removed", id=dep_id, uri=dep.uri, services=[s.name for s in dep.services])
    return web.Response(status=202)


def _service(request: web.Request) -> Any:
    name = request.match_info["service"]
    svc = _store(request).snapshot().service(name)
    if svc is None:
        raise RegistryError(404, f"The requested service '{name}' does not exist")
    return svc


async def list_services(request: web.Request) -> web.Response:
    registry = _store(request).snapshot()
    return _json({"services": [service_json(s) for s in registry.services.values()]})


async def get_service(request: web.Request) -> web.Response:
    return _json(service_json(_service(request)))


_DURATION_FIELDS = {
    "idempotency_retention": "idempotency_retention_ms",
    "workflow_completion_retention": "workflow_completion_retention_ms",
    "journal_retention": "journal_retention_ms",
    "inactivity_timeout": "inactivity_timeout_ms",
    "abort_timeout": "abort_timeout_ms",
}


async def modify_service(request: web.Request) -> web.Response:
    """`PATCH /services/{s}`: visibility and retention/timeout options; unknown fields are ignored."""
    body = await _read_json(request)  # axum's extractor runs first: a bad body is refused before a 404
    svc = _service(request)
    if not isinstance(body, dict):  # every field is optional: serde reads a sequence as no field
        body = {}
    update: dict[str, Any] = {}
    for field, value in body.items():  # serde's order: the body's
        if field == "public" and value is not None and not isinstance(value, bool):
            raise json_body.invalid_type(value, "a boolean", (field,))
        if field not in _DURATION_FIELDS or value is None:
            continue
        if not isinstance(value, str):
            raise json_body.invalid_type(value, "a human-friendly duration string", (field,))
        try:
            update[_DURATION_FIELDS[field]] = parse_duration_ms(value)
        except ValueError as e:
            raise json_body.mismatch(f"{field}: {e}", (field,)) from None
    if "workflow_completion_retention_ms" in update and svc.ty != "Workflow":
        raise RegistryError(400, "workflow_completion_retention can be modified only for workflow services")
    changed = svc.model_copy(update=update, deep=True)
    if isinstance(body.get("public"), bool):
        changed.public = body["public"]
        for handler in changed.handlers:
            handler.public = body["public"]
    await _store(request).write([(f"{SERVICE_PREFIX}{changed.name}", changed.encode())])
    return _json(service_json(changed))


async def list_handlers(request: web.Request) -> web.Response:
    return _json({"handlers": [handler_json(h) for h in _service(request).handlers]})


async def get_handler(request: web.Request) -> web.Response:
    svc = _service(request)
    name = request.match_info["handler"]
    handler = svc.handler(name)
    if handler is None:
        raise RegistryError(404, f"The requested handler '{name}' on service '{svc.name}' does not exist")
    return _json(handler_json(handler))


async def service_openapi(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    doc = openapi.service_openapi(_service(request), settings.ingress_url())
    return web.Response(
        body=json.dumps(doc, sort_keys=True, separators=(",", ":")), content_type="application/json"
    )


async def modify_service_state(request: web.Request) -> web.Response:
    """`POST /services/{s}/state`: 202 once the edit is in the log (`admin_api.state`)."""
    body = state.parse_request(await _read_json(request))
    name = request.match_info["service"]
    patch = state.plan_edit(_store(request).snapshot(), name, body)
    editor = request.app.get(STATE_KEY)
    if editor is None:
        raise RegistryError(503, "state editing is not available on this admin server")
    await cast(StateEditor, editor).edit(patch, state.now_ms())
    log.info(
        "service.state_edit_accepted",
        service=name,
        key=patch.key,
        keys=sorted(patch.new_state),
        versioned=patch.version is not None,
    )
    return web.Response(status=202)


def _control(request: web.Request) -> InvocationControl:
    control = request.app.get(CONTROL_KEY)
    if control is None:
        raise RegistryError(503, "invocation management is not available on this admin server")
    return control  # type: ignore[return-value]


async def patch_invocation(request: web.Request) -> web.Response:
    op = invocations.mode_of(request.match_info["operation"])
    return await invocations.run_operation(_control(request), request.match_info["invocation"], op)


async def pause_invocation(request: web.Request) -> web.Response:
    return await invocation_ops.pause(_control(request), request.match_info["invocation"])


async def resume_invocation(request: web.Request) -> web.Response:
    if "deployment" in request.query:  # resolved with the invocation's service from the copy
        await _read_your_writes(request)
    return await invocation_ops.resume(
        _control(request),
        request.match_info["invocation"],
        dict(request.query),
        _store(request).snapshot(),
        _service_of(request),
    )


async def purge_journal(request: web.Request) -> web.Response:
    return await invocation_ops.purge_journal(_control(request), request.match_info["invocation"])


async def restart_as_new(request: web.Request) -> web.Response:
    if "deployment" in request.query:  # resolved with the invocation's service from the copy
        await _read_your_writes(request)
    return await invocation_ops.restart_as_new(
        _control(request),
        request.match_info["invocation"],
        dict(request.query),
        _store(request).snapshot(),
        _service_of(request),
    )


def _service_of(request: web.Request) -> invocation_ops.ServiceOf:
    """The invocation's service from the admin's copy of the changelog (None if not there)."""
    view = request.app.get(CHANGELOG_KEY)

    def service_of(invocation_id: str) -> str | None:
        if view is None:
            return None
        changelog = cast(ChangelogView, view)
        with changelog.lock:
            status = changelog.store.status(invocation_id)
        return status.target.service if status is not None else None

    return service_of


async def delete_invocation(request: web.Request) -> web.Response:
    """Deprecated form: `DELETE /invocations/{id}?mode=Cancel|Kill|Purge` (default Cancel)."""
    op = invocations.mode_of(request.query.get("mode", "Cancel"))
    response = await invocations.run_operation(_control(request), request.match_info["invocation"], op)
    return web.Response(status=202) if response.status < 300 else response


def _changelog(request: web.Request) -> ChangelogView:
    view = request.app.get(CHANGELOG_KEY)
    if view is None:
        raise RegistryError(503, "introspection is not available on this admin server")
    return view  # type: ignore[return-value]


# How long a read waits for the admin's copy of the changelog to catch up before it answers
# from what the copy holds (Kafka unreachable, the copy rebuilding).
READ_BARRIER_S = 5.0


async def _read_your_writes(request: web.Request) -> None:
    """Bring the changelog copy up to what is committed now, so a query right after a call (or an
    idempotent send's 202) sees it, as Restate's queries read the partition stores that answered."""
    view = request.app.get(CHANGELOG_KEY)
    catch_up = getattr(view, "catch_up", None)
    if catch_up is None:  # a copy with no Kafka behind it (unit tests' stand-ins)
        return
    try:
        await asyncio.to_thread(catch_up, READ_BARRIER_S)
    except TimeoutError as e:
        log.warning("introspection.read_behind", reason=str(e))


def _sql_source(request: web.Request) -> introspection.Source:
    """The changelog view's tables (a view without them, as in tests, is read afresh per query)."""
    view = _changelog(request)
    source = getattr(view, "source", None)
    return source if isinstance(source, introspection.Source) else introspection.Source(view.store, view.lock)


async def query(request: web.Request) -> web.Response:
    """`POST /query {"query": SQL}`: JSON rows when `accept` is exactly `application/json` (as
    Restate checks it), else an Arrow IPC stream. Runs off the event loop."""
    body = await _read_json(request)
    if not isinstance(body, dict):
        raise json_body.invalid_type(body, "struct QueryRequest", ())
    if "query" not in body:
        raise json_body.missing_field("query")
    sql = body["query"]
    if not isinstance(sql, str):
        raise json_body.invalid_type(sql, "a string", ("query",))
    source = _sql_source(request)
    await _read_your_writes(request)
    registry = _store(request).snapshot()
    try:
        table = await asyncio.to_thread(introspection.run_query, source, registry, sql)
    except introspection.QueryError as e:
        return _json({"message": str(e)}, e.status)
    if request.headers.get("accept", "").strip() == "application/json":
        return web.Response(body=introspection.rows_json(table), headers={"content-type": "application/json"})
    return web.Response(
        body=introspection.arrow_stream(table),
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )


async def list_invocations(request: web.Request) -> web.Response:
    """`GET /invocations` with filters and paging (`introspection.rest`)."""
    params = {name: request.query.getall(name) for name in request.query}
    source = _sql_source(request)
    await _read_your_writes(request)
    registry = _store(request).snapshot()
    try:
        body = await asyncio.to_thread(introspection.list_invocations, source, registry, params)
    except introspection.BadRequest as e:
        raise RegistryError(400, str(e)) from None
    return _json(body)


async def get_invocation(request: web.Request) -> web.Response:
    inv = str(invocations.parse_invocation_id(request.match_info["invocation"]))
    source = _sql_source(request)
    await _read_your_writes(request)
    registry = _store(request).snapshot()
    found = await asyncio.to_thread(introspection.get_invocation, source, registry, inv)
    if found is None:
        raise RegistryError(404, f"The requested invocation '{inv}' does not exist")
    return _json(found)


async def create_kafka_cluster(request: web.Request) -> web.Response:
    await _read_json(request)  # a clear 400 on bad JSON
    return await subscriptions.create_cluster(request, _store(request))


async def list_kafka_clusters(request: web.Request) -> web.Response:
    registry = _store(request).snapshot()
    return _json({"clusters": [subscriptions.cluster_json(c) for c in registry.clusters.values()]})


async def get_kafka_cluster(request: web.Request) -> web.Response:
    registry = _store(request).snapshot()
    name = request.match_info["cluster"]
    cluster = registry.clusters.get(name)
    if cluster is None:
        raise RegistryError(404, f"The requested Kafka cluster '{name}' does not exist")
    return _json(subscriptions.cluster_json(cluster, registry))


async def update_kafka_cluster(request: web.Request) -> web.Response:
    body = await _read_json(request)
    cluster = subscriptions.updated_cluster(_store(request).snapshot(), request.match_info["cluster"], body)
    await _store(request).write([(f"{CLUSTER_PREFIX}{cluster.name}", cluster.encode())])
    log.info("kafka_cluster.updated", cluster=cluster.name)
    return _json(subscriptions.cluster_json(cluster))


async def delete_kafka_cluster(request: web.Request) -> web.Response:
    force = bool(json_body.bool_query(request.query, "force"))
    cluster = subscriptions.cluster_removal(_store(request).snapshot(), request.match_info["cluster"], force)
    await _store(request).write([(f"{CLUSTER_PREFIX}{cluster.name}", None)])
    log.info("kafka_cluster.removed", cluster=cluster.name, force=force)
    return web.Response(status=202)


async def create_subscription(request: web.Request) -> web.Response:
    await _read_json(request)
    return await subscriptions.create_subscription(request, _store(request))


async def list_subscriptions(request: web.Request) -> web.Response:
    subs = _store(request).snapshot().subscriptions.values()
    sink, source = request.query.get("sink"), request.query.get("source")
    chosen = [s for s in subs if (sink is None or s.sink == sink) and (source is None or s.source == source)]
    return _json({"subscriptions": [subscriptions.subscription_json(s) for s in chosen]})


def _subscription(request: web.Request) -> Any:
    sub_id = subscriptions.parse_subscription_id(request.match_info["subscription"])
    sub = _store(request).snapshot().subscriptions.get(sub_id)
    if sub is None:
        raise RegistryError(404, f"The requested subscription '{sub_id}' does not exist")
    return sub


async def get_subscription(request: web.Request) -> web.Response:
    return _json(subscriptions.subscription_json(_subscription(request)))


async def delete_subscription(request: web.Request) -> web.Response:
    sub = _subscription(request)
    await _store(request).write([(f"{SUBSCRIPTION_PREFIX}{sub.id}", None)])
    return web.Response(status=202)


def _routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/health", health),
        web.get(f"{prefix}/version", version),
        web.post(f"{prefix}/deployments", register_deployment),
        web.get(f"{prefix}/deployments", list_deployments),
        web.get(f"{prefix}/deployments/{{deployment}}", get_deployment),
        web.patch(f"{prefix}/deployments/{{deployment}}", update_deployment),
        web.put(f"{prefix}/deployments/{{deployment}}", update_deployment),
        web.delete(f"{prefix}/deployments/{{deployment}}", delete_deployment),
        web.get(f"{prefix}/services", list_services),
        web.get(f"{prefix}/services/{{service}}", get_service),
        web.patch(f"{prefix}/services/{{service}}", modify_service),
        web.get(f"{prefix}/services/{{service}}/handlers", list_handlers),
        web.get(f"{prefix}/services/{{service}}/handlers/{{handler}}", get_handler),
        web.get(f"{prefix}/services/{{service}}/openapi", service_openapi),
        web.post(f"{prefix}/services/{{service}}/state", modify_service_state),
        web.get(f"{prefix}/openapi", admin_openapi),
        web.get(f"{prefix}/cluster-health", cluster_health),
        web.patch(f"{prefix}/invocations/{{invocation}}/pause", pause_invocation),
        web.patch(f"{prefix}/invocations/{{invocation}}/resume", resume_invocation),
        web.patch(f"{prefix}/invocations/{{invocation}}/purge-journal", purge_journal),
        web.patch(f"{prefix}/invocations/{{invocation}}/restart-as-new", restart_as_new),
        web.patch(f"{prefix}/invocations/{{invocation}}/{{operation}}", patch_invocation),
        web.get(f"{prefix}/invocations", list_invocations),
        web.get(f"{prefix}/invocations/{{invocation}}", get_invocation),
        web.post(f"{prefix}/query", query),
        web.post(f"{prefix}/kafka-clusters", create_kafka_cluster),
        web.get(f"{prefix}/kafka-clusters", list_kafka_clusters),
        web.get(f"{prefix}/kafka-clusters/{{cluster}}", get_kafka_cluster),
        web.patch(f"{prefix}/kafka-clusters/{{cluster}}", update_kafka_cluster),
        web.delete(f"{prefix}/kafka-clusters/{{cluster}}", delete_kafka_cluster),
        web.post(f"{prefix}/subscriptions", create_subscription),
        web.get(f"{prefix}/subscriptions", list_subscriptions),
        web.get(f"{prefix}/subscriptions/{{subscription}}", get_subscription),
        web.delete(f"{prefix}/subscriptions/{{subscription}}", delete_subscription),
        web.delete(f"{prefix}/invocations/{{invocation}}", delete_invocation),
    ]


def create_admin_app(
    store: RegistryStore,
    settings: Settings,
    control: InvocationControl | None = None,
    changelog: ChangelogView | None = None,
    state_editor: StateEditor | None = None,
    signer: RequestSigner | None = None,
) -> web.Application:
    """`signer`: the request identity discovery signs with; None: the settings' (if any)."""
    app = web.Application(middlewares=[request_metrics, error_middleware])
    app[SIGNER_KEY] = signer or load_request_signer(settings, "admin")
    app[STORE_KEY] = store
    if control is not None:
        app[CONTROL_KEY] = control
    if changelog is not None:
        app[CHANGELOG_KEY] = changelog
    if state_editor is not None:
        app[STATE_KEY] = state_editor
    app[SETTINGS_KEY] = settings
    app.add_routes(_routes(""))
    app.add_routes([web.get("/health/details", health_details), web.get("/metrics", observability.metrics)])
    for v in API_VERSIONS:
        app.add_routes(_routes(f"/v{v}"))
    return app
