"""Runs the admin API on the Kafka-backed registry (the `metadata` topic), with invocation
management going through `commands`."""

from __future__ import annotations

import structlog
from aiohttp import web

from admin_api.app import create_admin_app
from admin_api.introspection import ChangelogView
from admin_api.invocations import KafkaInvocationControl
from admin_api.state import KafkaStateEditor
from kafka_core import supervision
from kafka_core.commands import CommandClient
from kafka_core.metadata import MetadataView
from kafka_core.request_identity import load_request_signer
from schemas.settings import Settings

log = structlog.get_logger(__name__)


def run_admin(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; the exit code is non-zero when a component gave up (which
    is also what stopped the server)."""
    signer = load_request_signer(settings, "admin")  # a bad key file stops the admin before Kafka
    store = MetadataView(settings).start()
    changelog = ChangelogView(settings).start()
    commands = CommandClient(settings)
    app = create_admin_app(
        store,
        settings,
        KafkaInvocationControl(commands),
        changelog,
        state_editor=KafkaStateEditor(commands),
        signer=signer,
    )
    app.on_startup.append(lambda _app: commands.start())
    app.on_cleanup.append(lambda _app: commands.stop())
    log.info("admin.listening", host=settings.admin_host, port=settings.admin_port)
    try:
        web.run_app(app, host=settings.admin_host, port=settings.admin_port, print=None)
    finally:
        changelog.stop()
        store.stop()
    code = supervision.exit_code()
    log.info("admin.stopped", exit_code=code, reason=supervision.fatal_reason())
    return code
