"""Settings: flag > ``KILLSYNC_*`` environment variable > config file > default.

The config file is TOML with the same keys as the environment variables, lower-case and
without the prefix (``database_url = "postgresql+psycopg://..."``). It lives at
``$KILLSYNC_CONFIG``, else ``$KILLSYNC_HOME/config.toml``, else the user config directory.
Settings are resolved once, by the CLI's root callback, and passed down: there are no
module-level globals.
"""

from __future__ import annotations

import errno
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs

from killcli.cadence import DEFAULT_CADENCE, Cadence, CadenceError, parse_cadence
from killcli.errors import ConfigError
from killcli.textsafe import mask_url

ENV_PREFIX = "KILLSYNC_"
APP_NAME = "killsync"
DEFAULT_ESI_BASE_URL = "https://esi.evetech.net"
DEFAULT_SSO_BASE_URL = "https://login.eveonline.com"
DEFAULT_CALLBACK_URL = "http://127.0.0.1:8765/callback"
DEFAULT_QUEUE_NAME = "esi_user_killmails_queue"
MAX_CONFIG_BYTES = 1 << 20
DEFAULT_PRICE_REGION = "10000002"  # The Forge (Jita)
REGION_IDS = (10_000_000, 13_000_000)  # EVE's region ids, wormhole and Abyssal ones included
SECRET_KEY_FILE = "secret.key"  # noqa: S105 - a file name, not a secret

