"""The hub's configuration: one TOML file plus a few environment variables.

``load()`` reads ``erphub.toml`` (or ``$ERPHUB_CONFIG``), applies ``ERPHUB_STORE_URL``,
``ERPHUB_BROKER_URL`` and ``ERPHUB_LOG_LEVEL``, resolves secret references and returns a
frozen, typed :class:`Settings`. Every problem in the file is reported at once, each with
its key path (``connections.kingdee_prod.url: not a valid URL``), in a :class:`ConfigInvalid`.

Each ``[connections.<name>]`` block is validated by the ``Settings`` model of its platform's
connector (``connectors.registry.get(platform).Settings``). Fields that model types as
``SecretStr`` must be written as references, ``{ env = "NAME" }`` or ``{ file = "PATH" }``,
never as literals; the resolved values are registered with ``connectors.redaction`` so they
are masked in every later log line, error and report.
"""
from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from connectors import registry
from connectors.base import ConnectionSettings
from connectors.redaction import MASK, is_secret_key, redact_text, register_secret
from sync.codemap import CodeMapRules

__all__ = [
    "BrokerSettings",
    "ConfigInvalid",
    "DEFAULT_BROKER_URL",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_STORE_URL",
    "ENV_BROKER_URL",
    "ENV_CONFIG",
    "ENV_LOG_LEVEL",
    "ENV_STORE_URL",
    "Flow",
    "FlowEntity",
    "FlowKind",
    "LoggingSettings",
    "Settings",
    "StoreSettings",
    "example_config",
    "format_duration",
    "load",
    "parse_duration",
    "redacted_view",
    "resolve_config_path",
    "write_example",
]

DEFAULT_CONFIG_PATH = "erphub.toml"
DEFAULT_STORE_URL = "sqlite:///erphub.db"
DEFAULT_BROKER_URL = "memory://"

ENV_CONFIG = "ERPHUB_CONFIG"
ENV_STORE_URL = "ERPHUB_STORE_URL"
ENV_BROKER_URL = "ERPHUB_BROKER_URL"
ENV_LOG_LEVEL = "ERPHUB_LOG_LEVEL"

SECRET_HINT = 'write secrets as { env = "NAME" } or { file = "PATH" }'
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME_RULE = "use 1 to 64 letters, digits, '_' or '-'"
_FROZEN = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------
# Problems


class ConfigInvalid(Exception):
    """The configuration has problems; ``problems`` lists every one as ``(key path, message)``.

    ``str(exc)`` renders one line per problem: ``connections.kingdee_prod.url: not a valid URL``.
    No message ever contains a secret value.
    """

    def __init__(self, problems: Iterable[tuple[str, str]], *, source: Path | None = None) -> None:
        self.problems: list[tuple[str, str]] = [(path, redact_text(msg)) for path, msg in problems]
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{path}: {msg}" if path else msg for path, msg in self.problems)


