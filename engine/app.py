"""The engine process: config in, store, services and control listeners up.

Theory of operation
-------------------
:class:`Engine` owns what every part shares: the validated
:class:`~engine.config.Config`, the :class:`~engine.store.Store`, the
:class:`~engine.bus.EventBus`, the op registry and the control listeners.
Everything else (SIP transports, the media clock, the call path, the ACD
driver, statistics) is a :class:`Service`::

    class SipService:
        async def start(self, engine: Engine) -> None: ...   # bind, register ops/providers
        async def stop(self) -> None: ...                     # end calls, unbind

Services start in the order they were added (after the store, before the
control listeners, so ops find their services ready) and stop in reverse
order (after the listeners stop accepting).  A service publishes counts
(``engine.add_counter("legs", fn)``) for ``engine.status`` and sections
(``engine.add_snapshot("calls", fn)``) for ``state.snapshot``; the
defaults derived from the config (agents logged out, queues empty, no calls)
are replaced when a service registers the same name.

Shutdown order (SIGTERM/SIGINT): stop accepting control connections, stop
services in reverse (they end calls), tell and close control clients, flush
and close the store.  :func:`run_engine` wires this to signals and returns
the process exit status (0 on a clean stop).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any, Callable, Protocol

from engine import __version__
from engine.bus import EventBus
from engine.config import Config
from engine.errors import StoreError, Unavailable
from engine.events import EngineStarted
from engine.ops import OpRegistry, Session, registry as default_registry
from engine.store import AuditEntry, Store, open_store

logger = logging.getLogger("engine")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class CallLogger(logging.LoggerAdapter):
    """Prefixes every line with the call id (STYLE.md §9)::

        log = CallLogger(logger, {"call_id": call_id})
        log.info("answered by agent %s after %.1f s", agent, wait_s)
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[{extra.get('call_id', '-')}] {msg}", kwargs


class Service(Protocol):
    """A pluggable part of the engine (SIP, media, call path, statistics ...)."""

    async def start(self, engine: "Engine") -> None: ...
    async def stop(self) -> None: ...


SnapshotProvider = Callable[[Session], Any]
CounterProvider = Callable[[], int | float]