Source = Literal["flag", "env", "file", "default"]


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build with :func:`load_settings`; never mutate."""

    home: Path
    database_url: str
    broker_url: str | None
    esi_base_url: str = DEFAULT_ESI_BASE_URL
    sso_base_url: str = DEFAULT_SSO_BASE_URL
    client_id: str | None = None
    client_secret: str | None = None
    callback_url: str = DEFAULT_CALLBACK_URL
    contact: str | None = None
    secret_key: str | None = None
    queue_name: str = DEFAULT_QUEUE_NAME
    source_address: str | None = None
    egress: str | None = None
    cadence: str = DEFAULT_CADENCE
    price_region: str = DEFAULT_PRICE_REGION
    config_file: Path | None = None
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False, repr=False)

    @property
    def uses_rabbitmq(self) -> bool:
        return self.broker_url is not None and self.broker_url.startswith(("amqp://", "amqps://"))

    @property
    def cadence_plan(self) -> Cadence:
        """The adaptive cadence (checked when the settings were loaded)."""
        return parse_cadence(self.cadence)

    @property
    def price_region_id(self) -> int:
        """The region whose market prices killmails (checked when loaded)."""
        return int(self.price_region)

    @property
    def is_pkce_app(self) -> bool:
        """No client secret: a native application authenticating with PKCE."""
        return not self.client_secret


@dataclass(frozen=True)
class SettingSpec:
    """How one setting is named, documented and checked."""

    key: str
    help: str
    secret: bool = False
    check: Callable[[str, str], str] | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


def _check_database_url(key: str, value: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - keep `--help` fast
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    try:
        url = make_url(value)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise ConfigError(
            f"{key}: not a database URL (like postgresql+psycopg://user@host/db"
            f"): {mask_url(value)!r}"
        ) from exc
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"{key}: unsupported database {url.get_backend_name()!r} (sqlite or postgresql)"
        )
    return value


def _check_http_url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or not _clean_authority(value):
        raise ConfigError(f"{key}: not an http(s) URL: {mask_url(value)!r}")
    return value.rstrip("/")


def _clean_authority(value: str) -> bool:
    """The URL's port, if any, is a number in range, and no ``@`` follows its authority
    (a password with an unencoded ``/``, ``?`` or ``#`` would be read as host and path)."""
    parts = urlsplit(value)
    try:
        _ = parts.port
    except ValueError:
        return False
    return "@" not in value.partition("://")[2].removeprefix(parts.netloc)


def _check_broker_url(key: str, value: str) -> str:
    if value in {"", "database"}:
        return "database"
    parts = urlsplit(value)
    if parts.scheme not in {"amqp", "amqps"} or not parts.hostname or not _clean_authority(value):
        raise ConfigError(
            f"{key}: expected 'database' or an amqp://user:password@host/vhost "
            f"URL (percent-encode '/', '?', '#', '@' in the password), got "
            f"{mask_url(value)!r}"
        )
    return value


def _check_queue_name(key: str, value: str) -> str:
    if not value or len(value) > 200 or not value.isprintable():
        raise ConfigError(f"{key}: a queue name is 1-200 printable characters")
    return value


def _check_cadence(key: str, value: str) -> str:
    try:
        return parse_cadence(value).spec
    except CadenceError as exc:
        raise ConfigError(f"{key}: {exc} (default {DEFAULT_CADENCE!r}, or 'off')") from exc


def _check_source_address(key: str, value: str) -> str:
    import ipaddress  # noqa: PLC0415 - keep `--help` fast

    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError as exc:
        raise ConfigError(
            f"{key}: not an IP address of this host (like 192.0.2.10 or 2001:db8::10): {value!r}"
        ) from exc


def _check_egress(key: str, value: str) -> str:
    name = value.strip()
    if not name or len(name) > 100 or not name.isprintable() or " " in name:
        raise ConfigError(
            f"{key}: an egress name is 1-100 printable characters without "
            f"spaces (like nat-eu-1), got {value!r}"
        )
    return name


def _check_price_region(key: str, value: str) -> str:
    text = value.strip()
    if not text.isdigit() or not REGION_IDS[0] <= int(text) < REGION_IDS[1]:
        raise ConfigError(
            f"{key}: not a region id (like {DEFAULT_PRICE_REGION}, The Forge), got {value!r}"
        )
    return str(int(text))


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("home", "Data directory (SQLite file, generated secret key)."),
    SettingSpec(
        "database_url",
        "SQLAlchemy URL; default a SQLite file in the data directory.",
        secret=True,
        check=_check_database_url,
    ),
    SettingSpec(
        "broker_url",
        "'database' (embedded queue, default) or amqp://user:pass@host/vhost.",
        secret=True,
        check=_check_broker_url,
    ),
    SettingSpec("esi_base_url", "ESI base URL.", check=_check_http_url),
    SettingSpec("sso_base_url", "EVE SSO base URL.", check=_check_http_url),
    SettingSpec("client_id", "SSO application client id."),
    SettingSpec(
        "client_secret", "SSO client secret; absent for a PKCE (native) application.", secret=True
    ),
    SettingSpec(
        "callback_url", "SSO callback URL registered for the application.", check=_check_http_url
    ),
    SettingSpec("contact", "Operator contact (email) sent in the User-Agent, as CCP asks."),
    SettingSpec(
        "secret_key",
        "Fernet key(s) encrypting tokens at rest, comma-separated, newest "
        "first; default generated once into the data directory.",
        secret=True,
    ),
    SettingSpec("queue_name", "Job queue name.", check=_check_queue_name),
    SettingSpec(
        "source_address",
        "Local IP address outgoing ESI and SSO connections leave "
        "from (multi-homed hosts); default the system's choice.",
        check=_check_source_address,
    ),
    SettingSpec(
        "egress",
        "Name of the public address this host's ESI traffic leaves through; "
        "workers with the same egress share ESI's per-IP budget. Default the source "
        "address, else the host name (hosts behind one NAT set the same name).",
        check=_check_egress,
    ),
    SettingSpec(
        "cadence",
        "Adaptive cadence: NEWEST_KILL_AGE=POLL_INTERVAL pairs (default "
        f"{DEFAULT_CADENCE}: newest kill > 7 days hourly, > 30 days every 4 h, > 90 "
        "days or none daily); 'off' polls every list when its cache expires.",
        check=_check_cadence,
    ),
    SettingSpec(
        "price_region",
        f"Region whose daily market history prices killmails (default {DEFAULT_PRICE_REGION}, "
        "The Forge, as zKillboard).",
        check=_check_price_region,
    ),
)
SPEC_BY_KEY = {spec.key: spec for spec in SPECS}


def env_var(key: str) -> str:
    """The environment variable of a setting, for `--help` texts."""
    return SPEC_BY_KEY[key].env


