"""Settings for every process of llmops-streams, read from ``LLMOPS_*`` environment variables.

Why this exists:
    One place reads the environment, so that a setting has one name, one default and one
    validation everywhere (CLI, workers, tests, benchmarks). Secrets are ``SecretStr`` so that
    they print as ``**********`` in logs, reprs and tracebacks.

Usage:
    >>> from streams.settings import Settings
    >>> settings = Settings()                     # reads LLMOPS_* and .env
    >>> settings.bootstrap_servers
    '127.0.0.1:9092'
    >>> Settings(namespace="replay1").namespace   # explicit values win over the environment
    'replay1'

Notes:
    ``extra="forbid"`` makes a misspelt keyword argument an error. A ``.env`` file is often
    shared with other tools: its keys outside the ``LLMOPS_`` prefix are ignored, and an unknown
    ``LLMOPS_*`` key is ignored with a warning that names it (never its value). A value that does
    not validate is reported by setting name and error kind only (``hide_input_in_errors``,
    :func:`describe_settings_error`): a secret pasted into the wrong variable is never echoed.
    No other module reads
    ``os.environ`` for configuration: that is why this module is long (about 490 lines, one field
    and one validator per setting) and stays one module. Of the standard ``OTEL_*`` variables, those that
    decide whether and how spans leave the process are read and checked here (``OTEL_SDK_DISABLED``,
    ``OTEL_TRACES_EXPORTER``, the OTLP endpoints and protocol), so a bad value is refused by its name;
    the rest (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER(_ARG)``,
    ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS``...) are read by the OpenTelemetry SDK itself.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from streams.runtime import DEFAULT_ARROW_POOL, DEFAULT_MMAP_THRESHOLD

PII_KINDS = ("email", "phone", "card", "ip", "secret")
# A namespace prefixes topics (`<ns>.docs.raw`), consumer groups (`llmops-<ns>-...`) and a folder
# (`<data_dir>/replays/<ns>`): no dots, slashes or underscores, so one name never reaches another's.
NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
# The group segment of the live (empty) namespace: `llmops-live-...` are live traffic's groups.
LIVE_GROUP_SEGMENT = "live"


def namespace_problem(name: str) -> str | None:
    """Why ``name`` cannot be a namespace (never quoting it), or None; ``""`` is the live one.

    :func:`streams.kafka.topics.check_namespace` adds the rules about topic and agent names
    for namespaces that a replay creates and drops.
    """
    if not name:
        return None
    if not NAMESPACE_PATTERN.match(name):
        return (
            "a namespace is 1-40 characters: lowercase letters, digits and '-', starting with a letter (e.g. r1, exp-2)"
        )
    if name.split("-")[0] == LIVE_GROUP_SEGMENT:
        return (
            f"a namespace may not be or start with '{LIVE_GROUP_SEGMENT}-': "
            "live traffic's consumer groups are llmops-live-*"
        )
    return None


# Fields read from standard OpenTelemetry variables rather than LLMOPS_* ones.
OTEL_ENV_NAMES = {
    "otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otlp_traces_endpoint": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "otlp_protocol": "OTEL_EXPORTER_OTLP_PROTOCOL",
    "otlp_traces_protocol": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "otel_traces_exporter": "OTEL_TRACES_EXPORTER",
    "otel_sdk_disabled": "OTEL_SDK_DISABLED",
}
# OTEL_TRACES_EXPORTER names this install can honour (the SDK's entry points; ``none`` = no exporter).
OTEL_TRACE_EXPORTERS = ("none", "otlp", "console", "otlp_proto_grpc", "otlp_proto_http")
ENV_PREFIX = "LLMOPS_"
MASK = "**********"
_log = logging.getLogger(__name__)
# `scheme://user:password@` anywhere in a text: the userinfo of a URL (a Milvus URI, a registry or
# generator URL, a proxy) is a credential wherever it shows up.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@'\"<>]+@")
LOOPBACK_HOSTS = {"localhost", "localhost.localdomain"}


def mask_url_credentials(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``**********``.

    >>> mask_url_credentials("cannot reach http://svc:hunter2@milvus:19530")
    'cannot reach http://**********@milvus:19530'
    """
    return _URL_USERINFO.sub(lambda match: f"{match.group(1)}{MASK}@", text)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address) is this machine."""
    if not host:
        return False
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bearer_transport_problem(url: str) -> str | None:
    """Why a Bearer key must not be sent to ``url`` (plain http to another host), or None."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "https" or (parts.scheme.lower() == "http" and is_loopback(parts.hostname)):
        return None
    return (
        "the generator API key would travel in clear text: use an https:// URL for LLMOPS_GENERATOR_URL "
        "(plain http is allowed only to a loopback host such as 127.0.0.1)"
    )


