"""The running app's Services, as a request handler reaches them."""

from __future__ import annotations

from flask import current_app

from tracker.flows.services import Services


def services() -> Services:
    services: Services = current_app.extensions["tracker"]
    return services
