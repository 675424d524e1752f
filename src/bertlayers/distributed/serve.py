"""Ray Serve: the service's app as a deployment of N replicas behind Ray's HTTP proxy.

Each replica builds its own `Engine` and `create_app(engine, settings)` inside itself (Serve
calls the builder there), so each holds one model and runs the app's lifespan (its batching
worker) as `bertlayers serve` does. Endpoints, bodies, status codes and media types are the
app's: the proxy passes them through.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

from ..service.settings import ServeSettings

if TYPE_CHECKING:
    from ray.serve import Application

APP_NAME = "bertlayers"


def build_deployment(
    engine_options: dict,
    settings: ServeSettings,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    gpus_per_replica: float = 0.0,
) -> Application:
    """A bound Serve application: `serve.run(build_deployment(...))` starts it."""
    from ray import serve

    def build_app():
        from ..core.config import ModelOptions
        from ..core.engine import Engine
        from ..service.app import create_app

        return create_app(Engine.from_options(ModelOptions.from_dict(engine_options)), settings)

    actor = {"num_cpus": cpus_per_replica}
    if gpus_per_replica:
        actor["num_gpus"] = gpus_per_replica

    @serve.deployment(name="BertlayersService", num_replicas=replicas, ray_actor_options=actor)
    @serve.ingress(build_app)
    class BertlayersService:
        """One replica: one model and the service's app."""

    return BertlayersService.bind()


def start(
    engine_options: dict,
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    gpus_per_replica: float = 0.0,
) -> str:
    """Start Serve's proxy on host:port and the deployment (on the connected cluster), and
    return its URL once every replica is running."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    app = build_deployment(engine_options, settings, replicas, cpus_per_replica, gpus_per_replica)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def running_replicas() -> int:
    """Replicas of the deployment in the RUNNING state."""
    from ray import serve

    status = serve.status().applications[APP_NAME]
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())


def serve_until_signal(start_serving, quiet: bool = False) -> None:
    """Run `start_serving()` (which returns the URL and replicas once all run), then wait for
    SIGINT/SIGTERM and delete the deployment (a cluster this command started goes with it).
    The handlers go in first (after `ray.init`, whose own would end the process), so a
    signal during start-up also ends in a clean shutdown."""
    import sys

    from ray import serve

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        url, replicas = start_serving()
        if not quiet and not stop.is_set():
            print(
                f"bertlayers serve: {replicas} Ray Serve replicas at {url}",
                file=sys.stderr,
                flush=True,
            )
        while not stop.wait(0.5):
            pass
    finally:
        serve.delete(APP_NAME)  # this app only: a shared cluster may serve others
        for sig, handler in previous.items():
            signal.signal(sig, handler)
