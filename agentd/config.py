"""Configuration: one TOML file, sections declared by plugins, secrets by reference.

Where the file is, first match wins: ``--config FILE``; ``$AGENTD_CONFIG``; under systemd
``$CONFIGURATION_DIRECTORY/agentd.toml``; the platform's user config folder
(platformdirs) ``agentd.toml``; the system-wide file a package installs
(``/etc/agentd/agentd.toml`` on Linux), so an agent's own ``agentd check`` reads the same
file as the service. A missing default file means "all defaults"; a missing file that
was named explicitly is an error.

Each section is a frozen dataclass declared by a plugin (``agentd_config_sections``).
Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Path``, :class:`Secret`,
``Literal[...]``, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]`` and nested
dataclasses (TOML tables and arrays of tables). A field's ``metadata`` may carry
``help`` (shown by ``agentd config show --help-keys``), ``min`` and ``max``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from agentd import paths, redact
from agentd.errors import ConfigError, SecretError

CONFIG_FILENAME = "agentd.toml"


# -- secrets -----------------------------------------------------------------------------


class Secret:
    """A secret resolved from a reference. ``str()`` and ``repr()`` never show the value.

    In TOML: ``{ env = "NAME" }``, ``{ file = "/path" }``, ``{ credential = "name" }``
    (systemd ``LoadCredential=``, read from ``$CREDENTIALS_DIRECTORY``), or a plain string
    (allowed, but anyone who can read the file can read the secret).
    """

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str = "inline") -> None:
        self._value = value
        self.reference = reference
        redact.register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.reference})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_secret(value: Any, *, key: str, file: str | None) -> Secret:
    if isinstance(value, str):
        if not value:
            raise SecretError("the secret is empty", file=file, key=key)
        return Secret(value, "inline")
    if not isinstance(value, Mapping) or len(value) != 1:
        raise SecretError(
            'a secret is a string or one reference: { env = "NAME" }, { file = "PATH" } '
            'or { credential = "NAME" }',
            file=file,
            key=key,
        )
    (kind, name), = value.items()
    if not isinstance(name, str) or not name:
        raise SecretError(f"the {kind} reference must be a non-empty string", file=file, key=key)
    if kind == "env":
        secret = os.environ.get(name)
        if not secret:
            raise SecretError(f"environment variable {name} is not set or empty", file=file, key=key)
        return Secret(secret, f"env:{name}")
    if kind == "file":
        return Secret(_read_secret_file(Path(name).expanduser(), key=key, file=file), f"file:{name}")
    if kind == "credential":
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                f"credential {name!r} asked for, but $CREDENTIALS_DIRECTORY is not set "
                "(systemd sets it for units with LoadCredential=)",
                file=file,
                key=key,
            )
        return Secret(_read_secret_file(Path(directory) / name, key=key, file=file), f"credential:{name}")
    raise SecretError(f"unknown secret reference {kind!r}; use env, file or credential", file=file, key=key)


def _read_secret_file(path: Path, *, key: str, file: str | None) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig").strip()  # a BOM (Notepad's) is not part of the secret
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist", file=file, key=key) from None
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path} is not UTF-8 text", file=file, key=key) from None
    except OSError as exc:
        raise SecretError(f"secret file {path} cannot be read: {exc.strerror}", file=file, key=key) from None
    if not text:
        raise SecretError(f"secret file {path} is empty", file=file, key=key)
    return text


# -- sections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigSection:
    """A TOML table owned by a plugin. ``name`` is dotted for nested tables (``sinks.http``).

    ``optional`` sections (sinks, for example) exist only when the file has the table:
    ``config.section(name)`` is then None when absent, and "present means enabled".
    """

    name: str
    schema: type
    help: str = ""
    optional: bool = False


@dataclass(frozen=True)
class CoreSettings:
    """The ``[agentd]`` table: how the core itself behaves."""

    disable_plugins: tuple[str, ...] = field(
        default=(), metadata={"help": "plugin names not to load (see `agentd plugins`)"}
    )
    plugin_dir: Path | None = field(
        default=None, metadata={"help": "a folder of *.py drop-in plugins (default: <config dir>/plugins.d)"}
    )
    preshift_deadline_s: float = field(
        default=8.0, metadata={"help": "overall deadline of a pre-shift check run", "min": 0.5, "max": 600}
    )
    full_deadline_s: float = field(
        default=30.0, metadata={"help": "overall deadline of a full check run", "min": 0.5, "max": 3600}
    )
    incident_deadline_s: float = field(
        default=60.0, metadata={"help": "overall deadline of `agentd diagnose`", "min": 0.5, "max": 3600}
    )
    log_level: Literal["debug", "info", "warning", "error"] = field(
        default="warning", metadata={"help": "log level (stderr or the journal)"}
    )

    def deadline_for(self, profile: str) -> float:
        return {
            "preshift": self.preshift_deadline_s,
            "full": self.full_deadline_s,
            "incident": self.incident_deadline_s,
        }.get(profile, self.full_deadline_s)


CORE_SECTION = ConfigSection("agentd", CoreSettings, "the core: plugins, deadlines, logging")


# -- the effective configuration ---------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The effective configuration: each declared section as its dataclass instance."""

    path: Path | None
    sections: Mapping[str, Any]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def section(self, name: str) -> Any:
        try:
            return self.sections[name]
        except KeyError:
            raise ConfigError(f"no plugin declares the section [{name}]") from None

    @property
    def core(self) -> CoreSettings:
        return self.sections["agentd"]

    def redacted(self) -> dict[str, Any]:
        """Every section as plain data, secrets shown by reference only."""
        out: dict[str, Any] = {}
        for name, value in sorted(self.sections.items()):
            if value is None:
                continue
            target = out
            *parents, leaf = name.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = _to_plain(value)
        return out


