"""The server's lifecycle: one AsyncExitStack owning the registry, the listeners and the tasks.

Start: open the startup archives (a bad one is a config error, before any port is bound), bind
the HTTP listeners and the gRPC servers, then let the executors load. Stop (SIGTERM/SIGINT):
stop accepting and finish in-flight requests (gRPC, then HTTP), then drain the batchers and
join the executor threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from serve import __version__, started
from serve.auth.keys import Tokens, load_or_create
from serve.config import Address, Config, ConfigError, shares_api_port
from serve.errors import ServeError
from serve.grpc.server import start_grpc
from serve.http.access import LOGGER, access_logger
from serve.http.apps import api_app, inference_app, management_app, metrics_app
from serve.http.refused import RefusedRequestLogger
from serve.models.archive import closest_archives, in_store, store_archives
from serve.models.download import warn_if_permissive
from serve.models.hints import either
from serve.models.registry import RegisterParams, Registry
from serve.models.version import ModelVersion
from serve.ports import bind_error
from serve.snapshots import Snapshots, snapshot_folder
from serve.snapshots.restore import Restore, restore
from serve.snapshots.traffic import restore_traffic
from serve.telemetry import access_log, system_metrics
from serve.telemetry.metrics import ServerMetrics, watch_loop_lag
from serve.workers.devices import visible_gpu_count
from serve.workers.intraop import ThreadBudget
from serve.workers.startup import freeze_startup_heap, preload

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE = 30.0
_REFUSED = RefusedRequestLogger()  # one per process: the rate limit spans every listener


def startup_models(config: Config) -> list[tuple[str, RegisterParams]]:
    """The models to load at start, each with the config key that named it."""
    entries: list[tuple[str, RegisterParams]] = []
    store = _checked_store(config)
    if store is None or config.model_snapshot:  # a snapshot replaces load_models
        return entries
    for index, item in enumerate(config.load_models):
        key = f"load_models[{index}]"
        if item == "all":
            entries.extend((key, _startup(url)) for url in _all_archives(store))
            continue
        name, sep, url = item.partition("=")
        if not sep:
            name, url = "", item
        url = in_store(store, url)
        if not url or url.startswith("/") or ".." in Path(url).parts:
            raise ConfigError(key, f"{item!r} must name a file or folder inside model_store")
        if not (store / url).exists():
            near = closest_archives(url, store_archives(store))
            hint = f"; did you mean {either(near)}?" if near else ""
            raise ConfigError(key, f"{url} is not in the model store {store}{hint}")
        entries.append((key, _startup(url, name or None)))
    return entries


def _checked_store(config: Config) -> Path | None:
    """The model store, checked before anything loads; None when there is nothing to load.

    A snapshot's versions need it as much as load_models do: restoring them from a mistyped
    store would start a server with no models and save that as the newest snapshot.
    """
    store = config.model_store
    wanted = config.model_snapshot or config.load_models
    if store is None:
        if not wanted:
            return None
        if config.model_snapshot:
            raise ConfigError("model_store", "is required to restore the config snapshot's models")
        raise ConfigError("model_store", "is required when load_models is set")
    if not store.is_dir():
        what = "does not exist" if not store.exists() else "is not a folder"
        raise ConfigError("model_store", f"{store} {what}")
    return store if config.load_models else None


def _startup(url: str, name: str | None = None) -> RegisterParams:
    # the executors start loading once every listener is bound (a port clash loads nothing)
    return RegisterParams(
        url=url, model_name=name, synchronous=False, loaded_at_startup=True, defer_workers=True
    )


def _all_archives(store: Path) -> list[str]:
    # the same rule as a model store's listing: serve.mar's suffixes, and archive folders
    found = store_archives(store)
    if not found:
        logger.warning("load_models: all found no archives in %s", store)
    return found


async def serve(config: Config, *, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or a signal arrives; a bad startup model is a ConfigError."""
    stop = stop or asyncio.Event()
    startup = startup_models(config)
    preload()  # before any listener is bound: nothing is being served yet
    freeze_startup_heap()
    gpu_count = await asyncio.to_thread(visible_gpu_count, config.number_of_gpu)
    metrics = ServerMetrics(
        gpu_count,
        spec=config.metrics,
        mode=config.metrics_mode,
        auto_detect=config.model_metrics_auto_detect,
    )
    registry = Registry(
        config, gpu_count=gpu_count, budget=ThreadBudget(config.torch_num_threads), metrics=metrics
    )
    logger.info("serve %s: %d GPU(s) visible", __version__, gpu_count)
    warn_if_permissive(config)
    tokens = await _tokens(config)  # a bad key file is a ConfigError: nothing is bound yet
    async with AsyncExitStack() as stack:
        # first: a SIGTERM that arrives while the listeners come up (a probe may already see
        # /ping answer) is a clean stop once start-up is through, never the default kill
        _install_signals(stop, registry)
        access = access_log.start(config)
        if access is not None:
            stack.callback(access.stop)  # last out: writes the final lines
        stack.push_async_callback(registry.close)
        snapshots = _snapshots(stack, config, registry)
        # archives are opened (a bad one is a ConfigError) before any port is bound, and the
        # executors start loading only after every port is: a port clash loads nothing
        deferred: list[ModelVersion] = []
        for key, params in startup:
            try:
                deferred.append((await registry.register(params)).version)
            except ServeError as exc:
                raise ConfigError(key, f"cannot load {params.url}: {exc.message}") from exc
        restored = await restore(registry, config)
        deferred += restored.versions
        if config.model_snapshot:  # its splits win over the config's, as its models do
            _restore_splits(registry, config)
        else:
            for name, split in config.traffic.items():
                try:
                    registry.set_traffic(name, split)
                except ServeError as exc:
                    raise ConfigError(f"models.{name}.traffic", exc.message) from exc
        # the management port logs query strings (parameters); the others paths only
        listeners: list[tuple[str, str, Callable[..., web.Application], bool]] = [
            ("Inference API", "inference_address", inference_app, False),
            ("Management API", "management_address", management_app, True),
            ("Metrics API", "metrics_address", metrics_app, False),
        ]
        if shares_api_port(config):
            shared = ("Inference and Management API", "inference_address", api_app, False)
            listeners[:2] = [shared]
        refuse: list[Callable[[], None]] = []
        for label, key, build, query in listeners:
            app = build(config, registry, metrics, tokens)
            logged = None if access is None else access_logger(access, query)
            bound, stop_accepting = await _listen(stack, app, key, getattr(config, key), logged)
            refuse.append(stop_accepting)
            logger.info("%s bound to http://%s", label, bound)
        grpc_bound, gates = await start_grpc(
            stack, config, registry, SHUTDOWN_GRACE, tokens, access
        )
        refuse.extend(gate.close for gate in gates)
        for label, bound in grpc_bound:
            logger.info("%s bound to %s", label, bound)
        # runs first on the way out: nothing new is accepted anywhere while each API drains
        stack.callback(_call_all, refuse)
        lag = asyncio.create_task(watch_loop_lag(metrics))
        stack.callback(lag.cancel)
        if metrics.frontend_log is not None and not config.disable_system_metrics:
            system = asyncio.create_task(
                system_metrics.log_periodically(
                    metrics.frontend_log, metrics.host, config.metric_time_interval
                )
            )
            stack.callback(system.cancel)
        if restored.failed:
            _carry(snapshots, restored, config)
        await registry.start_workers(deferred)
        if snapshots is not None:
            await snapshots.startup()
        logger.info("Server started; %d model version(s) registered", len(deferred))
        started.announce()
        await stop.wait()
        logger.info("Shutting down: finishing in-flight requests")
    logger.info("Server stopped")