class _Problems:
    """Collects problems, one per key path (the first one found wins)."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def add(self, path: str, message: str) -> None:
        self.items.setdefault(path, message)

    def has(self, path: str) -> bool:
        return path in self.items

    def under(self, prefix: str) -> bool:
        return any(p == prefix or p.startswith((prefix + ".", prefix + "[")) for p in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def as_list(self) -> list[tuple[str, str]]:
        return list(self.items.items())


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


_MISSING = object()


def _loc_path(prefix: str, loc: tuple[str | int, ...], data: Any) -> str:
    """A pydantic ``loc`` as a dotted key path, following the input so that union member tags
    and validator names (which are not places in the file) are left out."""
    path, cur = prefix, data
    for comp in loc:
        if isinstance(cur, Mapping) and isinstance(comp, str):
            path, cur = _join(path, comp), cur.get(comp, _MISSING)
        elif isinstance(cur, list | tuple) and isinstance(comp, int):
            path = _join(path, comp)
            cur = cur[comp] if 0 <= comp < len(cur) else _MISSING
        # anything else is a union tag such as 'bool' or 'function-after[...]': skip it
    return path


_TYPE_MESSAGES = {
    "missing": "required key is missing",
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "url_type": "not a valid URL",
    "url_parsing": "not a valid URL",
    "url_syntax_violation": "not a valid URL",
    "url_scheme": "not a valid URL",
    "url_too_long": "not a valid URL",
}


def _message(error: Mapping[str, Any], model: type[BaseModel] | None) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = error["loc"][-1] if error["loc"] else ""
        return _unknown_key_message(str(key), list(model.model_fields) if model and len(error["loc"]) == 1 else [])
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    msg = str(error["msg"])
    for lead in ("Value error, ", "Assertion failed, "):
        if msg.startswith(lead):
            msg = msg[len(lead):]
    if msg.startswith(("Input should be '", "Input should be a valid ")):  # literals, enums, types
        msg = "expected" + msg[len("Input should be"):]
    elif msg.startswith("Input "):
        msg = msg[len("Input "):]
    if msg[:2] == msg[:2].upper():  # starts with an acronym such as "URL"
        return msg
    return msg[:1].lower() + msg[1:]


def _unknown_key_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _add_validation_errors(problems: _Problems, exc: ValidationError, prefix: str, data: Any,
                           model: type[BaseModel] | None) -> None:
    merged: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        path = _loc_path(prefix, tuple(error["loc"]), data)
        msg = _message(error, model)
        if msg not in merged.setdefault(path, []):
            merged[path].append(msg)
    for path, messages in merged.items():
        if len(messages) > 1 and all(m.startswith("expected ") for m in messages):
            problems.add(path, "expected " + " or ".join(m[len("expected "):] for m in messages))
        else:
            problems.add(path, messages[0])


# --------------------------------------------------------------------------------------------
# Durations


_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DURATION_HINT = "not a duration; write e.g. 30s, 5m, 1h or 1h30m"


def parse_duration(text: str) -> timedelta:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` or combinations such as ``"1h30m"``."""
    match = _DURATION_RE.match(text.strip().lower()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(_DURATION_HINT)
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


def format_duration(value: timedelta) -> str:
    """The compact form ``parse_duration`` reads: ``timedelta(minutes=90)`` → ``"1h30m"``."""
    total = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"


def _duration_input(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(_DURATION_HINT)


Duration = Annotated[timedelta, BeforeValidator(_duration_input), PlainSerializer(format_duration, return_type=str)]


# --------------------------------------------------------------------------------------------
# Models


def _mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


def _register_url_password(url: str) -> None:
    try:
        register_secret(urlsplit(url).password)
    except ValueError:
        pass


class _UrlSection(BaseModel):
    """A section whose ``url`` may carry a password: masked in repr, str and JSON dumps."""

    model_config = _FROZEN
    url: str

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (_mask_url(value) if name == "url" and isinstance(value, str) else value)

    @field_serializer("url", when_used="json")
    def _url_json(self, url: str) -> str:
        return _mask_url(url)


class StoreSettings(_UrlSection):
    """Where the hub keeps its state: any SQLAlchemy URL."""

    url: str = Field(DEFAULT_STORE_URL, description="SQLAlchemy URL, e.g. postgresql+psycopg://erphub@db/erphub")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise ValueError("not a valid SQLAlchemy URL (e.g. sqlite:///erphub.db or "
                             "postgresql+psycopg://erphub@db/erphub)") from None
        try:
            parsed.get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"unknown database backend {parsed.drivername!r}") from None
        _register_url_password(url)
        return url


_BROKER_SCHEMES = ("memory", "redis", "rediss", "amqp", "amqps")


class BrokerSettings(_UrlSection):
    """Which broker dramatiq uses: in-process by default, Redis or RabbitMQ for many workers."""

    url: str = Field(DEFAULT_BROKER_URL, description="memory://, redis://host:6379/0 or amqp://host:5672")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme not in _BROKER_SCHEMES:
            raise ValueError("expected memory://, redis://…, rediss://…, amqp://… or amqps://…")
        if parts.scheme == "memory":
            if url != DEFAULT_BROKER_URL:
                raise ValueError("the in-process broker is written memory://")
        elif not parts.hostname:
            raise ValueError(f"not a valid URL (no host after {parts.scheme}://)")
        _register_url_password(url)
        return url


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingSettings(BaseModel):
    model_config = _FROZEN

    level: LogLevel = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class FlowKind(StrEnum):
    MASTER_DATA = "master_data"
    MOVEMENTS = "movements"
    BALANCES = "balances"


class FlowEntity(StrEnum):
    ITEMS = "items"
    WAREHOUSES = "warehouses"
    LOCATIONS = "locations"
    PARTNERS = "partners"
    MOVEMENTS = "movements"
    BALANCES = "balances"


FLOW_ENTITIES: dict[FlowKind, tuple[FlowEntity, ...]] = {
    FlowKind.MASTER_DATA: (FlowEntity.ITEMS, FlowEntity.WAREHOUSES, FlowEntity.LOCATIONS, FlowEntity.PARTNERS),
    FlowKind.MOVEMENTS: (FlowEntity.MOVEMENTS,),
    FlowKind.BALANCES: (FlowEntity.BALANCES,),
}


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(_NAME_RULE)
    return value


class Flow(BaseModel):
    """One scheduled flow: what moves from ``source`` to ``targets``, and how often.

    ``master_data`` flows carry items, warehouses, locations and partners (all four when
    ``entities`` is left out); ``movements`` flows carry movements; ``balances`` flows snapshot
    balances for reconciliation and may have no targets.
    """

    model_config = _FROZEN

    name: str
    kind: FlowKind
    source: str
    targets: list[str] = Field(default_factory=list, validate_default=True)
    entities: list[FlowEntity] = Field(default_factory=list, validate_default=True)
    every: Duration

    @field_validator("name", "source")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value)

    @field_validator("targets")
    @classmethod
    def _targets(cls, targets: list[str], info: ValidationInfo) -> list[str]:
        kind, source = info.data.get("kind"), info.data.get("source")
        if not targets and kind in (FlowKind.MASTER_DATA, FlowKind.MOVEMENTS):
            raise ValueError(f"a {kind} flow needs at least one target")
        seen: set[str] = set()
        for target in targets:
            if target == source:
                raise ValueError(f"{target!r} is this flow's source; a flow cannot target its own source")
            if target in seen:
                raise ValueError(f"{target!r} is listed twice")
            seen.add(target)
        return targets

    @field_validator("entities")
    @classmethod
    def _entities(cls, entities: list[FlowEntity], info: ValidationInfo) -> list[FlowEntity]:
        kind = info.data.get("kind")
        if kind is None:
            return entities
        allowed = FLOW_ENTITIES[kind]
        if not entities:
            return list(allowed)
        seen: set[FlowEntity] = set()
        for entity in entities:
            if entity not in allowed:
                raise ValueError(f"{entity.value!r} does not belong in a {kind.value} flow "
                                 f"(expected {', '.join(e.value for e in allowed)})")
            if entity in seen:
                raise ValueError(f"{entity.value!r} is listed twice")
            seen.add(entity)
        return entities


