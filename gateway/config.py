"""Gateway configuration: a TOML file whose every key can be overridden by
`GATEWAY_<SECTION>_<KEY>` environment variables (e.g. GATEWAY_SMPP_HOST), the environment
winning; read by pydantic-settings into the models below. An unknown section, key or
GATEWAY_ variable, or a value of the wrong kind, is a ConfigError naming it.

Defaults are the embedded ones: SQLite file, built-in SMSC simulator, API on
127.0.0.1:8080, so `gateway run` works on a fresh machine with no file at all.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class ConfigError(ValueError):
    pass


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode reads TOML's `true` as 1: no operator means that by a port or a rate.
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def _bool_or_text(value: Any) -> Any:
    # ... and `1` as true: a switch is true/false in TOML, or true/yes/on/1 (false/no/off/0) as text.
    if not isinstance(value, bool | str):
        raise ValueError("not a boolean")
    return value


def _price_pairs(value: Any) -> Any:
    """A price table as the environment spells it: "81=12.5,1=8,=10" (prefix=price pairs)."""
    if not isinstance(value, str):
        return value
    pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError("not prefix=price pairs")
    return {k.strip(): v for k, v in pairs}


Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
Bool = Annotated[bool, BeforeValidator(_bool_or_text)]
# NoDecode: pydantic-settings would take a table from the environment for JSON.
Prices = Annotated[dict[str, Float], NoDecode, BeforeValidator(_price_pairs)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: Int = 8080
    # Base of URLs we hand out (message `url`, tracked links); defaults to http://host:port.
    public_base_url: str = ""
    max_body_bytes: Int = 64 * 1024
    # Open connections at once; over it a new one is closed at once (`gateway run` lowers it to
    # fit the open-files limit, with voice.fastagi_max_connections).
    max_connections: Int = 1000
    # Seconds a connection gets to send a complete request head, from when it opens or from the
    # previous response (so also how long an idle keep-alive connection stays open).
    header_timeout: Float = 5.0


class DataConfig(_Section):
    # Where the gateway keeps its files: the default SQLite database, the demo account and the
    # default voice data. A relative path is resolved once at start, against the directory the
    # command runs in, and `gateway run` prints the result.
    dir: str = "var"


class DatabaseConfig(_Section):
    url: str = ""  # "" = SQLite file gateway.sqlite3 in data.dir
    pool_size: Int = 10
    migrate_on_start: Bool = True


DATA_CODINGS = (0, 1, 3)  # SMSC default alphabet (GSM 03.38), IA5 (ASCII), Latin-1


class ConnectorSettings(_Section):
    """What one SMSC connector needs: the [smpp] section (the `default` connector when no
    [[smpp.connectors]] are listed), and each listed connector, which takes from [smpp] every
    key it leaves out."""

    host: str = "127.0.0.1"
    port: Int = 2775
    system_id: str = "gateway"
    password: str = "secret"
    system_type: str = ""
    # transceiver: every bind sends and receives; transmitter_receiver: `binds` transmitters
    # plus one receiver bind for MO and receipts.
    bind_mode: Literal["transceiver", "transmitter_receiver"] = "transceiver"
    binds: Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=64)] = 1
    window: Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1)] = 10  # outstanding submit_sm per bind
    # submit_sm per second over all binds of the connector, and with PostgreSQL over every node
    # too; 0 = no cap (the SMSC's throttling answers are still obeyed).
    max_submits_per_second: Annotated[int, BeforeValidator(_not_a_bool), Field(ge=0)] = 0
    enquire_link_interval: Float = 30.0
    response_timeout: Float = 10.0
    # deliver_sm being handled (not yet answered) at once per bind; at the bound the socket is not
    # read until one is answered, so the SMSC's own window holds the rest back.
    max_inbound_in_flight: Int = 100
    tls: Bool = False
    tls_ca_file: str = ""  # CA bundle the SMSC's certificate must chain to; "" = the system's
    tls_cert_file: str = ""  # client certificate (PEM), for an SMSC that asks for one
    tls_key_file: str = ""  # its private key; "" = inside tls_cert_file
    # TON/NPI of the addresses we send: an alphanumeric sender, a numeric one, the destination.
    alnum_source_ton: Int = 5
    alnum_source_npi: Int = 0
    numeric_source_ton: Int = 1
    numeric_source_npi: Int = 1
    dest_ton: Int = 1
    dest_npi: Int = 1
    # data_coding of text in the GSM alphabet: 0 = SMSC default alphabet (GSM 03.38 septets),
    # 1 = IA5 (ASCII), 3 = Latin-1, for an SMSC whose default alphabet is not GSM. A text the
    # chosen charset cannot hold goes as GSM (0); other text as UCS-2 (8) whatever this says.
    data_coding: Int = 0

    @field_validator("data_coding")
    @classmethod
    def _known_data_coding(cls, value: int) -> int:
        if value not in DATA_CODINGS:
            raise PydanticCustomError("data_coding", "should be one of 0, 1 or 3")
        return value


class ConnectorConfig(ConnectorSettings):
    """One [[smpp.connectors]] entry."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$")]