class OwnKeysDotEnvSource(DotEnvSettingsSource):
    """The ``.env`` source, keeping only keys that name one of our settings.

    pydantic-settings passes every other key of the file on as an extra input, which
    ``extra="forbid"`` turns into an error that prints the key's value: one unrelated
    ``OPENAI_API_KEY`` line would break every command and show the key.
    """

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        known = set(self.settings_cls.model_fields) | {alias.lower() for alias in _aliases(self.settings_cls)}
        for key in [key for key in data if key.lower() not in known]:
            del data[key]
            if key.upper().startswith(ENV_PREFIX):
                _log.warning("unknown setting %s in .env ignored (see docs/operations.md for the names)", key.upper())
        return data


def _aliases(settings_cls: type[BaseSettings]) -> list[str]:
    names: list[str] = []
    for field in settings_cls.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.append(alias)
        elif isinstance(alias, AliasChoices):
            names.extend(choice for choice in alias.choices if isinstance(choice, str))
    return names


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (``LLMOPS_<FIELD>``, or its ``OTEL_*`` name)."""
    return OTEL_ENV_NAMES.get(field, f"{ENV_PREFIX}{field.upper()}")


def describe_settings_error(error: ValidationError | SettingsError) -> str:
    """One line per bad setting: its variable name, what is wrong and the error kind; never the value."""
    if isinstance(error, SettingsError):
        # pydantic-settings says 'error parsing value for field "x" from source "..."'; the
        # cause (a JSON error) is left out, it may quote the value.
        match = re.search(r'field "([^"]+)"', str(error))
        if match is None:  # already described (Settings.__init__ re-raises it so)
            return f"  {error}"
        return f"  {env_name(match.group(1))}: the value could not be parsed (a JSON list is expected) [parse error]"
    lines = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        field = str(item["loc"][0]) if item["loc"] else "settings"
        name = env_name(field) if field in Settings.model_fields else field
        lines.append(f"  {name}: {item['msg']} [{item['type']}]")
    return "\n".join(lines)


class Settings(BaseSettings):
    """All configuration, each field from ``LLMOPS_<FIELD_NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_",
        env_file=".env",
        extra="forbid",
        frozen=True,
        validate_default=True,
        validate_by_name=True,
        # A ValidationError's text never shows the input: a secret in the wrong variable stays hidden.
        hide_input_in_errors=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except SettingsError as error:
            # Raised from a failed JSON parse whose message quotes the value: keep only the name.
            raise SettingsError(describe_settings_error(error).strip()) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Sources in pydantic-settings' order, the ``.env`` one keeping only our keys."""
        dotenv = OwnKeysDotEnvSource(
            settings_cls,
            env_file=getattr(dotenv_settings, "env_file", settings_cls.model_config.get("env_file")),
            env_file_encoding=getattr(dotenv_settings, "env_file_encoding", None),
        )
        return init_settings, env_settings, dotenv, file_secret_settings

    # --- Kafka -------------------------------------------------------------------------------
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers.")
    namespace: str = Field(
        "", description="Optional prefix of every topic, consumer group and collection (for replays)."
    )
    partitions: int = Field(6, ge=1, le=1024, description="Partitions of each data topic when created.")
    replication_factor: int = Field(1, ge=1, le=5, description="Replication factor of created topics.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_oauthbearer_sub: str | None = Field(
        None,
        description="OAUTHBEARER: sign in with an unsecured JWT (alg none) for this subject; development brokers "
        "with Kafka's default unsecured validator only.",
    )
    sasl_oauthbearer_token_file: Path | None = Field(
        None, description="OAUTHBEARER: a file holding the access token (JWT), read again at each login."
    )
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = Field(
        None, description="mTLS: the client's certificate chain (PEM; may also hold its key)."
    )
    ssl_keyfile: Path | None = Field(None, description="mTLS: the client's private key (PEM), if not in the certfile.")
    ssl_key_password: SecretStr | None = Field(None, description="mTLS: the password of an encrypted private key.")
    broker_wait_seconds: float = Field(
        300.0, ge=0, description="How long a starting worker retries an unreachable broker before exiting (69)."
    )
    kafka_session_timeout_s: float = Field(
        6.0,
        ge=6.0,
        le=300.0,
        description="Consumer group session timeout of every worker consumer: a worker that dies (kill -9, "
        "lost host) gives up its partitions after this long. Heartbeats go every second (at most a third "
        "of it), so the others learn of a rebalance within a second.",
    )

    # --- Embedded broker (`llmops kafka start`) -------------------------------------------------
    data_dir: Path = Field(Path(".llmops"), description="Runtime state: broker jars, data, logs, Milvus Lite.")
    kafka_heap: str = Field("768m", description="Java heap (-Xmx) of the embedded broker.")
    kafka_gc: Literal["g1", "zgc"] = Field(
        "g1",
        description="Garbage collector of the embedded broker: g1, or zgc (no stop-the-world pauses; "
        "takes effect at the broker's next start).",
    )
    kafka_authorizer: bool = Field(
        False, description="Embedded broker: enforce ACLs (StandardAuthorizer); the SASL user is its only super user."
    )

    # --- Schema registry ---------------------------------------------------------------------
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry; unset = deterministic embedded ids."
    )
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_auto_register: bool = Field(
        True,
        description="Producers register their schema under <topic>-value; false = only look it up "
        "(a registry where schemas are registered by a pipeline, not by producers).",
    )

    # --- Milvus ------------------------------------------------------------------------------
    milvus_uri: str | None = Field(None, description="Milvus server URI; unset = Milvus Lite in data_dir.")
    milvus_token: SecretStr | None = None
    milvus_index_type: Literal["HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8"] = "HNSW"
    milvus_metric: Literal["COSINE", "IP", "L2"] = "COSINE"

    # --- Embedding and indexing --------------------------------------------------------------
    embed_model: Literal["int8", "fp32", "shipped"] = Field(
        "int8", description="Embedding graph: int8 (built, fused, per-channel), fp32 (built), shipped (as packaged)."
    )
    models_dir: Path | None = Field(None, description="Built ONNX graphs (default: <data_dir>/models).")
    embed_workers: int = Field(0, ge=0, le=64, description="Parallel ONNX Runtime runs, one thread each (0 = cores).")
    embed_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="Nice value added to the bulk-embedding threads, so that requests win the CPU (0 = off).",
    )
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Chunks taken per embedding micro-batch.")
    # Below the maximum rate a window decides the batch size, and every batch costs the same
    # fixed work: a Milvus Lite upsert costs ~3.8 ms of CPU for 1 row, ~0.7 ms a row for 16,
    # ~0.5 ms a row for 64 or more; each batch is also one span, one produce request and one
    # fetch for the broker. Together the two windows add at most 0.35 s to publish -> searchable.
    embed_batch_seconds: float = Field(0.05, gt=0, description="Longest wait to fill an embedding batch.")
    index_batch_size: int = Field(256, ge=1, description="Embeddings taken per Milvus write.")
    index_batch_seconds: float = Field(0.05, gt=0, description="Longest wait to fill a Milvus write.")

    # --- Ingestion ---------------------------------------------------------------------------
    chunk_tokens: int = Field(128, ge=16, le=512, description="Max tokens per chunk, [CLS]/[SEP] included.")
    chunk_overlap: int = Field(16, ge=0, le=256, description="Tokens shared by consecutive chunks.")
    max_text_bytes: int = Field(1_000_000, ge=1, description="Documents with longer text are dead-lettered.")
    min_text_chars: int = Field(1, ge=1, description="Documents shorter than this after cleaning are rejected.")
    redact_pii: tuple[str, ...] = Field(PII_KINDS, description="PII kinds to redact (JSON list in the env).")
    near_dup_max_hamming: int = Field(
        3, ge=0, le=15, description="SimHash-64 distance at or under which a document is a near duplicate."
    )
    near_dup_enabled: bool = True
    ingest_batch_size: int = Field(256, ge=1, description="Events taken per batch by the ingest agent.")
    ingest_batch_seconds: float = Field(0.05, gt=0, description="Longest wait to fill an ingest batch.")

    # --- Inference ---------------------------------------------------------------------------
    infer_concurrency: int = Field(4, ge=1, le=256, description="Requests the infer agent works on at once.")
    infer_threads: int = Field(2, ge=1, le=64, description="Threads that embed queries and search for the infer agent.")
    infer_inline_when_idle: bool = Field(
        True,
        description="A request alone in flight (and not asking for an explanation) embeds and searches on "
        "the event loop instead of a thread: ~0.5 ms faster, other agents of the worker wait up to ~15 ms.",
    )
    default_classifier: str = Field(
        "stdlib-topic", description="Model name that answers `classify` when none is pinned."
    )
    injection_block_score: float = Field(
        0.7, gt=0, le=1, description="Prompt-injection score at which a request is blocked."
    )
    injection_flag_score: float = Field(
        0.55, gt=0, le=1, description="Prompt-injection score at which a request is flagged (answered, marked)."
    )
    injection_screen: Literal["classifier", "rules"] = Field(
        "classifier",
        description="Prompt-injection screen: `classifier` (rule features + embedding, ONNX) or `rules` (regex only).",
    )
    injection_chunk_score: float = Field(
        0.5, gt=0, le=1, description="rag: a retrieved passage scoring at or above this is withheld."
    )
    generator_url: str | None = Field(
        None, description="OpenAI-compatible chat endpoint for `rag` answers; unset = context only."
    )
    generator_model: str = Field("gpt-4o-mini", description="Model name sent to the generator endpoint.")
    generator_api_key: SecretStr | None = None
    qa_min_accuracy: float = Field(0.6, ge=0, le=1, description="QA gate: lowest accuracy a candidate may have.")
    qa_max_drop: float = Field(0.02, ge=0, le=1, description="QA gate: largest accuracy drop from production allowed.")
    qa_min_recall_at_5: float = Field(
        0.5, ge=0, le=1, description="Ranker QA gate: lowest cross-validated recall@5 a candidate may have."
    )
    ranker_name: str = Field("retrieval-ranker", description="The ranker whose production version orders search.")
    rag_max_wrong_abstentions: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Abstention calibration: largest share of answerable dev questions the answerer may abstain on.",
    )
    model_trusted_keys: Path | None = Field(
        None,
        description="File or directory of Ed25519 public keys whose signed models.control events workers accept "
        "(unset = a development key pair made under data_dir; production sets its own).",
    )
    model_signing_key_file: Path | None = Field(
        None, description="Path of the Ed25519 private key (PEM) that `llmops models ...` signs control events with."
    )
    model_max_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest model artifact (ONNX graph) a worker or the CLI loads."
    )

    # --- Tracing -----------------------------------------------------------------------------
    tracing: bool = Field(
        True, description="Spans for every record (LLMOPS_TRACING=off: none; trace headers still pass through)."
    )
    tracing_queue_size: int = Field(
        8192, ge=64, description="Ended spans waiting for export; past it spans are dropped and counted."
    )
    otel_sdk_disabled: bool = Field(
        False,
        validation_alias=OTEL_ENV_NAMES["otel_sdk_disabled"],
        description="OTEL_SDK_DISABLED=true: no spans at all, neither OTLP nor telemetry.spans (headers pass through).",
    )
    otel_traces_exporter: str | None = Field(
        None,
        validation_alias=OTEL_ENV_NAMES["otel_traces_exporter"],
        description="OTEL_TRACES_EXPORTER: otlp, console, none or a comma list; unset = otlp when an endpoint is set.",
    )
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=OTEL_ENV_NAMES["otlp_endpoint"],
        description="OTLP base URL (OTEL_EXPORTER_OTLP_ENDPOINT); set = spans also go there.",
    )
    otlp_traces_endpoint: str | None = Field(
        None,
        validation_alias=OTEL_ENV_NAMES["otlp_traces_endpoint"],
        description="OTLP traces URL (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); wins over otlp_endpoint.",
    )
    otlp_protocol: Literal["grpc", "http/protobuf"] | None = Field(
        None,
        validation_alias=OTEL_ENV_NAMES["otlp_protocol"],
        description="OTLP over gRPC (port 4317) or HTTP with protobuf (port 4318, the default); http/json is refused.",
    )
    otlp_traces_protocol: Literal["grpc", "http/protobuf"] | None = Field(
        None,
        validation_alias=OTEL_ENV_NAMES["otlp_traces_protocol"],
        description="The OTLP protocol for traces (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL); wins over otlp_protocol.",
    )

    # --- Monitoring (agent group "monitor") ---------------------------------------------------
    monitor_window_events: int = Field(
        200, ge=2, description="A monitoring window closes after this many events of its stream..."
    )
    monitor_window_seconds: float = Field(60.0, gt=0, description="...or this many seconds after it opened.")
    monitor_min_drift_events: int = Field(
        20, ge=2, description="Windows with fewer events report no drift verdict (too little evidence)."
    )
    monitor_reference_size: int = Field(2000, ge=50, le=2000, description="Rows sampled into a drift reference.")
    monitor_drift_quantile: float = Field(
        0.995, gt=0.5, lt=1, description="Drift thresholds: this quantile of the statistic under permutation."
    )
    monitor_calibration_draws: int = Field(1000, ge=100, description="Permutations that calibrate thresholds.")
    monitor_alert_after: int = Field(2, ge=1, description="Consecutive breaching windows that raise an alert.")
    monitor_clear_after: int = Field(2, ge=1, description="Consecutive healthy windows that resolve an alert.")
    monitor_cooldown_windows: int = Field(
        5, ge=0, description="Windows after a resolved alert during which the same alert is not raised again."
    )
    monitor_feedback_ttl_seconds: float = Field(
        3600.0, gt=0, description="How long responses wait for their feedback (and feedback for its response)."
    )
    monitor_min_accuracy: float = Field(0.7, ge=0, le=1, description="Quality alert below this accuracy.")
    monitor_max_fairness_gap: float = Field(
        0.2, ge=0, le=1, description="Fairness alert when best minus worst slice accuracy exceeds this."
    )
    monitor_min_slice_events: int = Field(10, ge=1, description="Slices with fewer labelled events are not judged.")
    monitor_latency_p95_ms: float = Field(1000.0, gt=0, description="SLO: end-to-end p95 latency per window.")
    monitor_max_error_share: float = Field(0.05, ge=0, le=1, description="SLO: share of responses that are not OK.")
    monitor_max_abstention_rate: float = Field(
        0.5, ge=0, le=1, description="Alert when more rag answers of one answering version abstain."
    )
    monitor_min_grounded_rate: float = Field(
        0.8, ge=0, le=1, description="Alert when fewer rag answers of one answering version are fully grounded."
    )

    # --- Worker process ----------------------------------------------------------------------
    malloc_mmap_threshold: int = Field(
        DEFAULT_MMAP_THRESHOLD,
        ge=0,
        le=33_554_432,
        description="Worker: glibc serves allocations of this many bytes or more from their own mappings, "
        "returned on free (0 = glibc's adaptive default).",
    )
    arrow_memory_pool: Literal["system", "mimalloc", "jemalloc", "default"] = Field(
        DEFAULT_ARROW_POOL,
        description="Worker: allocator of Arrow buffers (Milvus Lite's WAL batches); 'default' = pyarrow's own choice.",
    )

    # --- SRE endpoints (`llmops worker`) --------------------------------------------------------
    sre_port: int = Field(
        9188,
        ge=0,
        le=65535,
        description="Port of the worker's /healthz, /readyz and /metrics (0 = no endpoints). Not Faust's "
        "web port (6066, off in our workers).",
    )
    sre_host: str = Field(
        "0.0.0.0",  # noqa: S104 - the kubelet and Prometheus reach a pod on its own IP
        description="Address the SRE endpoints listen on (127.0.0.1: this host only).",
    )

    # --- Logging -----------------------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap_servers(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("give a comma-separated list of HOST:PORT (e.g. kafka-1:9092,kafka-2:9092)")
        return value

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        problem = namespace_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _kafka_credentials_complete(self) -> Settings:
        if self.sasl_mechanism == "OAUTHBEARER" and (self.sasl_oauthbearer_sub is None) == (
            self.sasl_oauthbearer_token_file is None
        ):
            raise ValueError(
                "OAUTHBEARER needs exactly one of LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE (a token file) or "
                "LLMOPS_SASL_OAUTHBEARER_SUB (an unsecured JWT, development brokers only)"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("LLMOPS_SSL_KEYFILE needs LLMOPS_SSL_CERTFILE (the certificate of that key)")
        return self

    @model_validator(mode="after")
    def _no_bearer_key_in_clear_text(self) -> Settings:
        if self.generator_api_key is not None and self.generator_url:
            problem = bearer_transport_problem(self.generator_url)
            if problem:
                raise ValueError(problem)
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Fields as pydantic shows them, with the userinfo of any URL masked (``SecretStr`` already is)."""
        for name, value in super().__repr_args__():
            yield name, mask_url_credentials(value) if isinstance(value, str) else value

    def secret_values(self) -> list[str]:
        """Every secret these settings hold, as text: for logs to mask wherever a value shows up.

        ``SecretStr`` values, and the userinfo (and its password) of any URL setting.
        """
        found: list[str] = []
        for _, value in self:
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
            elif isinstance(value, str) and "@" in value:
                for match in _URL_USERINFO.finditer(value):
                    userinfo = match.group(0)[len(match.group(1)) : -1]
                    found += [userinfo, userinfo.partition(":")[2]]
        return sorted({secret for secret in found if len(secret) >= 4}, key=len, reverse=True)

    @field_validator("otel_sdk_disabled", mode="before")
    @classmethod
    def _sdk_disabled_as_the_spec_reads_it(cls, value: object) -> object:
        # The spec: only "true" (any case) disables; any other value is false, with a warning if
        # it is not "false" or empty. A typo must not stop every command.
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text not in ("true", "false", ""):
            _log.warning("OTEL_SDK_DISABLED is neither true nor false: read as false (the SDK stays on)")
        return text == "true"

    @field_validator("otlp_protocol", "otlp_traces_protocol", mode="before")
    @classmethod
    def _blank_protocol_is_unset(cls, value: object) -> object:
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("otel_traces_exporter")
    @classmethod
    def _check_trace_exporters(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in OTEL_TRACE_EXPORTERS]
        if unknown:
            raise ValueError(f"{len(unknown)} unknown exporter name(s); choose from {list(OTEL_TRACE_EXPORTERS)}")
        return ",".join(names)

    @field_validator("redact_pii")
    @classmethod
    def _check_pii_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(PII_KINDS))
        if unknown:
            # The unknown entries are not named: a value in the wrong variable may be a secret.
            raise ValueError(f"{len(unknown)} unknown PII kind(s); choose from {list(PII_KINDS)}")
        return value

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: object) -> int:
        data = getattr(info, "data", {})
        size = data.get("chunk_tokens", 128)
        if value >= size - 2:
            raise ValueError(f"chunk_overlap ({value}) must be smaller than chunk_tokens - 2 ({size - 2})")
        return value

    def to_env(self) -> dict[str, str]:
        """These settings as ``LLMOPS_*`` variables, for a child process (a worker) to read back."""
        env: dict[str, str] = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple):
                value = json.dumps(list(value))
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[env_name(name)] = str(value)
        return env

    @property
    def kafka_heartbeat_s(self) -> float:
        """Consumer heartbeat interval: 1 s, or a third of the session timeout if that is shorter.

        A member learns that its group is rebalancing from its next heartbeat's answer: the
        interval is how long every partition waits, at most, before a join or a death is acted on.
        """
        return min(1.0, self.kafka_session_timeout_s / 3)

    @property
    def kafka_dir(self) -> Path:
        """Folder of the embedded broker: jars, storage and log."""
        return self.data_dir / "kafka"

    @property
    def otlp_traces_url(self) -> str | None:
        """Where OTLP spans go over the configured protocol, if anywhere (see :meth:`otlp_url`)."""
        return self.otlp_url(grpc=self.traces_protocol == "grpc")

    @property
    def traces_protocol(self) -> str:
        """The OTLP protocol of traces: the traces variable, else the general one, else HTTP/protobuf."""
        return self.otlp_traces_protocol or self.otlp_protocol or "http/protobuf"

    def otlp_url(self, grpc: bool) -> str | None:
        """The OTLP traces endpoint as the OTLP spec derives it from the endpoint variables.

        Over HTTP the base endpoint gets the signal path ``/v1/traces``; over gRPC it is used as is.
        """
        if self.otlp_traces_endpoint:
            return self.otlp_traces_endpoint
        if self.otlp_endpoint:
            return self.otlp_endpoint if grpc else self.otlp_endpoint.rstrip("/") + "/v1/traces"
        return None

    @property
    def trace_exporters(self) -> list[str]:
        """The OTel SDK exporter names to run beside telemetry.spans (``OTEL_TRACES_EXPORTER``).

        Unset means ``otlp`` when an OTLP endpoint is set and none otherwise (the spec's default
        is ``otlp`` to localhost, which would retry against a Collector that most setups lack).
        """
        if self.otel_traces_exporter is None:
            return ["otlp"] if self.otlp_traces_url else []
        return [name for name in self.otel_traces_exporter.split(",") if name != "none"]
