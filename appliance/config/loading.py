"""Settings from a TOML file and `SCANSIDE_<SECTION>_<KEY>` environment overrides: each value coerced to its
field's type, relative paths taken relative to the file, the whole validated once."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib
from appliance.config.rules import client_problems, setting_problems
from appliance.config.sections import DEFAULT_BUNDLE, ENV_PREFIX, ClientConfig, ConfigError, Settings

CLIENT = "client"  # the [client] table (ClientConfig): how this host's commands reach the appliance


def load_settings(path: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the TOML file (optional) and the environment, validated ([client] included)."""
    return load_config(path, env)[0]


def load_client(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> ClientConfig:
    """The [client] table of the TOML file (optional) and `SCANSIDE_CLIENT_*`, validated with the settings."""
    return load_config(path, env)[1]


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> tuple[Settings, ClientConfig]:
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    for section, values in _env_overrides(os.environ if env is None else env).items():
        raw.setdefault(section, {}).update(values)
    # Every problem is collected, from the file's shape to the rules, and reported together: one start names all.
    problems: list[str] = []
    client = _section(CLIENT, ClientConfig(), raw.pop(CLIENT, {}), problems)
    settings = _build(raw, Settings(), problems)
    if path is not None:
        base = Path(path).resolve().parent
        settings = _resolve_relative(settings, base)  # the folder checks compare real paths
        client = _resolve_client(client, base)
    problems.extend(setting_problems(settings))
    problems.extend(client_problems(client))
    if problems:
        raise ConfigError(problems=problems)
    object.__setattr__(settings, "_client", client)  # Settings.client: what load_settings' callers read
    return settings, client


def _sections() -> dict[str, type]:
    return typing.get_type_hints(Settings)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    sections = {**_sections(), CLIENT: ClientConfig}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX):].lower()
        section, _, name = rest.partition("_")
        if section not in sections or not name:
            continue  # other SCANSIDE_* variables (e.g. for tools) are not settings
        out.setdefault(section, {})[name] = value
    return out


def build(raw: Mapping[str, Any], base: Settings, validate: bool = True) -> Settings:
    problems: list[str] = []
    settings = _build(raw, base, problems)
    if validate:
        problems.extend(setting_problems(settings))
    if problems:
        raise ConfigError(problems=problems)
    return settings


def _build(raw: Mapping[str, Any], base: Settings, problems: list[str]) -> Settings:
    """`base` with `raw`'s values, each coerced to its field's type; what cannot be used is added to `problems`
    and leaves its field as in `base`, so the rest can still be checked."""
    sections = _sections()
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        known = ", ".join([*sections, CLIENT])
        problems.append(f"unknown configuration section(s): {', '.join(unknown)}; known: {known}")
    return Settings(**{name: _section(name, getattr(base, name), raw.get(name, {}), problems) for name in sections})


def _section(name: str, current: Any, values: Any, problems: list[str]) -> Any:
    if not isinstance(values, Mapping):
        problems.append(f"[{name}] must be a table")
        return current
    hints = typing.get_type_hints(type(current))
    unknown_keys = sorted(set(values) - set(hints))
    if unknown_keys:
        problems.append(f"unknown setting(s) in [{name}]: {', '.join(unknown_keys)}; known: {', '.join(hints)}")
    changes = {}
    for key, value in values.items():
        if key in hints:
            try:
                changes[key] = _coerce(f"{name}.{key}", hints[key], value)
            except ConfigError as exc:
                problems.append(str(exc))
    return dataclasses.replace(current, **changes)


def _coerce(where: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return _coerce(where, options[0], value)
    convert = _tuple_of_str if origin is tuple else _CONVERTERS.get(hint)
    if convert is None:
        raise ConfigError(f"{where}: unsupported setting type {hint}")
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    """A TOML array, or a comma-separated environment value."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{value!r} is not a list of strings")
    return tuple(i.strip() for i in items if i.strip())


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    bool: _bool, int: _int, float: _float, str: _str, Path: lambda value: Path(os.path.expanduser(str(value))),
}


def _resolve_relative(s: Settings, base: Path) -> Settings:
    """Relative paths in a configuration file are relative to that file, not to the current directory."""
    def here(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    def fix(p: Path | None) -> Path | None:
        return None if p is None else here(p)

    paths = dataclasses.replace(s.paths, data_dir=here(s.paths.data_dir), watch_dir=fix(s.paths.watch_dir))
    engine = dataclasses.replace(s.engine, plan_dir=fix(s.engine.plan_dir),
                                 bundle=s.engine.bundle if s.engine.bundle == DEFAULT_BUNDLE else here(s.engine.bundle))
    dicom = dataclasses.replace(s.dicom, tls_cert=fix(s.dicom.tls_cert), tls_key=fix(s.dicom.tls_key),
                                tls_ca=fix(s.dicom.tls_ca))
    grpc = dataclasses.replace(s.grpc, tls_cert=fix(s.grpc.tls_cert), tls_key=fix(s.grpc.tls_key),
                               tls_client_ca=fix(s.grpc.tls_client_ca), clients_file=fix(s.grpc.clients_file))
    export = dataclasses.replace(s.export, folder=fix(s.export.folder), tls_ca=fix(s.export.tls_ca),
                                 tls_cert=fix(s.export.tls_cert), tls_key=fix(s.export.tls_key))
    hl7 = dataclasses.replace(s.hl7, tls_cert=fix(s.hl7.tls_cert), tls_key=fix(s.hl7.tls_key),
                              tls_client_ca=fix(s.hl7.tls_client_ca))
    triton = dataclasses.replace(s.triton, tls_ca=fix(s.triton.tls_ca), tls_cert=fix(s.triton.tls_cert),
                                 tls_key=fix(s.triton.tls_key))
    return dataclasses.replace(s, paths=paths, engine=engine, dicom=dicom, export=export, grpc=grpc, hl7=hl7,
                               triton=triton)


def _resolve_client(c: ClientConfig, base: Path) -> ClientConfig:
    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    return dataclasses.replace(c, tls_ca=fix(c.tls_ca), tls_cert=fix(c.tls_cert), tls_key=fix(c.tls_key),
                               token_file=fix(c.token_file))