class Engine:
    """The running engine; see the module docstring for the start/stop order."""

    def __init__(self, config: Config, *, ops: OpRegistry | None = None,
                 services: list[Service] | None = None) -> None:
        import engine.builtin_ops  # noqa: F401  (registers the foundation's ops)
        import engine.audit_export  # noqa: F401  (registers audit.export)
        import engine.reporting_ops  # noqa: F401  (kpi.report, cdr.*, stats.realtime, recording.*)
        import engine.callbacks  # noqa: F401  (callback.*)

        self.config = config
        self.ops = ops or default_registry
        self.bus = EventBus()
        self.store: Store | None = None
        self.services: list[Service] = list(services or [])
        self.control_servers: list[Any] = []
        self.started_at = 0.0
        self.started_monotonic = 0.0
        self.running = False
        self._started_services: list[Service] = []
        self.counters: dict[str, CounterProvider] = {"legs": lambda: 0, "calls": lambda: 0,
                                                     "registrations": lambda: 0}
        self.snapshots: dict[str, SnapshotProvider] = {"agents": self._config_agents, "calls": lambda s: [],
                                                       "queues": self._config_queues}

    # ------------------------------------------------------------ extension points

    def add_service(self, service: Service) -> None:
        """Add a service before :meth:`start`."""
        if self.running:
            raise RuntimeError("services must be added before Engine.start()")
        self.services.append(service)

    def add_counter(self, name: str, provider: CounterProvider) -> None:
        """A count shown under ``counts`` in ``engine.status``."""
        self.counters[name] = provider

    def add_snapshot(self, name: str, provider: SnapshotProvider) -> None:
        """A section of ``state.snapshot``; ``provider(session)`` returns what that user may see."""
        self.snapshots[name] = provider

    def audit(self, *, user: str, role: str, tenant: str, op: str, args: str, result: str, peer: str,
              ts: float | None = None) -> None:
        """Queue an audit row (no-op without a store, e.g. in unit tests)."""
        if self.store is None:
            return
        self.store.audit(AuditEntry(ts=time.time() if ts is None else ts, user=user, role=role, tenant=tenant,
                                    op=op, args=args, result=result, peer=peer))

    def require_store(self) -> Store:
        if self.store is None:
            raise Unavailable("the store is not open")
        return self.store

    def set_log_level(self, level: str) -> str:
        root = logging.getLogger()
        previous = logging.getLevelName(root.level)
        root.setLevel(level)
        return previous

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, open_listeners: bool = True) -> None:
        """Open the store, start services, start control listeners.

        On failure everything already started is stopped again and the
        exception (``StoreError``, ``OSError`` from a bind, a service's error)
        propagates.
        """
        from engine.control import ControlServer

        if self.running:
            raise RuntimeError("engine already running")
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        try:
            self.store = open_store(self.config.store, self.config.resolve_path(self.config.store.path))
            logger.info("store %s at schema version %d", self.store.path, self.store.schema_version())
            for service in self.services:
                await service.start(self)
                self._started_services.append(service)
            if open_listeners:
                for lst in self.config.control.listen:
                    server = ControlServer(self, lst, self.config.control,
                                           unix_path=self.config.resolve_path(lst.path) if lst.path else "")
                    await server.start()
                    self.control_servers.append(server)
        except BaseException:
            await self._teardown()
            raise
        self.running = True
        self.bus.publish_event(EngineStarted(name=self.config.engine.name, version=__version__))
        logger.info("engine %r %s started", self.config.engine.name, __version__)

    async def stop(self) -> None:
        """Stop accepting, stop services (reverse order), close clients, flush and close the store."""
        if not self.running:
            return
        self.running = False
        logger.info("engine stopping")
        for server in self.control_servers:
            server.stop_accepting()
        await self._teardown()
        logger.info("engine stopped")

    async def _teardown(self) -> None:
        for service in reversed(self._started_services):
            try:
                await service.stop()
            except Exception:
                logger.exception("service %r failed to stop", service)
        self._started_services = []
        for server in self.control_servers:
            await server.stop()
        self.control_servers = []
        if self.store is not None:
            store, self.store = self.store, None
            await asyncio.get_running_loop().run_in_executor(None, store.close)

    # ------------------------------------------------------------ status and snapshot

    def control_addresses(self) -> list[Any]:
        return [s.address for s in self.control_servers]

    async def status(self) -> dict[str, Any]:
        """The ``engine.status`` result."""
        counts = {}
        for name, provider in self.counters.items():
            try:
                counts[name] = provider()
            except Exception:
                logger.exception("status counter %r failed", name)
                counts[name] = None
        store: dict[str, Any]
        if self.store is None:
            store = {"open": False}
        else:
            store = await asyncio.get_running_loop().run_in_executor(None, self.store.status)
        return {
            "name": self.config.engine.name,
            "version": __version__,
            "started_at": self.started_at,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3) if self.started_monotonic else 0.0,
            "counts": counts,
            "control": {"connections": sum(len(s.connections) for s in self.control_servers),
                        "subscribers": self.bus.subscriber_count, "events_published": self.bus.published},
            "services": [type(s).__name__ for s in self.services],
            "store": store,
        }

    def snapshot(self, session: Session, seq: int, include: list[str] | None = None) -> dict[str, Any]:
        """``state.snapshot``: every section the user may see, stamped with ``seq``.

        Built synchronously on the loop, so no event can slip between the
        sections and the stamp: events with ``seq`` above the stamp are newer.
        """
        wanted = include or list(self.snapshots)
        out: dict[str, Any] = {"seq": seq, "ts": time.time()}
        for name in wanted:
            provider = self.snapshots.get(name)
            if provider is None:
                from engine.errors import InvalidArgs

                raise InvalidArgs(f"state.snapshot: unknown section {name!r} "
                                  f"(have: {', '.join(self.snapshots)})")
            out[name] = provider(session)
        return out

    def _config_agents(self, session: Session) -> list[dict[str, Any]]:
        # Default until the call path registers live state: configured agents, logged out.
        out = []
        for a in self.config.agents.values():
            if session.sees(tenant=a.tenant, groups=set(a.groups), agent=a.number):
                out.append({"agent": a.number, "name": a.name, "tenant": a.tenant, "groups": list(a.groups),
                            "skills": dict(a.skills), "state": "logged_out", "extension": a.extension})
        return out

    def _config_queues(self, session: Session) -> list[dict[str, Any]]:
        out = []
        for q in self.config.queues.values():
            if session.sees(tenant=q.tenant, groups=set(q.groups)):
                out.append({"queue": q.name, "tenant": q.tenant, "groups": list(q.groups),
                            "strategy": q.strategy, "waiting": 0, "longest_wait_s": 0.0})
        return out


# ---------------------------------------------------------------- process entry


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)


def install_event_loop_policy() -> str:
    """Use uvloop when installed (ARCHITECTURE.md); returns the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve(engine: Engine, stop_event: asyncio.Event | None = None) -> None:
    """Start ``engine``, wait for SIGTERM/SIGINT (or ``stop_event``), stop it."""
    loop = asyncio.get_running_loop()
    stop_event = stop_event or asyncio.Event()

    def on_signal(signame: str) -> None:
        logger.info("received %s, shutting down", signame)
        stop_event.set()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        await engine.start()
        await stop_event.wait()
    finally:
        await engine.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_engine(config: Config, log_level: str | None = None) -> int:
    """``ctiengine run``: returns 0 after a clean stop, 1 when start-up failed."""
    configure_logging(log_level or config.engine.log_level)
    loop_name = install_event_loop_policy()
    logger.info("config %s: %s (event loop: %s)", config.source, config.summary(), loop_name)
    from engine.callpath import CallCentre
    import engine.agent_ops  # noqa: F401  (registers the call path's ops)
    import engine.callcontrol_ops  # noqa: F401  (registers the call-control ops)
    import engine.security_ops  # noqa: F401  (registers sip.bans / sip.unban)

    # The call path (SIP listeners, media, ACD) runs when there is a trunk to take calls
    # from; a control-only configuration binds no SIP port (docs/callpath.md).
    engine = Engine(config, services=[CallCentre()] if config.trunks else [])
    from engine.realtime import StatsService
    engine.add_service(StatsService())  # stats event, today's KPIs, abandoned -> callback
    from engine.kpi_buckets import SealService
    engine.add_service(SealService())  # sealed KPI buckets for fast reports (docs/kpis.md)
    from engine.campaign_service import CampaignService
    from engine import campaign_ops  # noqa: F401  (registers the campaign ops)

    engine.add_service(CampaignService())  # outbound campaigns (docs/outbound.md), after the call path
    try:
        asyncio.run(serve(engine))
    except StoreError as exc:
        logger.error("cannot open the store: %s", exc)
        return 1
    except OSError as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return 0