def _snapshots(stack: AsyncExitStack, config: Config, registry: Registry) -> Snapshots | None:
    """Snapshots after each change and on shutdown, unless no_config_snapshots (--ncs)."""
    if config.no_config_snapshots:
        return None
    snapshots = Snapshots(config, registry, snapshot_folder(config))
    # runs after the APIs have drained and before the models close
    stack.push_async_callback(snapshots.shutdown)
    registry.listeners.append(snapshots.changed)
    return snapshots


async def _tokens(config: Config) -> Tokens | None:
    """The keys (written to ./key_file.json, or the ones already there), None when off."""
    if config.disable_token_authorization:
        logger.warning(
            "Token authorization is off (disable_token_authorization): the inference and "
            "management APIs answer anyone who can reach their ports"
        )
        return None
    tokens, reused = await asyncio.to_thread(
        load_or_create, Path.cwd(), config.token_expiration_min
    )
    logger.info(
        "Token authorization is on: keys %s %s (inference key for the inference APIs, "
        "management key for the management APIs, API key for GET /token)",
        "read from" if reused else "written to",
        tokens.path,
    )
    for kind in tokens.expired():
        logger.warning(
            "The %s key in %s has expired: renew it (GET /token?type=%s with the API key) "
            "or delete the file for new keys",
            kind,
            tokens.path,
            kind,
        )
    return tokens


def _restore_splits(registry: Registry, config: Config) -> None:
    """The snapshot's splits, which win over serve.yaml's (as its models replace load_models)."""
    restore_traffic(registry, config.model_snapshot)
    if config.traffic:
        logger.info(
            "Not applying the traffic split(s) of models.%s.traffic in the config: the config "
            "snapshot's splits are restored instead (start with --ncs to use the config's)",
            ", models.".join(sorted(config.traffic)),
        )


def _carry(snapshots: Snapshots | None, restored: Restore, config: Config) -> None:
    """Keep the versions that failed to restore in this run's snapshots (never lose them)."""
    if snapshots is None:
        return
    failed = ", ".join(f"{n}/{v} ({why})" for (n, v), why in restored.reasons.items())
    snapshots.carry(restored.failed)
    logger.warning(
        "%d model version(s) of the config snapshot did not restore: %s. They are kept in "
        "the snapshots this run writes, so a start after the cause is fixed restores them; "
        "registering one again replaces it, and deleting %s starts clean",
        len(restored.failed),
        failed,
        snapshot_folder(config),
    )


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


async def _listen(
    stack: AsyncExitStack,
    app: web.Application,
    key: str,
    address: Address,
    logged: type[AbstractAccessLogger] | None,
) -> tuple[Address, Callable[[], None]]:
    """Serve `app` on `address` (config `key`); returns it bound and a stop-accepting callback.

    `logged` (serve.http.access) writes the access log; None leaves it off."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=LOGGER if logged is not None else None,
        access_log_class=logged or AbstractAccessLogger,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_GRACE,
        logger=_REFUSED,
    )
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, address.host, address.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        raise bind_error(key, address, exc) from exc
    server = site._server  # the asyncio listening server; closing it stops accepting only
    sockets = getattr(server, "sockets", None)
    port = sockets[0].getsockname()[1] if sockets else address.port
    return Address(address.host, port), (server.close if server is not None else _nothing)


def _nothing() -> None:
    return None


def _install_signals(stop: asyncio.Event, registry: Registry) -> None:
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            logger.warning("Second signal: exiting now")
            os._exit(1)
        stop.set()
        loading = registry.loading()
        if loading:  # the wait can be long and silent otherwise
            logger.warning(
                "Stopping: waiting for %s to finish loading (executor initialize cannot be "
                "interrupted); press Ctrl-C again to exit now",
                ", ".join(loading),
            )

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
