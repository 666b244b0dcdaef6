"""Runs the admin API on the Kafka-backed registry (the `metadata` topic)."""

from __future__ import annotations

import structlog
from aiohttp import web

from admin_api.app import create_admin_app
from kinvoke.metadata import MetadataView
from schemas.settings import Settings

log = structlog.get_logger(__name__)


def run_admin(settings: Settings) -> None:
    store = MetadataView(settings).start()
    log.info("admin.listening", host=settings.admin_host, port=settings.admin_port)
    try:
        web.run_app(
            create_admin_app(store, settings), host=settings.admin_host, port=settings.admin_port, print=None
        )
    finally:
        store.stop()