def _to_plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return f"<secret {value.reference}>"
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


# -- locating and reading ----------------------------------------------------------------


def locate(explicit: str | os.PathLike | None) -> tuple[Path | None, bool]:
    """The config file to read and whether it was named explicitly (then it must exist)."""
    if explicit:
        return Path(explicit).expanduser(), True
    env = os.environ.get("AGENTD_CONFIG")
    if env:
        return Path(env).expanduser(), True
    candidate = paths.config_dir() / CONFIG_FILENAME
    if _present(candidate):
        return candidate, False
    if not os.environ.get("CONFIGURATION_DIRECTORY"):
        system_wide = paths.site_config_dir() / CONFIG_FILENAME
        if _present(system_wide):
            return system_wide, False
    return None, False


def _present(path: Path) -> bool:
    """Exists, or may exist behind a folder this user cannot search (/etc/agentd is 0750):
    then reading it gives the one-line "cannot read" error instead of a traceback."""
    try:
        return path.exists()
    except PermissionError:
        return True


def read_toml(path: Path | None, *, explicit: bool) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError("the configuration file does not exist", file=str(path)) from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file: {exc.strerror}", file=str(path)) from None
    try:
        # utf-8-sig: a byte order mark at the start (Windows editors write one) is not part of the TOML
        return tomllib.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None


def build(
    raw: Mapping[str, Any],
    sections: Sequence[ConfigSection],
    *,
    path: Path | None,
    allow_unknown_sections: bool = False,
) -> Config:
    """Validate ``raw`` against the declared sections and build the :class:`Config`.

    ``allow_unknown_sections`` is set when plugins were disabled: the tables they would
    have owned are then ignored instead of rejected.
    """
    file = str(path) if path else None
    declared = {s.name: s for s in sections}
    _reject_unknown_tables(raw, declared, file=file, allow=allow_unknown_sections)
    built: dict[str, Any] = {}
    for name, section in declared.items():
        table = _lookup(raw, name)
        if table is None and section.optional:
            built[name] = None
            continue
        if table is None:
            table = {}
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{name}] must be a table", file=file, key=name)
        built[name] = _build_dataclass(section.schema, table, key=name, file=file)
    return Config(path=path, sections=built, raw=raw)


def _lookup(raw: Mapping[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _reject_unknown_tables(raw: Mapping[str, Any], declared: Mapping[str, ConfigSection], *, file, allow) -> None:
    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in declared:
                continue
            if any(name.startswith(dotted + ".") for name in declared) and isinstance(value, Mapping):
                walk(value, dotted + ".")
                continue
            if allow:
                continue
            known = ", ".join(f"[{n}]" for n in sorted(declared))
            raise ConfigError(
                f"unknown section or key [{dotted}] (no loaded plugin declares it; known: {known})",
                file=file,
                key=dotted,
            )

    walk(raw, "")


_NONE_TYPE = type(None)


def _build_dataclass(cls: type, table: Mapping[str, Any], *, key: str, file: str | None) -> Any:
    hints = typing.get_type_hints(cls)
    fields_by_name = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in table:
        if name not in fields_by_name:
            valid = ", ".join(sorted(fields_by_name)) or "none"
            raise ConfigError(f"unknown key (valid keys here: {valid})", file=file, key=f"{key}.{name}")
    values: dict[str, Any] = {}
    for name, fld in fields_by_name.items():
        dotted = f"{key}.{name}"
        if name in table:
            value = _convert(hints[name], table[name], key=dotted, file=file)
            _check_bounds(fld, value, key=dotted, file=file)
            values[name] = value
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
            raise ConfigError("required key is missing", file=file, key=dotted)
    return cls(**values)


def _check_bounds(fld: dataclasses.Field, value: Any, *, key: str, file: str | None) -> None:
    low, high = fld.metadata.get("min"), fld.metadata.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and value < low:
            raise ConfigError(f"must be at least {low}, got {value}", file=file, key=key)
        if high is not None and value > high:
            raise ConfigError(f"must be at most {high}, got {value}", file=file, key=key)


def _type_name(tp: Any) -> str:
    if tp is _NONE_TYPE:
        return "nothing"
    if isinstance(tp, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
            tp.__name__, tp.__name__
        )
    return str(tp)


def _convert(tp: Any, value: Any, *, key: str, file: str | None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not _NONE_TYPE]
        errors = []
        for member in members:
            try:
                return _convert(member, value, key=key, file=file)
            except SecretError:
                raise
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(errors[0] if len(errors) == 1 else "; or ".join(errors), file=file, key=key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"must be one of {choices}, got {value!r}", file=file, key=key)
        return value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ConfigError(f"must be a list, got {_describe(value)}", file=file, key=key)
        inner = args[0] if args else Any
        items = [_convert(inner, item, key=f"{key}[{i}]", file=file) for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a table, got {_describe(value)}", file=file, key=key)
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _convert(inner, v, key=f"{key}.{k}", file=file) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is Secret:
        return resolve_secret(value, key=key, file=file)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a table, got {_describe(value)}", file=file, key=key)
        return _build_dataclass(tp, value, key=key, file=file)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {_describe(value)}", file=file, key=key)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, got {_describe(value)}", file=file, key=key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, got {_describe(value)}", file=file, key=key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {_describe(value)}", file=file, key=key)
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"must be a path (a string), got {_describe(value)}", file=file, key=key)
        return Path(value).expanduser()
    raise ConfigError(f"unsupported configuration type {tp!r} (a plugin bug)", file=file, key=key)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) < 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__