def _flow_reference_problems(flows: Iterable[tuple[int, Mapping[str, Any]]], connections: Iterable[str],
                             problems: _Problems) -> None:
    """Flows name configured connections, and flow names are unique."""
    known = set(connections)
    listing = ", ".join(sorted(known)) or "none configured"
    names: set[str] = set()
    for i, flow in flows:
        name = flow.get("name")
        if isinstance(name, str) and not problems.has(f"flows[{i}].name"):
            if name in names:
                problems.add(f"flows[{i}].name", f"another flow is already named {name!r}")
            names.add(name)
        source = flow.get("source")
        if isinstance(source, str) and source not in known and not problems.has(f"flows[{i}].source"):
            problems.add(f"flows[{i}].source", f"no connection named {source!r} (connections: {listing})")
        targets = flow.get("targets")
        if isinstance(targets, list | tuple):
            for j, target in enumerate(targets):
                path = f"flows[{i}].targets[{j}]"
                if isinstance(target, str) and target not in known and not problems.has(path):
                    problems.add(path, f"no connection named {target!r} (connections: {listing})")


class Settings(BaseModel):
    """The whole configuration. Frozen; secrets are ``SecretStr`` and never printed."""

    model_config = _FROZEN

    store: StoreSettings = Field(default_factory=StoreSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    connections: dict[str, SerializeAsAny[ConnectionSettings]] = Field(default_factory=dict)
    flows: list[Flow] = Field(default_factory=list)
    # [codemap.<connection>] items = [{ op = "add_prefix", value = "K-" }, ...]: see sync.codemap
    codemap: CodeMapRules = Field(default_factory=CodeMapRules)

    _source: Path | None = PrivateAttr(default=None)
    _secret_sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _cross_check(self) -> Settings:
        problems = _Problems()
        for name in self.connections:
            if not _NAME_RE.match(name):
                problems.add(f"connections.{name}", f"not a valid connection name: {_NAME_RULE}")
        _flow_reference_problems(
            ((i, {"name": f.name, "source": f.source, "targets": f.targets}) for i, f in enumerate(self.flows)),
            self.connections, problems)
        if problems:
            raise ValueError("; ".join(f"{p}: {m}" for p, m in problems.as_list()))
        for connection in self.connections.values():
            for value in _secret_values(connection):
                register_secret(value)
        return self

    @property
    def source(self) -> Path | None:
        """The file these settings were read from; None for embedded defaults."""
        return self._source

    def secret_source(self, path: str) -> str | None:
        """Where the secret at ``path`` (``connections.x.password``) came from: ``env:NAME`` or
        ``file:PATH``; None if it was not read from a reference."""
        return self._secret_sources.get(path)


def _secret_values(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from _secret_values(value)


# --------------------------------------------------------------------------------------------
# Secret references


def _is_secret_type(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(arg is SecretStr for arg in typing.get_args(annotation))
    return False


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        candidates = list(typing.get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


_UNRESOLVED = "<unresolved secret>"


class _SecretResolver:
    def __init__(self, env: Mapping[str, str], base_dir: Path, problems: _Problems) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems = problems
        self.sources: dict[str, str] = {}

    def resolve_fields(self, model: type[BaseModel], data: dict[str, Any], path: str) -> dict[str, Any]:
        """``data`` with every secret reference for ``model``'s ``SecretStr`` fields resolved."""
        out = dict(data)
        for name, field in model.model_fields.items():
            key = field.alias if field.alias and field.alias in data else name
            if key not in data:
                continue
            field_path = _join(path, key)
            if _is_secret_type(field.annotation):
                if data[key] is None:
                    continue
                out[key] = self.resolve(data[key], field_path)
            else:
                nested = _nested_model(field.annotation)
                if nested is not None and isinstance(data[key], dict):
                    out[key] = self.resolve_fields(nested, data[key], field_path)
        return out

    def resolve(self, raw: Any, path: str) -> str:
        if isinstance(raw, dict):
            if set(raw) == {"env"} and isinstance(raw["env"], str) and raw["env"]:
                return self._from_env(raw["env"], path)
            if set(raw) == {"file"} and isinstance(raw["file"], str) and raw["file"]:
                return self._from_file(raw["file"], path)
            self.problems.add(path, "a secret reference is { env = \"NAME\" } or { file = \"PATH\" }, "
                                    "with exactly one of the two")
            return _UNRESOLVED
        if isinstance(raw, str | int | float):
            register_secret(str(raw))  # a literal in the file: keep it out of everything printed later
        self.problems.add(path, f"{SECRET_HINT}, not in the file")
        return _UNRESOLVED

    def _from_env(self, name: str, path: str) -> str:
        value = self.env.get(name)
        if value is None:
            self.problems.add(path, f"environment variable {name} is not set")
            return _UNRESOLVED
        if value == "":
            self.problems.add(path, f"environment variable {name} is empty")
            return _UNRESOLVED
        register_secret(value)
        self.sources[path] = f"env:{name}"
        return value

    def _from_file(self, written: str, path: str) -> str:
        file = Path(written).expanduser()
        if not file.is_absolute():
            file = self.base_dir / file
        try:
            value = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            self.problems.add(path, f"secret file {written} is not UTF-8 text")
            return _UNRESOLVED
        except OSError as exc:
            self.problems.add(path, f"cannot read secret file {written} ({exc.strerror or type(exc).__name__})")
            return _UNRESOLVED
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
        if not value:
            self.problems.add(path, f"secret file {written} is empty")
            return _UNRESOLVED
        register_secret(value)
        self.sources[path] = f"file:{written}"
        return value


# --------------------------------------------------------------------------------------------
# Loading


def resolve_config_path(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The file ``load`` reads: ``path``, else ``$ERPHUB_CONFIG``, else ``./erphub.toml``."""
    env = os.environ if env is None else env
    if path is not None:
        return Path(path)
    return Path(env.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH)


_SECTIONS: dict[str, type[BaseModel]] = {"store": StoreSettings, "broker": BrokerSettings, "logging": LoggingSettings}
_TOP_LEVEL = ("store", "broker", "logging", "connections", "flows", "codemap")
_ENV_OVERRIDES = ((ENV_STORE_URL, "store", "url"), (ENV_BROKER_URL, "broker", "url"),
                  (ENV_LOG_LEVEL, "logging", "level"))
_TOML_POSITION = re.compile(r"\s*\(at (line \d+, column \d+|end of document)\)\s*$")


def load(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read, check and resolve the configuration.

    ``path`` defaults to ``$ERPHUB_CONFIG`` or ``./erphub.toml``; when that default file does
    not exist the embedded defaults are used (a file named explicitly must exist). ``env``
    defaults to ``os.environ`` and is used for the ``ERPHUB_*`` overrides and for
    ``{ env = "NAME" }`` secret references. Raises :class:`ConfigInvalid` listing every problem.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(ENV_CONFIG))
    file = resolve_config_path(path, env)
    raw: dict[str, Any] = {}
    source: Path | None = None
    if file.is_file() or (explicit and file.exists()):
        raw = _read_toml(file)
        source = file.resolve()
    elif explicit:
        raise ConfigInvalid([(str(file), "configuration file not found")], source=None)

    problems = _Problems()
    base_dir = source.parent if source else Path.cwd()
    settings = _build(raw, env, base_dir, problems)
    if problems or settings is None:
        raise ConfigInvalid(problems.as_list(), source=source)
    settings._source = source
    return settings


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigInvalid([(str(file), f"not UTF-8 text (byte {exc.start})")], source=file) from None
    except OSError as exc:
        raise ConfigInvalid([(str(file), f"cannot read ({exc.strerror or type(exc).__name__})")],
                            source=file) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_POSITION.search(message)
        detail = _TOML_POSITION.sub("", message)
        detail = detail[:1].lower() + detail[1:]
        problem = f"invalid TOML at {where.group(1)}: {detail}" if where else f"invalid TOML: {detail}"
        raise ConfigInvalid([(str(file), problem)], source=file) from None


def _build(raw: dict[str, Any], env: Mapping[str, str], base_dir: Path, problems: _Problems) -> Settings | None:
    for key in raw:
        if key not in _TOP_LEVEL:
            problems.add(key, _unknown_key_message(key, list(_TOP_LEVEL)))

    sections: dict[str, Any] = {}
    overridden: dict[str, str] = {}
    for name, model in _SECTIONS.items():
        data = raw.get(name, {})
        if not isinstance(data, dict):
            problems.add(name, "expected a table")
            continue
        data = dict(data)
        for var, section, key in _ENV_OVERRIDES:
            if section == name and env.get(var):
                data[key] = env[var]
                overridden[_join(name, key)] = var
        try:
            sections[name] = model.model_validate(data)
        except ValidationError as exc:
            local = _Problems()
            _add_validation_errors(local, exc, name, data, model)
            for path, msg in local.as_list():
                problems.add(path, f"{msg} (from {overridden[path]})" if path in overridden else msg)

    resolver = _SecretResolver(env, base_dir, problems)
    connections_raw = raw.get("connections", {})
    connections: dict[str, ConnectionSettings] = {}
    if not isinstance(connections_raw, dict):
        problems.add("connections", "expected a table of connections, e.g. [connections.kingdee_prod]")
        connections_raw = {}
    for name, data in connections_raw.items():
        connection = _build_connection(name, data, resolver, problems)
        if connection is not None:
            connections[name] = connection

    flows_raw = raw.get("flows", [])
    flows: list[Flow] = []
    if not isinstance(flows_raw, list):
        problems.add("flows", "expected a list of flows, written [[flows]]")
        flows_raw = []
    flow_dicts: list[tuple[int, Mapping[str, Any]]] = []
    for i, data in enumerate(flows_raw):
        prefix = f"flows[{i}]"
        if not isinstance(data, dict):
            problems.add(prefix, "expected a table, written [[flows]]")
            continue
        flow_dicts.append((i, data))
        try:
            flows.append(Flow.model_validate(data))
        except ValidationError as exc:
            _add_validation_errors(problems, exc, prefix, data, Flow)
    _flow_reference_problems(flow_dicts, connections_raw, problems)

    codemap = _build_codemap(raw.get("codemap", {}), connections_raw, problems)

    if problems:
        return None
    settings = Settings(connections=connections, flows=flows, codemap=codemap, **sections)
    settings._secret_sources = dict(resolver.sources)
    return settings


def _build_codemap(data: Any, connections: Iterable[str], problems: _Problems) -> CodeMapRules:
    """The ``[codemap.<connection>]`` tables: code-mapping rules per connection and entity."""
    if not isinstance(data, dict):
        problems.add("codemap", "expected a table, e.g. [codemap.sap_prod]")
        return CodeMapRules()
    known = set(connections)
    listing = ", ".join(sorted(known)) or "none configured"
    for name in data:
        if name not in known:
            problems.add(f"codemap.{name}", f"no connection named {name!r} (connections: {listing})")
    try:
        return CodeMapRules.model_validate(data)
    except ValidationError as exc:
        ops = CodeMapRules.operations()
        for error in exc.errors(include_url=False, include_input=False):
            loc = list(error["loc"])
            if len(loc) >= 4 and isinstance(loc[2], int) and loc[3] in ops:
                del loc[3]  # the union member's tag is not a place in the file
            if error["type"] == "union_tag_invalid":
                message = f"unknown op (expected one of {', '.join(ops)})"
            elif error["type"] == "union_tag_not_found":
                message = f"required key 'op' is missing (one of {', '.join(ops)})"
            else:
                message = _message(error, None)
            problems.add(_loc_path("codemap", tuple(loc), data), message)
        return CodeMapRules()


def _build_connection(name: str, data: Any, resolver: _SecretResolver, problems: _Problems) -> ConnectionSettings | None:
    prefix = f"connections.{name}"
    if not _NAME_RE.match(name):
        problems.add(prefix, f"not a valid connection name: {_NAME_RULE}")
        return None
    if not isinstance(data, dict):
        problems.add(prefix, f"expected a table, written [connections.{name}]")
        return None
    platform = data.get("platform")
    known = ", ".join(registry.platforms()) or "none"
    if platform is None:
        problems.add(f"{prefix}.platform", f"required key is missing (known platforms: {known})")
        return None
    if not isinstance(platform, str):
        problems.add(f"{prefix}.platform", "expected a string")
        return None
    try:
        model = registry.get(platform).Settings
    except registry.UnknownPlatform:
        problems.add(f"{prefix}.platform", f"unknown platform {platform!r} (known: {known})")
        return None
    except Exception as exc:  # a vendor package that fails to import
        problems.add(f"{prefix}.platform", f"the {platform} connector failed to load ({type(exc).__name__})")
        return None

    resolved = resolver.resolve_fields(model, data, prefix)
    verify = resolved.get("verify_tls")
    if verify is False:
        problems.add(f"{prefix}.verify_tls", "false is refused: give the path of a CA bundle for a private CA")
    elif isinstance(verify, str) and verify:
        bundle = Path(verify).expanduser()
        bundle = bundle if bundle.is_absolute() else resolver.base_dir / bundle
        if not bundle.is_file():
            problems.add(f"{prefix}.verify_tls", f"CA bundle {verify} not found")
        else:
            resolved["verify_tls"] = str(bundle)
    if model.model_config.get("extra") not in ("forbid", "allow"):
        for key in data:
            if key not in model.model_fields and not any(f.alias == key for f in model.model_fields.values()):
                problems.add(_join(prefix, key), _unknown_key_message(key, list(model.model_fields)))

    connection: ConnectionSettings | None = None
    try:
        connection = model.model_validate(resolved)
    except ValidationError as exc:
        _add_validation_errors(problems, exc, prefix, resolved, model)
    url = resolved.get("url")
    if isinstance(url, str) and not problems.has(f"{prefix}.url"):
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:
            problems.add(f"{prefix}.url", "not a valid URL (expected http://… or https://…)")
    return connection if not problems.under(prefix) else None


# --------------------------------------------------------------------------------------------
# Display


def redacted_view(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for display: secrets read from ``{ env = "NAME" }`` show as
    ``env:NAME``, from ``{ file = "PATH" }`` as ``file:PATH``, any other secret as ``***``;
    passwords inside URLs are masked."""
    view: dict[str, Any] = {
        "store": {"url": _mask_url(settings.store.url)},
        "broker": {"url": _mask_url(settings.broker.url)},
        "logging": settings.logging.model_dump(mode="json"),
        "connections": {
            name: _redact_model(connection, f"connections.{name}", settings)
            for name, connection in settings.connections.items()
        },
        "flows": [flow.model_dump(mode="json") for flow in settings.flows],
    }
    if settings.codemap.root:
        view["codemap"] = settings.codemap.model_dump(mode="json")
    return view


def _redact_model(model: BaseModel, path: str, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dumped = model.model_dump(mode="json")
    for name in type(model).model_fields:
        value = getattr(model, name)
        field_path = _join(path, name)
        if isinstance(value, SecretStr):
            out[name] = settings.secret_source(field_path) or MASK
        elif isinstance(value, BaseModel):
            out[name] = _redact_model(value, field_path, settings)
        elif is_secret_key(name) and value is not None:
            out[name] = MASK
        else:
            out[name] = _redact_value(dumped.get(name))
    return out


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(_mask_url(value) if "://" in value else value)
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    return value


# The commented example lives in its own module; re-exported here.
from erphub.config_example import example_config, write_example  # noqa: E402
