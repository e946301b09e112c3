"""Running the app under uvicorn in this process; the exit status says whether it could serve."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence

import uvicorn

from .resources import EncoderFactory
from .settings import ServiceSettings

log = logging.getLogger(__name__)


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that calls ``on_listening(url)`` once its socket is open (port 0 included)."""

    def __init__(
        self, config: uvicorn.Config, settings: ServiceSettings, on_listening: Callable[[str], None] | None
    ) -> None:
        super().__init__(config)
        self._settings, self._on_listening = settings, on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_listening is not None:
            host = "127.0.0.1" if self._settings.host in ("0.0.0.0", "::") else self._settings.host
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self._settings.port
            self._on_listening(f"http://{host}:{port}")


def serve(
    settings: ServiceSettings,
    *,
    encoder_factory: EncoderFactory | None = None,
    demo_queries: Sequence[str] | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> int:
    """Serve until interrupted; 1 when loading failed for good (e.g. a checkpoint that does not match the
    index), else 0. ``on_listening(url)`` is called once the socket is open; ``demo_queries``: ``create_app``'s."""
    from .app import create_app

    app = create_app(settings, encoder_factory=encoder_factory, demo_queries=demo_queries)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # logs.configure() routed uvicorn's loggers already
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = _AnnouncingServer(config, settings, on_listening)
    resources = app.state.resources

    def stop(reason: str) -> None:
        server.should_exit = True

    resources.on_fatal = stop
    server.run()
    if resources.fatal:
        log.error("stopped: %s", resources.fatal)
        return 1
    return 0
