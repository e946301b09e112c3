"""Running the app under uvicorn in this process; the exit status says whether it could serve."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .resources import EncoderFactory
from .settings import ServiceSettings

log = logging.getLogger(__name__)


def serve(
    settings: ServiceSettings,
    *,
    encoder_factory: EncoderFactory | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> int:
    """Serve until interrupted; 1 when loading failed for good (e.g. a checkpoint that does not match the
    index), else 0. ``on_listening(url)`` is called once the socket is open."""
    import uvicorn

    from .app import create_app

    app = create_app(settings, encoder_factory=encoder_factory)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # logs.configure() routed uvicorn's loggers already
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    resources = app.state.resources

    def stop(reason: str) -> None:
        server.should_exit = True

    resources.on_fatal = stop
    if on_listening is not None:
        startup = server.startup

        async def startup_then_announce(sockets=None):  # type: ignore[no-untyped-def]
            await startup(sockets=sockets)
            if server.started:
                host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
                port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.port
                on_listening(f"http://{host}:{port}")

        server.startup = startup_then_announce  # type: ignore[method-assign]
    server.run()
    if resources.fatal:
        log.error("stopped: %s", resources.fatal)
        return 1
    return 0
