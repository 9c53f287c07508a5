"""The configured connections, as connectors and as rows of the store.

The engine is handed the connection settings (already validated and with secrets resolved by
the configuration layer) and builds connectors from the registry on demand. Connectors hold an
HTTP session, which is not safe to share between threads, so each thread gets its own instance.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors import registry
from connectors.base import ConnectionSettings, Connector
from connectors.errors import ConfigError
from sync.store import Connection, ConnectionStatus, Store


class Connections:
    """Name → settings, connector (per thread) and store row id."""

    def __init__(self, store: Store, settings: Mapping[str, ConnectionSettings], *,
                 factory: Callable[[str, ConnectionSettings], Connector] | None = None) -> None:
        self.store = store
        self.settings = dict(settings)
        self._factory = factory or _from_registry
        self._local = threading.local()
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._built: list[Connector] = []

    def names(self) -> list[str]:
        return sorted(self.settings)

    def platform(self, name: str) -> str:
        return self._settings(name).platform

    def connector(self, name: str) -> Connector:
        """This thread's connector for ``name``."""
        cache: dict[str, Connector] = self._local.__dict__.setdefault("connectors", {})
        if name not in cache:
            settings = self._settings(name)
            connector = self._factory(name, settings)
            cache[name] = connector
            with self._lock:
                self._built.append(connector)
        return cache[name]

    def id(self, name: str) -> int:
        """The store row id of ``name``, creating the row the first time."""
        if name in self._ids:
            return self._ids[name]
        platform = self._settings(name).platform
        with self.store.session() as session:
            row_id = ensure_connection(session, name, platform)
        with self._lock:
            self._ids[name] = row_id
        return row_id

    def name_of(self, connection_id: int) -> str:
        for name in self.settings:
            if self.id(name) == connection_id:
                return name
        raise ConfigError(f"connection id {connection_id} is not configured (it may have been removed from the file)")

    def is_paused(self, session: Session, name: str) -> str | None:
        """The reason ``name`` is paused, or None when it is active."""
        row = session.get(Connection, self.id(name))
        if row is None or row.status != ConnectionStatus.PAUSED:
            return None
        return row.paused_reason or "paused"

    def close(self) -> None:
        with self._lock:
            built, self._built = self._built, []
        for connector in built:
            connector.close()
        self._local = threading.local()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _settings(self, name: str) -> ConnectionSettings:
        try:
            return self.settings[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"connection {name!r} is not configured (configured: {known})") from None


def _from_registry(name: str, settings: ConnectionSettings) -> Connector:
    return registry.get(settings.platform)(settings, name=name)


def ensure_connection(session: Session, name: str, platform: str) -> int:
    """Id of the ``connection`` row called ``name``, inserting it when missing (race-safe)."""
    found = session.scalar(select(Connection).where(Connection.name == name))
    if found is not None:
        if found.platform != platform:
            raise ConfigError(f"connection {name!r} was {found.platform!r} in the store and is {platform!r} in the "
                              "configuration; give the new system another connection name")
        return found.id
    try:
        with session.begin_nested():
            row = Connection(name=name, platform=platform)
            session.add(row)
        return row.id
    except IntegrityError:  # another process created it first
        return session.scalars(select(Connection.id).where(Connection.name == name)).one()
