"""Kafka plumbing shared by the components: client configs, topic creation, reading to the end,
topic views (registry, changelog), the command producer and the results tail.

Sits below `processor/`, `ingress_gateway/` and `admin_api/` and imports only `schemas/`.
"""