class SmppConfig(ConnectorSettings):
    # Any number of SMSCs; none = this section is the one connector, `default`. TOML only
    # (an array of tables has no environment variable).
    connectors: list[ConnectorConfig] = []
    # MT routing rules (docs/smpp.md); "" = every message goes to the first connector. The file
    # is read again when its content changes, checked every routes_check_seconds. A relative
    # path is resolved once at start, like data.dir.
    routes_file: str = ""
    routes_check_seconds: Annotated[float, BeforeValidator(_not_a_bool), Field(gt=0)] = 2.0
    # Each node writes its binds' state to the database (the console's SMSC binds page, every
    # node's) when a bind goes up or down and at least this often; a node silent for three
    # times this is shown as not reporting.
    bind_report_seconds: Annotated[float, BeforeValidator(_not_a_bool), Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _unique_ids(self) -> SmppConfig:
        ids = [c.id for c in self.connectors]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"connector id {', '.join(twice)} is given more than once")
        return self


class SmppServerConfig(_Section):
    # A listener where customers' own SMPP clients (ESMEs) bind with the credentials
    # `gateway accounts smpp-credentials SID` issues (docs/smpp.md); off by default.
    enabled: Bool = False
    host: str = "127.0.0.1"
    port: Int = 2777
    system_id: str = "gateway"  # ours, in bind responses
    # TLS on the listener: the certificate chain and its key (PEM).
    tls: Bool = False
    tls_cert_file: str = ""
    tls_key_file: str = ""
    max_connections: Int = 100
    bind_timeout: Float = 10.0  # seconds from connect to a successful bind
    idle_timeout: Float = 60.0  # no PDU for half of it: enquire_link; for all of it: closed
    window: Int = 10  # per session: submit_sm being queued, and deliver_sm unanswered
    # Per account, across all its sessions on this node: submit_sm being queued at once (so
    # an account with many sessions has no more rows than this ahead of another's), and binds.
    account_window: Int = 10
    account_binds: Int = 10
    response_timeout: Float = 10.0  # for a deliver_sm_resp; then the receipt or MO waits again
    max_pdu_bytes: Int = 16384  # a larger command_length closes the connection unread
    poll_interval: Float = 1.0  # how often a bound receiver looks for receipts and MO
    bind_failures_per_minute: Int = 5  # per peer address; past it binds from it are refused
    parts_window_seconds: Float = 300.0  # a long message missing parts after this goes out as it is


class SimulatorConfig(_Section):
    # Start the built-in SMSC simulator in-process (embedded default); off in production.
    enabled: Bool = True
    dlr_delay: Float = 0.05
    # Destinations starting with these digits get UNDELIV receipts (FAIL), so a demo can show
    # one: +81 90 9999 xxxx is a valid Japanese mobile range the API accepts. "" = none fail.
    fail_prefix: str = "81909999"
    # `gateway simulate mo` injects MO through this port, always on 127.0.0.1; 0 = no control port.
    control_port: Int = 2776


