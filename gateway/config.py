"""Gateway configuration: a TOML file whose every key can be overridden by
`GATEWAY_<SECTION>_<KEY>` environment variables (e.g. GATEWAY_SMPP_HOST).

Defaults are the embedded ones: SQLite file, built-in SMSC simulator, API on
127.0.0.1:8080, so `gateway run` works on a fresh machine with no file at all.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class ConfigError(ValueError):
    pass


@dataclass
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Base of URLs we hand out (message `url`, tracked links); defaults to http://host:port.
    public_base_url: str = ""
    max_body_bytes: int = 64 * 1024
    # Open connections at once; over it a new one is closed at once (`gateway run` lowers it to
    # fit the open-files limit, with voice.fastagi_max_connections).
    max_connections: int = 1000
    # Seconds a connection gets to send a complete request head, from when it opens or from the
    # previous response (so also how long an idle keep-alive connection stays open).
    header_timeout: float = 5.0


@dataclass
class DataConfig:
    # Where the gateway keeps its files: the default SQLite database, the demo account and the
    # default voice data. A relative path is resolved once at start, against the directory the
    # command runs in, and `gateway run` prints the result.
    dir: str = "var"


@dataclass
class DatabaseConfig:
    url: str = ""  # "" = SQLite file gateway.sqlite3 in data.dir
    pool_size: int = 10
    migrate_on_start: bool = True


@dataclass
class SmppConfig:
    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = "gateway"
    password: str = "secret"
    system_type: str = ""
    window: int = 10
    enquire_link_interval: float = 30.0
    response_timeout: float = 10.0
    # deliver_sm being handled (not yet answered) at once; at the bound the socket is not read
    # until one is answered, so the SMSC's own window holds the rest back.
    max_inbound_in_flight: int = 100


@dataclass
class SimulatorConfig:
    # Start the built-in SMSC simulator in-process (embedded default); off in production.
    enabled: bool = True
    dlr_delay: float = 0.05
    # Destinations starting with these digits get UNDELIV receipts (FAIL), so a demo can show
    # one: +81 90 9999 xxxx is a valid Japanese mobile range the API accepts. "" = none fail.
    fail_prefix: str = "81909999"
    # `gateway simulate mo` injects MO through this port, always on 127.0.0.1; 0 = no control port.
    control_port: int = 2776


@dataclass
class DispatcherConfig:
    batch_size: int = 200
    poll_interval: float = 0.5
    # A claimed row not finished within this many seconds (a node died) is claimed again.
    lease_seconds: float = 60.0
    node_id: str = ""
    workers: int = 3  # batches in flight at once; pipelines claim/submit/record
    # On shutdown, how long in-flight submits get to record their outcome.
    shutdown_seconds: float = 15.0


@dataclass
class WebhookConfig:
    timeout: float = 10.0
    first_retry_seconds: float = 5.0
    give_up_after_seconds: float = 23 * 3600.0
    # Deliveries run in `loops` independent loops of up to `batch_size` POSTs in flight; a POST
    # still running 1 s into its round keeps its slot while the loop goes on, so a receiver that
    # hangs until `timeout` does not hold up the deliveries claimed with it.
    batch_size: int = 10
    loops: int = 4
    # Fair sharing of those loops x batch_size slots: POSTs one node has in flight to one
    # receiver (host:port) and for one account. A receiver hanging until `timeout` then holds
    # at most these many, and the other slots keep serving everyone else. The host cap is the
    # connections the HTTP client opens to one host anyway (20), so a healthy receiver keeps
    # its throughput (at 10, callbacks to one receiver drained 3x slower under load); the
    # account cap leaves an account's other receivers some slots when one of them is dead.
    max_in_flight_per_host: int = 20
    max_in_flight_per_account: int = 30
    poll_interval: float = 1.0
    # A delivery claimed by a node that died is retried by any node after this long (at least
    # three times the timeout, so a slow receiver is not sent the same POST twice).
    lease_seconds: float = 60.0


@dataclass
class OutboundHttpConfig:
    # Where customer URLs (callbacks, webhooks, action_url, media) may point. Link-local, cloud
    # metadata and other special addresses are always refused; private ranges and loopback only
    # when these say so (a single-tenant or demo install whose receivers run on this host).
    allow_private_addresses: bool = False
    allow_loopback: bool = False


@dataclass
class SmsConfig:
    max_parts: int = 10
    # Price per part by destination prefix (digits after +); the longest prefix wins.
    prices: dict[str, float] = field(default_factory=lambda: {"": 10.0})
    retention_days: int = 90
    list_limit: int = 30000
    # Answers to the opt-out keywords (STOP/START/HELP); empty = no answer.
    optout_reply: str = (
        "You have been unsubscribed and will receive no more messages. Reply START to resubscribe."
    )
    optin_reply: str = "You have been resubscribed. Reply STOP to unsubscribe."
    help_reply: str = "Reply STOP to unsubscribe, START to resubscribe."
    # Parts of a concatenated MO older than this without their siblings are delivered as they are.
    mo_reassembly_seconds: float = 300.0


@dataclass
class VoiceConfig:
    fastagi_enabled: bool = True
    fastagi_host: str = "127.0.0.1"
    fastagi_port: int = 4573
    # Addresses/CIDRs FastAGI accepts connections from (comma-separated): the Asterisk servers.
    fastagi_allowed_peers: str = "127.0.0.1/8,::1"
    # Set: every AGI URL must carry it, agi://host:4573/din?key=<secret> (see extensions.conf).
    fastagi_secret: str = ""
    fastagi_max_connections: int = 1000  # one per call in progress
    # Media cache, TTS cache, voicemail store (Asterisk must read it); "" = <data.dir>/voice.
    data_dir: str = ""
    # Asterisk sees data_dir under this path (when it runs elsewhere and mounts it); "" = same path.
    asterisk_data_dir: str = ""
    action_url_timeout: float = 5.0
    action_url_max_bytes: int = 16 * 1024
    media_max_bytes: int = 10 * 1024 * 1024
    media_timeout: float = 20.0  # one download of a playback file, redirects included
    trunk: str = "trunk"  # PJSIP endpoint used by transfer: Dial(PJSIP/<number>@<trunk>)
    dial_timeout: int = 30
    # Comma-separated E.164 prefixes transfers may reach (toll-fraud guard); "" = none allowed.
    transfer_allow_prefixes: str = "+81"
    # phonenumbers number types no transfer or outbound call may reach, whatever the prefix
    # (why these: gateway/services/dialing.py).
    deny_number_types: str = "PREMIUM_RATE,SHARED_COST,UAN,PERSONAL_NUMBER,PAGER,UNKNOWN"
    voicemail_max_seconds: int = 120
    voicemail_silence_seconds: int = 5
    # A call still IN_PROGRESS this long after it started, and not handled by a live process of
    # this node, is ended FAILED with an unknown duration (its node died mid-call).
    max_call_seconds: float = 4 * 3600.0
    fallback_lang: str = "en"
    fallback_text: str = "Sorry, this number cannot take your call right now. Goodbye."
    # Outbound calls (POST /voice/simple/playbacks/) are originated over Asterisk's AMI.
    ami_enabled: bool = False
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = "gateway"
    ami_secret: str = ""
    outbound_ring_timeout: float = 30.0
    # Price per started minute of an outbound call, by recipient prefix (longest wins). Required
    # with ami_enabled: empty or all-zero refuses to start (the calls would be free to tenants).
    outbound_prices: dict[str, float] = field(default_factory=dict)
    # Comma-separated E.164 prefixes outbound calls may reach: the home market only, so premium
    # international destinations need the operator's decision; "" = none. Per account:
    # `gateway accounts set <sid> --outbound-allow-prefixes` (also replaces transfer_allow_prefixes).
    outbound_allow_prefixes: str = "+81"
    # Per account (overridable with `gateway accounts set`), across every node: outbound calls
    # not ended yet, and outbound calls placed in the last 60 s. Over either: 429.
    outbound_max_concurrent: int = 10
    outbound_max_per_minute: int = 30


@dataclass
class MetricsConfig:
    enabled: bool = True  # GET /metrics (Prometheus text format)
    token: str = ""  # set: /metrics needs "Authorization: Bearer <token>"


@dataclass
class RateLimitConfig:
    # Requests per second per account, per gateway node (in-memory buckets); 0 = off.
    rate: float = 0.0
    burst: int = 50
    # Failed authentications per client address (peer address, IPv6 by /64) before it gets
    # 429, and their refill per second; 0 per second turns the throttle off.
    auth_failures_burst: int = 20
    auth_failures_per_second: float = 1.0


@dataclass
class LinksConfig:
    # Unknown /l/<code> lookups each client address may make: `miss_burst` at once, refilled at
    # `miss_per_minute` (0 = no limit); then 429. Per node, for up to `max_clients` addresses.
    miss_per_minute: float = 10.0
    miss_burst: int = 20
    max_clients: int = 10_000


@dataclass
class LogConfig:
    level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    # text: `time LEVEL logger: message key=value ...`; json: one object per line for log shippers.
    format: str = "text"
    access: bool = False  # one line per HTTP request (method, path, status, ms, request_id, account)


@dataclass
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    data: DataConfig = field(default_factory=DataConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    smpp: SmppConfig = field(default_factory=SmppConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    outbound_http: OutboundHttpConfig = field(default_factory=OutboundHttpConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def public_base_url(self) -> str:
        base = self.http.public_base_url or f"http://{self.http.host}:{self.http.port}"
        return base.rstrip("/")


def _coerce(value: Any, typ: Any, where: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected a boolean, got {value!r}")
    if typ is int or typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if typing.get_origin(typ) is dict:
        if isinstance(value, str):  # from the environment: "81=12.5,1=8"
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(f"{where}: expected prefix=price pairs, got {value!r}")
            value = {k.strip(): v for k, v in pairs}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {str(k): _coerce(v, float, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported type {typ!r}")


def env_name(setting: str) -> str:
    """The environment variable of a setting: "http.port" -> "GATEWAY_HTTP_PORT"."""
    return "GATEWAY_" + setting.replace(".", "_").upper()


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = path or env.get("GATEWAY_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    config = Config()
    sections = _section_types(Config)
    for name, data in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown config section [{name}]{_closest(name, sections, '[{}]')}")
        if not isinstance(data, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        section = getattr(config, name)
        hints = _section_types(type(section))
        for key, value in data.items():
            if key not in hints:
                raise ConfigError(f"unknown config key {name}.{key}{_closest(key, hints, name + '.{}')}")
            setattr(section, key, _coerce(value, hints[key], f"{name}.{key}"))
    for name in sections:
        section = getattr(config, name)
        for key, typ in _section_types(type(section)).items():
            env_key = env_name(f"{name}.{key}")
            if env_key in env:
                setattr(section, key, _coerce(env[env_key], typ, env_key))
    _resolve_paths(config)
    return config


def _closest(word: str, valid: typing.Iterable[str], form: str) -> str:
    """ "; did you mean ...?" for the valid name nearest a misspelt one, or ""."""
    match = difflib.get_close_matches(word, list(valid), n=1)
    return f"; did you mean {form.format(match[0])}?" if match else ""


def _resolve_paths(config: Config) -> None:
    """Fix the data directory once, so that no path depends on where a later command runs."""
    data = Path(os.path.abspath(os.path.expanduser(config.data.dir)))
    config.data.dir = str(data)
    if not config.database.url:
        config.database.url = f"sqlite+aiosqlite:///{data / 'gateway.sqlite3'}"
    if not config.voice.data_dir:
        config.voice.data_dir = str(data / "voice")


def config_keys() -> list[tuple[str, str, Any]]:
    """(TOML key, env var, default) for every setting: the README reference is generated from this."""
    out = []
    defaults = Config()
    for name in _section_types(Config):
        section = getattr(defaults, name)
        for f in dataclasses.fields(section):
            key = f"{name}.{f.name}"
            out.append((key, env_name(key), getattr(section, f.name)))
    return out


# Settings `gateway config show` never prints: credentials, the FastAGI key, the metrics token.
SECRET_KEYS = frozenset({"smpp.password", "voice.fastagi_secret", "voice.ami_secret", "metrics.token"})
MASK = "********"


def effective(config: Config) -> dict[str, dict[str, Any]]:
    """The configuration in force, section by section, with every secret masked (a password in
    database.url too): what `gateway config show` prints."""
    out = {name: dataclasses.asdict(getattr(config, name)) for name in _section_types(Config)}
    for key in SECRET_KEYS:
        section, name = key.split(".")
        if out[section][name]:
            out[section][name] = MASK
    out["database"]["url"] = _without_password(config.database.url)
    return out


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:{MASK}@{f'[{host}]' if ':' in host else host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
