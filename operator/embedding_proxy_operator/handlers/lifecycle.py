"""Start-up, login and clean-up: kopf's settings, the credentials, the Lease (`leading`), and
closing what was opened."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from ..model import images, names
from ..model.settings import api_backoffs
from .admission import server_for
from .drift import CONFIGMAP_SELECTOR, watch_configuration
from .leading import find_credentials, lead, step_down
from .state import state_of


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    state = state_of(memo)
    options = state.options
    logger.info("sidecar image where an EmbeddingProxy names none: %s", options.sidecar_image)
    if options.allowed_images:
        logger.info("sidecar images allowed: %s", ", ".join(options.allowed_images))
        for entry in filter(images.names_a_registry, options.allowed_images):
            logger.warning(
                "EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES: %r has no '/', so it allows only the "
                "repository of that name; to allow every image of the registry, write %r",
                entry,
                entry + "/",
            )
    else:
        logger.warning(
            "EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES is empty: an EmbeddingProxy may run any "
            "image in the Deployments it targets"
        )
    if options.metrics_port:
        await state.metrics.serve("0.0.0.0", options.metrics_port)
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=names.PERSISTENCE_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.PERSISTENCE_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = options.watch_seconds
    settings.watching.client_timeout = options.watch_seconds + 30
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = options.api_timeout_seconds * 3
    # kopf's own retries (its watches' too) wait at most max_retry_seconds each, as long in all
    # as kopf's default, so that a change made during an API outage waits little after it.
    settings.networking.error_backoffs = api_backoffs(options.max_retry_seconds)
    # Of the cluster's ConfigMaps, only the operator's are sent (`drift`).
    settings.watching.label_selectors["", "v1", "configmaps"] = CONFIGMAP_SELECTOR
    settings.posting.reporting_component = names.FIELD_MANAGER
    # Events are posted for warnings and changes; kopf's own per-handler chatter stays in logs.
    settings.posting.level = logging.WARNING
    # Webhook mode: the operator's own server, and the configuration it writes itself (kopf's
    # managed one would match every namespace and wait 30 s for an answer).
    settings.admission.server = server_for(state, os.environ.get("POD_NAMESPACE", ""), logger)
    settings.admission.managed = None
    if options.webhook_port:
        # Its configuration, changed or deleted by someone else, is noticed at once (`drift`).
        watch_configuration(settings, options.webhook_configuration)
    logger.info("injection by default: %s", options.injection)
    # Last: from here on only the leader goes on (kopf starts its watches after the start-up).
    await lead(state, settings, logger)


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = find_credentials(**kwargs)
    state_of(memo).connection = info
    return info


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    state = state_of(memo)
    await step_down(state)
    await state.close()