class DispatcherConfig(_Section):
    batch_size: Int = 200
    poll_interval: Float = 0.5
    # A claimed row not finished within this many seconds (a node died) is claimed again.
    lease_seconds: Float = 60.0
    node_id: str = ""
    workers: Int = 3  # batches in flight at once; pipelines claim/submit/record
    # On shutdown, how long in-flight submits get to record their outcome.
    shutdown_seconds: Float = 15.0


class WebhookConfig(_Section):
    timeout: Float = 10.0
    first_retry_seconds: Float = 5.0
    give_up_after_seconds: Float = 23 * 3600.0
    # Deliveries run in `loops` independent loops of up to `batch_size` POSTs in flight; a POST
    # still running 1 s into its round keeps its slot while the loop goes on, so a receiver that
    # hangs until `timeout` does not hold up the deliveries claimed with it.
    batch_size: Int = 10
    loops: Int = 4
    # Fair sharing of those loops x batch_size slots: POSTs one node has in flight to one
    # receiver (host:port) and for one account. A receiver hanging until `timeout` then holds
    # at most these many, and the other slots keep serving everyone else. The host cap is the
    # connections the HTTP client opens to one host anyway (20), so a healthy receiver keeps
    # its throughput (at 10, callbacks to one receiver drained 3x slower under load); the
    # account cap leaves an account's other receivers some slots when one of them is dead.
    max_in_flight_per_host: Int = 20
    max_in_flight_per_account: Int = 30
    poll_interval: Float = 1.0
    # A delivery claimed by a node that died is retried by any node after this long (at least
    # three times the timeout, so a slow receiver is not sent the same POST twice).
    lease_seconds: Float = 60.0


class OutboundHttpConfig(_Section):
    # Where customer URLs (callbacks, webhooks, action_url, media) may point. Link-local, cloud
    # metadata and other special addresses are always refused; private ranges and loopback only
    # when these say so (a single-tenant or demo install whose receivers run on this host).
    allow_private_addresses: Bool = False
    allow_loopback: Bool = False


class SmsConfig(_Section):
    max_parts: Int = 10
    # Price per part by destination prefix (digits after +); the longest prefix wins.
    prices: Prices = {"": 10.0}
    retention_days: Int = 90
    list_limit: Int = 30000
    # Answers to the opt-out keywords (STOP/START/HELP); empty = no answer.
    optout_reply: str = (
        "You have been unsubscribed and will receive no more messages. Reply START to resubscribe."
    )
    optin_reply: str = "You have been resubscribed. Reply STOP to unsubscribe."
    help_reply: str = "Reply STOP to unsubscribe, START to resubscribe."
    # Parts of a concatenated MO older than this without their siblings are delivered as they are.
    mo_reassembly_seconds: Float = 300.0


