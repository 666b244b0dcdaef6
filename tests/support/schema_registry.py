"""A small stand-in for a Confluent Schema Registry, on loopback, for the unit tests.

The integration test (tests/integration/test_schema_registry.py) runs a real registry instead:
Apicurio Registry 2.6.13.Final's published Quarkus build (`apicurio-registry-app`, classifier
`all`, a tar.gz with its runner jar and lib/; scripts/schema-registry/pom.xml), on Java 17, see
tests/support/apicurio.py. Building the app jar ourselves did not work: 3.3.3 depends on
`apicurio-registry-schema-util-provider` 3.3.3 (not served), the parent POM of 3.0.9 is not
served, and 2.4.2.Final needs `org.everit.json.schema` 1.14.2 (published elsewhere), and then
Apicurio's own Quarkus extension `apicurio-common-app-components-config-index-deployment`. The
3.3.2 `all` build runs too, but needs Java 21 (its classes are version 65). Confluent's registry
is not published to Maven Central. The unit tests keep this stand-in for what a real registry
cannot be told to do on cue: answer 500 while accepting connections, or demand basic auth.

This serves the endpoints confluent-kafka's `SchemaRegistryClient` and `AvroSerializer` call,
answering in the Confluent REST API's JSON shapes and error codes (40401 subject not found, 40403
schema not found, 40101 unauthorized, 50001 for a registry told to fail), so the client and the
serializer under test are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass
class _Registered:
    id: int
    schema: str
    schema_type: str
    references: list[dict[str, Any]]


@dataclass
class FakeSchemaRegistry:
    """Schemas by id and subject versions; `failing` makes every answer a 500 (an outage that
    still accepts connections); `basic_auth` ("user:password") makes it demand credentials."""

    basic_auth: str | None = None
    failing: bool = False
    schemas: dict[int, _Registered] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def register(
        self,
        subject: str,
        schema: str,
        schema_type: str = "AVRO",
        references: list[dict[str, Any]] | None = None,
    ) -> int:
        """The id of `schema` (the existing one if registered already), as the subject's next version."""
        for registered in self.schemas.values():
            if registered.schema == schema and registered.schema_type == schema_type:
                break
        else:
            registered = _Registered(len(self.schemas) + 1, schema, schema_type, references or [])
            self.schemas[registered.id] = registered
        versions = self.subjects.setdefault(subject, [])
        if registered.id not in versions:
            versions.append(registered.id)
        return registered.id

    # -- the REST API ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/subjects/{subject}/versions", self._register)
        app.router.add_post("/subjects/{subject}", self._lookup)
        app.router.add_get("/subjects", self._subjects)
        app.router.add_get("/subjects/{subject}/versions", self._versions)
        app.router.add_get("/subjects/{subject}/versions/{version}", self._version)
        app.router.add_get("/schemas/ids/{id}", self._by_id)
        app.router.add_route("*", "/{tail:.*}", self._not_found)  # e.g. newer clients' /associations
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if self.basic_auth is not None:
            expected = "Basic " + base64.b64encode(self.basic_auth.encode()).decode()
            if request.headers.get("Authorization") != expected:
                return _error(401, 40101, "Unauthorized")
        if self.failing:
            return _error(500, 50001, "Error in the backend data store")
        return await handler(request)

    async def _not_found(self, request: web.Request) -> web.Response:
        return _error(404, 404, "HTTP 404 Not Found")

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        schema_id = self.register(
            request.match_info["subject"],
            body["schema"],
            body.get("schemaType", "AVRO"),
            body.get("references"),
        )
        return _json({"id": schema_id})

    async def _lookup(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        if subject not in self.subjects:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        body = await request.json()
        for version, schema_id in enumerate(self.subjects[subject], start=1):
            if self.schemas[schema_id].schema == body["schema"]:
                return _json(self._version_body(subject, version))
        return _error(404, 40403, "Schema not found")

    async def _subjects(self, request: web.Request) -> web.Response:
        return _json(sorted(self.subjects))

    async def _versions(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        if subject not in self.subjects:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        return _json(list(range(1, len(self.subjects[subject]) + 1)))

    async def _version(self, request: web.Request) -> web.Response:
        subject, version = request.match_info["subject"], request.match_info["version"]
        versions = self.subjects.get(subject)
        if not versions:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        n = len(versions) if version == "latest" else int(version)
        if not 1 <= n <= len(versions):
            return _error(404, 40402, f"Version {version} not found.")
        return _json(self._version_body(subject, n))

    async def _by_id(self, request: web.Request) -> web.Response:
        schema_id = int(request.match_info["id"])
        found = self.schemas.get(schema_id)
        if found is None:
            return _error(404, 40403, f"Schema {schema_id} not found")
        body: dict[str, Any] = {"schema": found.schema}
        if found.schema_type != "AVRO":  # the registry leaves the default type out
            body["schemaType"] = found.schema_type
        if found.references:
            body["references"] = found.references
        return _json(body)

    def _version_body(self, subject: str, version: int) -> dict[str, Any]:
        found = self.schemas[self.subjects[subject][version - 1]]
        body: dict[str, Any] = {
            "subject": subject,
            "version": version,
            "id": found.id,
            "schema": found.schema,
        }
        if found.schema_type != "AVRO":
            body["schemaType"] = found.schema_type
        if found.references:
            body["references"] = found.references
        return body


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"error_code": code, "message": message}, status)


@contextmanager
def run_schema_registry(registry: FakeSchemaRegistry | None = None) -> Iterator[FakeSchemaRegistry]:
    """Serve `registry` on a free loopback port in a thread until the block ends."""
    registry = registry or FakeSchemaRegistry()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(registry.app())
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        registry.url = f"http://127.0.0.1:{port}"
        started.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the schema registry stand-in did not start"
    try:
        yield registry
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