def default_home(environ: Mapping[str, str]) -> Path:
    home = environ.get(env_var("home"))
    return Path(home).expanduser() if home else Path(platformdirs.user_data_dir(APP_NAME))


def config_file_path(environ: Mapping[str, str]) -> Path:
    """Where the config file is read from (it need not exist)."""
    explicit = environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    if environ.get(env_var("home")):
        return default_home(environ) / "config.toml"
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def read_config_file(path: Path, *, required: bool = False) -> dict[str, str]:
    """Parse the TOML config file; a missing file is an empty config unless ``required``.

    ``required`` is for a path the user named (``--config``, ``$KILLSYNC_CONFIG``): a typo
    there must not silently fall back to the defaults.
    """
    try:
        raw = tomllib.loads(_read_small_text(path))
    except FileNotFoundError as exc:
        if required:
            raise ConfigError(f"config file {path} does not exist") from exc
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"config file {path}: cannot read: {reason}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from exc
    values: dict[str, str] = {}
    for key, value in raw.items():
        if key not in SPEC_BY_KEY:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
        if not isinstance(value, str | int):
            raise ConfigError(f"config file {path}: {key} must be a string")
        values[key] = str(value)
    return values


def _read_small_text(path: Path) -> str:
    """A UTF-8 text file of at most :data:`MAX_CONFIG_BYTES` (``--config /dev/zero`` ends)."""
    with path.open("rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_CONFIG_BYTES} bytes")
    return data.decode("utf-8")


def load_settings(
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting from flags, environment, config file and defaults."""
    environ = os.environ if environ is None else environ
    flags = dict(flags or {})
    path = config_file_path(environ)
    from_file = read_config_file(path, required=bool(environ.get(ENV_PREFIX + "CONFIG")))
    layers: tuple[tuple[Source, Mapping[str, str | None], bool], ...] = (
        ("flag", flags, False),
        ("env", environ, True),
        ("file", from_file, False),
    )
    values: dict[str, str] = {}
    sources: dict[str, Source] = {}
    for spec in SPECS:
        sources[spec.key] = "default"
        for source, layer, by_env in layers:
            raw = layer.get(spec.env if by_env else spec.key)
            if raw:
                values[spec.key] = spec.check(spec.env, raw) if spec.check else raw
                sources[spec.key] = source
                break
    home = default_home({env_var("home"): values.pop("home", "")})
    database_url = values.pop("database_url", None) or f"sqlite:///{home / 'killsync.db'}"
    broker = values.pop("broker_url", "database")
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=None if broker == "database" else broker,
        config_file=path,
        sources=sources,
        **values,
    )


def masked(spec: SettingSpec, value: object) -> str:
    """A value as `config show` prints it: secrets hidden, URL passwords hidden."""
    if value is None:
        return "-"
    text = str(value)
    if spec.key.endswith("_url"):  # userinfo passwords and secret query parameters
        return mask_url(text)
    return "***" if spec.secret else text


def settings_report(settings: Settings) -> dict[str, Any]:
    """The `config show` payload: every setting, its value as shown (secrets masked) and
    where it came from."""
    return {
        "config_file": str(settings.config_file),
        "settings": [
            {
                "key": spec.key,
                "env": spec.env,
                "value": masked(spec, getattr(settings, spec.key)),
                "source": settings.sources.get(spec.key, "default"),
            }
            for spec in SPECS
        ],
    }


def secret_keys(
    settings: Settings, *, refuse_new: Callable[[], str | None] = lambda: None
) -> list[str]:
    """Fernet keys, newest first: the setting's, else the key file's (see `killcli.keyfile`).

    A missing key file is created (atomically, mode 0600) unless ``refuse_new`` gives a
    reason not to, e.g. encrypted values in the database that a new key could never open.
    """
    from killcli import keyfile  # noqa: PLC0415 - cryptography costs `--help` time

    if settings.secret_key:
        return keyfile.split_keys(settings.secret_key)
    return keyfile.load_key_file(settings.home / SECRET_KEY_FILE, refuse_new=refuse_new)


def new_token() -> str:
    """A random URL-safe token (state values, job ids)."""
    return secrets.token_urlsafe(24)