class VoiceConfig(_Section):
    fastagi_enabled: Bool = True
    fastagi_host: str = "127.0.0.1"
    fastagi_port: Int = 4573
    # Addresses/CIDRs FastAGI accepts connections from (comma-separated): the Asterisk servers.
    fastagi_allowed_peers: str = "127.0.0.1/8,::1"
    # Set: every AGI URL must carry it, agi://host:4573/din?key=<secret> (see extensions.conf).
    fastagi_secret: str = ""
    fastagi_max_connections: Int = 1000  # one per call in progress
    # Media cache, TTS cache, voicemail store (Asterisk must read it); "" = <data.dir>/voice.
    data_dir: str = ""
    # Asterisk sees data_dir under this path (when it runs elsewhere and mounts it); "" = same path.
    asterisk_data_dir: str = ""
    action_url_timeout: Float = 5.0
    action_url_max_bytes: Int = 16 * 1024
    media_max_bytes: Int = 10 * 1024 * 1024
    media_timeout: Float = 20.0  # one download of a playback file, redirects included
    trunk: str = "trunk"  # PJSIP endpoint used by transfer: Dial(PJSIP/<number>@<trunk>)
    dial_timeout: Int = 30
    # Comma-separated E.164 prefixes transfers may reach (toll-fraud guard); "" = none allowed.
    transfer_allow_prefixes: str = "+81"
    # phonenumbers number types no transfer or outbound call may reach, whatever the prefix
    # (why these: gateway/services/dialing.py).
    deny_number_types: str = "PREMIUM_RATE,SHARED_COST,UAN,PERSONAL_NUMBER,PAGER,UNKNOWN"
    voicemail_max_seconds: Int = 120
    voicemail_silence_seconds: Int = 5
    # Scripts fetched on one call, the action_url's included: a menu that loops (gather whose
    # action answers the same menu) ends with the fallback after this many.
    max_fetches_per_call: Int = 20
    # A call still IN_PROGRESS this long after it started, and not handled by a live process of
    # this node, is ended FAILED with an unknown duration (its node died mid-call).
    max_call_seconds: Float = 4 * 3600.0
    # Call records, their voicemails and recordings (rows and WAV files) are deleted this many
    # days after the call ended; 0 keeps them forever.
    retention_days: Int = 90
    fallback_lang: str = "en"
    fallback_text: str = "Sorry, this number cannot take your call right now. Goodbye."
    # Outbound calls (POST /voice/simple/playbacks/) are originated over Asterisk's AMI.
    ami_enabled: Bool = False
    ami_host: str = "127.0.0.1"
    ami_port: Int = 5038
    ami_username: str = "gateway"
    ami_secret: str = ""
    outbound_ring_timeout: Float = 30.0
    # Price per started minute of an outbound call, by recipient prefix (longest wins). Required
    # with ami_enabled: empty or all-zero refuses to start (the calls would be free to tenants).
    outbound_prices: Prices = {}
    # Comma-separated E.164 prefixes outbound calls may reach: the home market only, so premium
    # international destinations need the operator's decision; "" = none. Per account:
    # `gateway accounts set <sid> --outbound-allow-prefixes` (also replaces transfer_allow_prefixes).
    outbound_allow_prefixes: str = "+81"
    # Per account (overridable with `gateway accounts set`), across every node: outbound calls
    # not ended yet, and outbound calls placed in the last 60 s. Over either: 429.
    outbound_max_concurrent: Int = 10
    outbound_max_per_minute: Int = 30


class MetricsConfig(_Section):
    enabled: Bool = True  # GET /metrics (Prometheus text format)
    token: str = ""  # set: /metrics needs "Authorization: Bearer <token>"


class RateLimitConfig(_Section):
    # Requests per second per account, per gateway node (in-memory buckets); 0 = off.
    rate: Float = 0.0
    burst: Int = 50
    # Failed authentications per client address (peer address, IPv6 by /64) before it gets
    # 429, and their refill per second; 0 per second turns the throttle off.
    auth_failures_burst: Int = 20
    auth_failures_per_second: Float = 1.0


class LinksConfig(_Section):
    # Unknown /l/<code> lookups each client address may make: `miss_burst` at once, refilled at
    # `miss_per_minute` (0 = no limit); then 429. Per node, for up to `max_clients` addresses.
    miss_per_minute: Float = 10.0
    miss_burst: Int = 20
    max_clients: Int = 10_000


class LogConfig(_Section):
    level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    # text: `time LEVEL logger: message key=value ...`; json: one object per line for log shippers.
    format: str = "text"
    access: Bool = False  # one line per HTTP request (method, path, status, ms, request_id, account)


class ConsoleConfig(_Section):
    # The web console at /console/ (customers sign in with SID and auth token; operators with
    # the credentials below). Off: every /console/ path is a 404 and no session is read.
    enabled: Bool = True
    # A console session ends after this many seconds without a page view, and at the latest
    # session_max_seconds after sign-in (signing out, or rotating the token, ends it at once).
    session_idle_seconds: Annotated[float, BeforeValidator(_not_a_bool), Field(gt=0)] = 1800.0
    session_max_seconds: Annotated[float, BeforeValidator(_not_a_bool), Field(gt=0)] = 12 * 3600.0
    operator_username: str = "operator"
    # scrypt hash from `gateway console hash-password`; "" = no operator sign-in.
    operator_password_hash: str = ""


class Config(BaseSettings):
    # TOML section names match exactly: [SMPP] is no section.
    model_config = SettingsConfigDict(extra="forbid", case_sensitive=True)

    http: HttpConfig = Field(default_factory=HttpConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    smpp: SmppConfig = Field(default_factory=SmppConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    smpp_server: SmppServerConfig = Field(default_factory=SmppServerConfig)
    dispatcher: DispatcherConfig = Field(default_factory=DispatcherConfig)
    webhooks: WebhookConfig = Field(default_factory=WebhookConfig)
    outbound_http: OutboundHttpConfig = Field(default_factory=OutboundHttpConfig)
    sms: SmsConfig = Field(default_factory=SmsConfig)
    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    links: LinksConfig = Field(default_factory=LinksConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)

    @property
    def public_base_url(self) -> str:
        base = self.http.public_base_url or f"http://{self.http.host}:{self.http.port}"
        return base.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, *_: Any, **__: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Config() is the embedded defaults whatever the environment (tests and tools start from
        # it and adjust); load_config() adds the file and the environment.
        return (init_settings,)


class _Environment(EnvSettingsSource):
    """The GATEWAY_<SECTION>_<KEY> variables of a given mapping rather than of os.environ."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._given = env
        # Max split 1: the section is matched by its whole name, the rest is the key, so
        # GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK is outbound_http.allow_loopback.
        super().__init__(
            Config,
            case_sensitive=False,
            env_prefix="GATEWAY_",
            env_nested_delimiter="_",
            env_nested_max_split=1,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._given.items()}


def env_name(setting: str) -> str:
    """The environment variable of a setting: "http.port" -> "GATEWAY_HTTP_PORT"."""
    return "GATEWAY_" + setting.replace(".", "_").upper()


# GATEWAY_ variables that are not settings: the path of the TOML file.
NOT_SETTINGS = frozenset({"GATEWAY_CONFIG"})
# The one key with no variable: an array of tables.
CONNECTORS_VARIABLE = "GATEWAY_SMPP_CONNECTORS"


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = path or env.get("GATEWAY_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    settings = {env_name(key) for key, _, _ in config_keys()}
    # Matched without the prefix they share, else every name would look close to every other.
    keys = [s.removeprefix("GATEWAY_") for s in settings]
    problems = [
        f"unknown environment variable {name}{_closest(name.removeprefix('GATEWAY_'), keys, 'GATEWAY_{}')}"
        if name != CONNECTORS_VARIABLE
        else f"{name} is no setting: [[smpp.connectors]] are given in the configuration file"
        for name in sorted(env)
        if name.startswith("GATEWAY_") and name not in settings | NOT_SETTINGS
    ]
    given = {name: value for name, value in env.items() if name in settings}
    try:
        # mypy knows the fields' __init__ (dataclass_transform), not BaseSettings' _build_sources.
        sources = (_Environment(given), InitSettingsSource(Config, raw))  # the first wins
        config = Config(_build_sources=(sources, {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError("\n".join(problems + [_problem(e, given) for e in exc.errors()])) from None
    if problems:
        raise ConfigError("\n".join(problems))
    _resolve_paths(config)
    return config


def _closest(word: str, valid: Iterable[str], form: str) -> str:
    """ "; did you mean ...?" for the valid name nearest a misspelt one, or ""."""
    match = difflib.get_close_matches(word, list(valid), n=1)
    return f"; did you mean {form.format(match[0])}?" if match else ""


def _problem(error: ErrorDetails, env: Mapping[str, str]) -> str:
    """One pydantic error as the operator reads it: the key, or its variable when the value came
    from the environment, what it should be and what it was."""
    section, *rest = (str(part) for part in error["loc"])
    if not rest:
        if error["type"] == "extra_forbidden":
            return f"unknown config section [{section}]{_closest(section, Config.model_fields, '[{}]')}"
        if error["type"] == "value_error":
            return f"[{section}]: {_message(error)}"
        return f"[{section}] must be a table"
    key, *entry = rest
    if section == "smpp" and key == "connectors" and entry:
        return _connector_problem(error, entry)
    fields = type(getattr(Config(), section)).model_fields
    if error["type"] == "extra_forbidden":
        return f"unknown config key {section}.{key}{_closest(key, fields, section + '.{}')}"
    name = f"{section}.{key}"
    where = env_name(name) if env_name(name) in env else name
    if entry:
        return f"{'.'.join([where, *entry])}: expected a number, got {error['input']!r}"
    return f"{where}: {_expected(fields[key].annotation, error)}, got {error['input']!r}"


# Errors about the kind of a value, not its range or form (value_error: our BeforeValidators).
_KIND_ERRORS = frozenset(
    {"int_parsing", "int_type", "int_from_float", "float_parsing", "float_type", "bool_parsing"}
    | {"bool_type", "string_type", "dict_type", "value_error"}
)
_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _expected(annotation: Any, error: ErrorDetails) -> str:
    """ "expected an integer" for a value of the wrong kind, else what pydantic says is wrong."""
    if error["type"] in _KIND_ERRORS:
        return f"expected {_KINDS.get(annotation, 'prefix=price pairs')}"
    return _message(error)


def _message(error: ErrorDetails) -> str:
    return str(error["msg"]).removeprefix("Value error, ")


def _connector_problem(error: ErrorDetails, entry: list[str]) -> str:
    """An error inside [[smpp.connectors]], named by the entry's position."""
    index, *rest = entry
    where = f"smpp.connectors[{index}]"
    if not rest:
        return f"{where} must be a table" if error["type"] == "model_type" else f"{where}: {_message(error)}"
    key = rest[0]
    fields = ConnectorConfig.model_fields
    if error["type"] == "extra_forbidden":
        return f"unknown config key {where}.{key}{_closest(key, fields, where + '.{}')}"
    if error["type"] == "missing":
        return f"{where}.{key} is required"
    return f"{where}.{key}: {_expected(fields[key].annotation, error)}, got {error['input']!r}"


def _resolve_paths(config: Config) -> None:
    """Fix the data directory once, so that no path depends on where a later command runs."""
    data = Path(os.path.abspath(os.path.expanduser(config.data.dir)))
    config.data.dir = str(data)
    if not config.database.url:
        config.database.url = f"sqlite+aiosqlite:///{data / 'gateway.sqlite3'}"
    if not config.voice.data_dir:
        config.voice.data_dir = str(data / "voice")
    if config.smpp.routes_file:
        config.smpp.routes_file = os.path.abspath(os.path.expanduser(config.smpp.routes_file))


def config_keys() -> list[tuple[str, str, Any]]:
    """(TOML key, env var, default) for every setting: the README reference is generated from this.
    smpp.connectors is not among them: an array of tables is given in the file only."""
    return [
        (f"{name}.{key}", env_name(f"{name}.{key}"), value)
        for name, section in Config()
        for key, value in section
        if not (name == "smpp" and key == "connectors")
    ]


def smsc_connectors(smpp: SmppConfig) -> list[ConnectorConfig]:
    """The connectors in force, in order: those listed, each key one leaves out taken from
    [smpp]; none listed, [smpp] itself as the connector `default`."""
    shared = {key: getattr(smpp, key) for key in ConnectorSettings.model_fields}
    if not smpp.connectors:
        return [ConnectorConfig(id="default", **shared)]
    return [
        c.model_copy(update={k: v for k, v in shared.items() if k not in c.model_fields_set})
        for c in smpp.connectors
    ]


# Settings `gateway config show` never prints: credentials, the FastAGI key, the metrics token,
# the operator's password hash.
SECRET_KEYS = frozenset(
    {
        "smpp.password",
        "voice.fastagi_secret",
        "voice.ami_secret",
        "metrics.token",
        "console.operator_password_hash",
    }
)
MASK = "********"


def effective(config: Config) -> dict[str, dict[str, Any]]:
    """The configuration in force, section by section, with every secret masked (a password in
    database.url and every connector's password too): what `gateway config show` prints."""
    out = config.model_dump()
    for key in SECRET_KEYS:
        section, name = key.split(".")
        if out[section][name]:
            out[section][name] = MASK
    for connector in out["smpp"]["connectors"]:
        if connector["password"]:
            connector["password"] = MASK
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
