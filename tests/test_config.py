"""Settings: sources and precedence, every seed environment variable, validation messages, redaction."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bananas._manager import load_plugins
from bananas.config import SETTINGS_KEYS, Schema, Settings, load_settings, redact_url
from bananas.config_schema import setting
from bananas.errors import ConfigError, UsageError
from bananas.hookspecs import hookimpl
from bananas.job import Priority

DOCS = Path(__file__).resolve().parents[1] / "docs" / "CONFIGURATION.md"

_LEVELS = ("debug", "info", "warn", "warning", "error")

LOG_TIER_KEYS = (
    setting("logging.file.enabled", "bool", False, "Write logs to a rotating file.", "LOG_FILE_ENABLED"),
    setting("logging.file.path", "str", "/var/log/bananas/bananas.log", "Log file path.", "LOG_FILE_PATH"),
    setting("logging.file.max_size_mb", "int", 100, "Size in MB before rotation.", "LOG_FILE_MAX_SIZE_MB", minimum=1),
    setting("logging.file.max_backups", "int", 10, "Rotated files to keep.", "LOG_FILE_MAX_BACKUPS", minimum=0),
    setting("logging.file.max_age_days", "int", 30, "Days to keep rotated files.", "LOG_FILE_MAX_AGE_DAYS",
            minimum=0),
    setting("logging.file.compress", "bool", True, "Gzip rotated files.", "LOG_FILE_COMPRESS"),
    setting("logging.file.level", "enum", "info", "File log level.", "LOG_FILE_LEVEL", choices=_LEVELS),
    setting("logging.elasticsearch.enabled", "bool", False, "Ship logs to Elasticsearch.", "LOG_ES_ENABLED"),
    setting("logging.elasticsearch.addresses", "list", ("http://localhost:9200",), "Elasticsearch node URLs.",
            "LOG_ES_ADDRESSES"),
    setting("logging.elasticsearch.username", "str", None, "Basic-auth user name.", "LOG_ES_USERNAME"),
    setting("logging.elasticsearch.password", "str", None, "Basic-auth password.", "LOG_ES_PASSWORD", secret=True),
    setting("logging.elasticsearch.index_prefix", "str", "bananas-logs", "Index name prefix.",
            "LOG_ES_INDEX_PREFIX"),
    setting("logging.elasticsearch.level", "enum", "info", "Elasticsearch log level.", "LOG_ES_LEVEL",
            choices=_LEVELS),
    setting("logging.elasticsearch.cloud_id", "str", None, "Elastic Cloud id.", "LOG_ES_CLOUD_ID"),
    setting("logging.elasticsearch.api_key", "str", None, "Elastic Cloud API key.", "LOG_ES_API_KEY", secret=True),
    setting("logging.elasticsearch.flush_bytes", "int", 5242880, "Bulk buffer size.", "LOG_ES_FLUSH_BYTES",
            minimum=1),
    setting("logging.elasticsearch.flush_interval", "duration", 10.0, "Flush interval.", "LOG_ES_FLUSH_INTERVAL",
            minimum=0, min_exclusive=True),
    setting("logging.elasticsearch.num_workers", "int", 2, "Bulk workers.", "LOG_ES_NUM_WORKERS", minimum=1,
            maximum=64),
)
"""The 18 log-tier keys of the seed, as the log-tier plugins declare them."""


_SLOTS = {"minimum": 1, "maximum": 1000}

MODE_KEYS = (
    setting("worker.job_types", "list", (), "Job names this worker runs.", "WORKER_JOB_TYPES"),
    setting("worker.priority_concurrency", "int", 10, "Slots of the priority pool.", "WORKER_PRIORITY_CONCURRENCY",
            **_SLOTS),
    setting("worker.priority_queues", "list", ("high", "normal", "low"), "Queues of the priority pool.",
            "WORKER_PRIORITY_QUEUES"),
    setting("worker.scheduled_concurrency", "int", 5, "Slots per scheduled pool.", "WORKER_SCHEDULED_CONCURRENCY",
            **_SLOTS),
    setting("worker.scheduled_queues", "list", ("scheduled",), "Queues of the scheduled pool.",
            "WORKER_SCHEDULED_QUEUES"),
    setting("worker.high_concurrency", "int", 10, "Slots per high pool.", "WORKER_HIGH_CONCURRENCY", **_SLOTS),
    setting("worker.normal_concurrency", "int", 10, "Slots per normal pool.", "WORKER_NORMAL_CONCURRENCY", **_SLOTS),
    setting("worker.low_concurrency", "int", 5, "Slots per low pool.", "WORKER_LOW_CONCURRENCY", **_SLOTS),
    setting("worker.high_count", "int", 3, "Number of high pools.", "WORKER_HIGH_COUNT", minimum=0),
    setting("worker.normal_count", "int", 2, "Number of normal pools.", "WORKER_NORMAL_COUNT", minimum=0),
    setting("worker.low_count", "int", 1, "Number of low pools.", "WORKER_LOW_COUNT", minimum=0),
    setting("worker.scheduled_count", "int", 1, "Number of scheduled pools.", "WORKER_SCHEDULED_COUNT", minimum=0),
)
"""The seed's mode keys as the mode plugins declare them (their own tests check the real declarations)."""


class PluginKeys:
    """Stand-in for the plugins that declare the seed's mode and log-tier keys, so these kernel tests check the
    settings machinery with the seed's names whatever is installed (each plugin's tests check its own keys)."""

    __name__ = "plugin_keys_stand_in"

    @hookimpl
    def bananas_register_settings(self, register):
        for spec in (*MODE_KEYS, *LOG_TIER_KEYS):
            register(spec)


PLUGINS = load_plugins(plugins=[PluginKeys()], entrypoints=False, env={})
"""The built-ins and the stand-in only: hermetic, the same with the kernel alone or with every plugin installed."""
ALL_KEYS = list(Schema.of(PLUGINS).specs.values())
"""Every key: the kernel's and the stand-in's."""


def load(tmp_path: Path, env: dict[str, str] | None = None, **kwargs) -> Settings:
    """Hermetic: never the real environment or working directory."""
    kwargs.setdefault("plugins", PLUGINS)
    return load_settings(env=env or {}, cwd=tmp_path, **kwargs)


def elsewhere(tmp_path: Path) -> Path:
    """A directory beside ``tmp_path`` (not below it: the config search goes upwards) with no config file."""
    other = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    other.mkdir(exist_ok=True)
    return other


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and precedence ----------------------------------------------------------------------------------


def test_defaults(tmp_path):
    s = load(tmp_path)
    assert s.config_file is None
    assert s["broker"] == "redis://localhost:6379"
    assert s["serializer"] == "json"
    assert s["result_backend"] is None
    assert s["router"] == "priority"
    assert s["signing_key"] is None
    assert s["max_payload_bytes"] == 1048576
    assert s["worker.mode"] == "default"
    assert s["worker.concurrency"] == 10
    assert s["worker.priorities"] == (Priority.HIGH, Priority.NORMAL, Priority.LOW)
    assert s["worker.job_types"] == ()
    assert s["worker.queues"] == ()
    assert s["worker.enable_scheduler"] is True
    assert s["worker.scheduler_interval"] == 1.0
    assert s["worker.processes"] == 1
    assert s["worker.shutdown_timeout"] == 30.0
    assert s["jobs.timeout"] == 300.0
    assert s["jobs.max_retries"] == 3
    assert (s["jobs.retry_backoff_base"], s["jobs.retry_backoff_factor"], s["jobs.retry_backoff_max"]) == (
        1.0,
        2.0,
        3600.0,
    )
    assert (s["logging.level"], s["logging.format"], s["logging.color"]) == ("info", "text", True)
    assert s["logging.file.enabled"] is False
    assert s["logging.file.path"] == "/var/log/bananas/bananas.log"
    assert s["logging.elasticsearch.index_prefix"] == "bananas-logs"
    assert s["logging.elasticsearch.flush_bytes"] == 5242880
    assert s["logging.elasticsearch.flush_interval"] == 10.0
    assert s["logging.elasticsearch.num_workers"] == 2
    assert all(s.source(spec.key) == "default" for spec in ALL_KEYS)
    assert s.table("routes") == {} and s.table("broker_options") == {} and s.table("result_backend_options") == {}


def test_every_schema_default_is_valid(tmp_path):
    s = load(tmp_path)
    for spec in ALL_KEYS:
        if spec.default is not None:
            assert s[spec.key] is not None, spec.key


def test_precedence_defaults_file_env_override(tmp_path):
    write(tmp_path / "bananas.toml", "[worker]\nconcurrency = 20\nmode = 'thin'\nprocesses = 2\n")
    s = load(tmp_path)
    assert (s["worker.concurrency"], s.source("worker.concurrency")) == (20, "file bananas.toml")
    assert s.source("jobs.max_retries") == "default"

    s = load(tmp_path, env={"WORKER_CONCURRENCY": "30", "WORKER_MODE": "specialized"})
    assert (s["worker.concurrency"], s.source("worker.concurrency")) == (30, "env WORKER_CONCURRENCY")
    assert s["worker.mode"] == "specialized"
    assert (s["worker.processes"], s.source("worker.processes")) == (2, "file bananas.toml")

    s = load(
        tmp_path,
        env={"WORKER_CONCURRENCY": "30"},
        overrides={"worker.concurrency": 40, "worker.mode": None},
        override_sources={"worker.concurrency": "flag --concurrency"},
    )
    assert (s["worker.concurrency"], s.source("worker.concurrency")) == (40, "flag --concurrency")
    assert (s["worker.mode"], s.source("worker.mode")) == ("thin", "file bananas.toml")  # None: flag not given


def test_override_source_defaults_to_argument(tmp_path):
    s = load(tmp_path, overrides={"broker": "memory://", "worker.concurrency": "5"})
    assert (s["broker"], s.source("broker")) == ("memory://", "argument")
    assert s["worker.concurrency"] == 5


def test_override_whole_tables(tmp_path):
    s = load(tmp_path, overrides={"routes": {"send_email": "emails"}, "worker": {"concurrency": 3}})
    assert s.table("routes") == {"send_email": "emails"}
    assert s["worker.concurrency"] == 3
    with pytest.raises(ConfigError, match=r"invalid routes = 'x' \(from argument\): must be a table"):
        load(tmp_path, overrides={"routes": "x"})


# -- where the file comes from ----------------------------------------------------------------------------------


def test_bananas_toml_in_working_directory(tmp_path):
    write(tmp_path / "bananas.toml", 'broker = "memory://"\n[worker]\nconcurrency = 7\n')
    s = load(tmp_path)
    assert s.config_file == "bananas.toml"
    assert (s["broker"], s.source("broker")) == ("memory://", "file bananas.toml")
    assert s["worker.concurrency"] == 7


def test_bananas_toml_wrapped_in_bananas_table(tmp_path):
    write(tmp_path / "bananas.toml", '[bananas]\nbroker = "memory://"\n[bananas.worker]\nconcurrency = 8\n')
    s = load(tmp_path)
    assert (s["broker"], s["worker.concurrency"]) == ("memory://", 8)


def test_bananas_table_mixed_with_top_level_keys_is_rejected(tmp_path):
    write(tmp_path / "bananas.toml", 'serializer = "json"\n[bananas]\nbroker = "memory://"\n')
    with pytest.raises(UsageError, match="bananas.toml mixes a \\[bananas\\] table"):
        load(tmp_path)


def test_pyproject_tool_bananas(tmp_path):
    write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "x"\n[tool.bananas]\nbroker = "memory://"\n[tool.bananas.worker]\nconcurrency = 9\n'
        '[tool.bananas.routes]\nsend_email = "emails"\n',
    )
    s = load(tmp_path)
    assert s.config_file == "pyproject.toml"
    assert (s["broker"], s["worker.concurrency"]) == ("memory://", 9)
    assert s.source("worker.concurrency") == "file pyproject.toml"
    assert s.table("routes") == {"send_email": "emails"}


def test_pyproject_without_tool_bananas_is_no_config(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n[tool.ruff]\nline-length = 100\n')
    s = load(tmp_path)
    assert s.config_file is None
    assert s.source("broker") == "default"


def test_bananas_toml_wins_over_pyproject(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.bananas.worker]\nconcurrency = 9\n")
    write(tmp_path / "bananas.toml", "[worker]\nconcurrency = 7\n")
    s = load(tmp_path)
    assert (s.config_file, s["worker.concurrency"]) == ("bananas.toml", 7)


def test_discovery_searches_upwards_from_the_working_directory(tmp_path):
    # Given a project with bananas.toml at its root, and a worker started two directories below
    write(tmp_path / "bananas.toml", "[worker]\nconcurrency = 7\n")
    deep = tmp_path / "src" / "app"
    deep.mkdir(parents=True)
    # When settings load there / Then the project's file is found, shown by its absolute path
    s = load(deep)
    assert s.config_file == str(tmp_path / "bananas.toml")
    assert (s["worker.concurrency"], s.source("worker.concurrency")) == (7, f"file {tmp_path / 'bananas.toml'}")


def test_discovery_passes_over_a_pyproject_without_tool_bananas_and_stops_at_the_nearest_file(tmp_path):
    write(tmp_path / "bananas.toml", "[worker]\nconcurrency = 7\n")
    (tmp_path / "pkg").mkdir()
    write(tmp_path / "pkg" / "pyproject.toml", "[project]\nname = 'pkg'\n")
    assert load(tmp_path / "pkg")["worker.concurrency"] == 7  # passed over: no [tool.bananas]
    write(tmp_path / "pkg" / "pyproject.toml", "[project]\nname = 'pkg'\n[tool.bananas.worker]\nconcurrency = 9\n")
    s = load(tmp_path / "pkg")
    assert (s["worker.concurrency"], s.config_file) == (9, "pyproject.toml")  # the nearest one wins
    write(tmp_path / "pkg" / "bananas.toml", "[worker]\nconcurrency = 11\n")
    assert load(tmp_path / "pkg")["worker.concurrency"] == 11  # bananas.toml first within a directory


def test_unknown_bananas_and_seed_style_env_vars_are_reported_with_did_you_mean(tmp_path):
    s = load(tmp_path, env={"BANANAS_WORKER_CONCURENCY": "3", "WORKER_CONCURENCY": "4", "BANANAS_NOPE": "1",
                            "WORKER_ID": "unrelated", "LOG_DIR": "/x", "HOME": "/root", "BANANAS_CONFIG": "",
                            "BANANAS_TEST_REDIS_SERVER": "/usr/bin/redis-server", "BANANAS_LOAD_PLUGINS": "x"})
    assert s.warnings == (
        "environment variable BANANAS_NOPE matches no setting and is ignored",
        "environment variable BANANAS_WORKER_CONCURENCY matches no setting and is ignored; "
        "did you mean BANANAS_WORKER_CONCURRENCY?",
        "environment variable WORKER_CONCURENCY matches no setting and is ignored; did you mean WORKER_CONCURRENCY?",
    )
    assert s["worker.concurrency"] == 10  # reported, not guessed
    assert load(tmp_path, env={"WORKER_CONCURRENCY": "3"}).warnings == ()


def test_bananas_config_env_wins_over_discovery(tmp_path):
    write(tmp_path / "bananas.toml", "[worker]\nconcurrency = 7\n")
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "prod.toml", "[worker]\nconcurrency = 70\n")
    s = load(tmp_path, env={"BANANAS_CONFIG": "conf/prod.toml"})
    assert s.config_file == "conf/prod.toml"
    assert (s["worker.concurrency"], s.source("worker.concurrency")) == (70, "file conf/prod.toml")


def test_config_path_wins_over_bananas_config_env(tmp_path):
    write(tmp_path / "env.toml", "[worker]\nconcurrency = 11\n")
    explicit = write(tmp_path / "explicit.toml", "[worker]\nconcurrency = 12\n")
    s = load(tmp_path, env={"BANANAS_CONFIG": "env.toml"}, config_path=explicit)
    assert s.config_file == str(explicit)
    assert s["worker.concurrency"] == 12


def test_explicit_pyproject_path_reads_tool_bananas(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub" / "pyproject.toml", "[tool.bananas]\nrouter = 'job-type'\n")
    assert load(tmp_path, config_path=path)["router"] == "job-type"
    write(path, "[project]\nname = 'x'\n")
    with pytest.raises(UsageError, match="has no \\[tool.bananas\\] table"):
        load(tmp_path, config_path=path)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(UsageError, match="config file nope.toml not found"):
        load(tmp_path, config_path="nope.toml")
    with pytest.raises(UsageError, match="config file gone.toml not found"):
        load(tmp_path, env={"BANANAS_CONFIG": "gone.toml"})


def test_toml_syntax_error_names_file_and_line(tmp_path):
    write(tmp_path / "bananas.toml", '[worker]\nconcurrency = 5\nmode = "thin\n')
    with pytest.raises(UsageError) as info:
        load(tmp_path)
    assert not isinstance(info.value, ConfigError)
    message = str(info.value)
    assert message.startswith("config file bananas.toml is not valid TOML:")
    assert "line 3" in message


def test_section_that_is_not_a_table(tmp_path):
    write(tmp_path / "bananas.toml", "worker = 5\n")
    with pytest.raises(ConfigError, match=r"invalid worker = 5 \(from file bananas.toml\): must be a table"):
        load(tmp_path)


# -- environment variables --------------------------------------------------------------------------------------

SEED_ENV = [
    ("WORKER_MODE", "thin", "worker.mode", "thin"),
    ("WORKER_CONCURRENCY", "50", "worker.concurrency", 50),
    ("WORKER_PRIORITIES", "high, low", "worker.priorities", (Priority.HIGH, Priority.LOW)),
    ("WORKER_JOB_TYPES", "send_email,generate_report,,", "worker.job_types", ("send_email", "generate_report")),
    ("ENABLE_SCHEDULER", "false", "worker.enable_scheduler", False),
    ("SCHEDULER_INTERVAL", "500ms", "worker.scheduler_interval", 0.5),
    ("JOB_TIMEOUT", "10m", "jobs.timeout", 600.0),
    ("MAX_RETRIES", "5", "jobs.max_retries", 5),
    ("REDIS_URL", "redis://redis:6379", "redis_url", "redis://redis:6379"),
    ("WORKER_PRIORITY_CONCURRENCY", "12", "worker.priority_concurrency", 12),
    ("WORKER_PRIORITY_QUEUES", "high,normal", "worker.priority_queues", ("high", "normal")),
    ("WORKER_SCHEDULED_CONCURRENCY", "6", "worker.scheduled_concurrency", 6),
    ("WORKER_SCHEDULED_QUEUES", "scheduled,retry", "worker.scheduled_queues", ("scheduled", "retry")),
    ("WORKER_HIGH_CONCURRENCY", "11", "worker.high_concurrency", 11),
    ("WORKER_NORMAL_CONCURRENCY", "12", "worker.normal_concurrency", 12),
    ("WORKER_LOW_CONCURRENCY", "4", "worker.low_concurrency", 4),
    ("WORKER_HIGH_COUNT", "4", "worker.high_count", 4),
    ("WORKER_NORMAL_COUNT", "3", "worker.normal_count", 3),
    ("WORKER_LOW_COUNT", "0", "worker.low_count", 0),
    ("WORKER_SCHEDULED_COUNT", "2", "worker.scheduled_count", 2),
    ("LOG_LEVEL", "debug", "logging.level", "debug"),
    ("METRICS_PORT", "9100", "metrics.port", 9100),
    ("METRICS_BIND", "0.0.0.0", "metrics.bind", "0.0.0.0"),
    ("METRICS_LOG_INTERVAL", "1m", "metrics.log_interval", 60.0),
    ("LOG_FORMAT", "json", "logging.format", "json"),
    ("LOG_COLOR", "off", "logging.color", False),
    ("LOG_FILE_ENABLED", "true", "logging.file.enabled", True),
    ("LOG_FILE_PATH", "/tmp/b.log", "logging.file.path", "/tmp/b.log"),
    ("LOG_FILE_MAX_SIZE_MB", "50", "logging.file.max_size_mb", 50),
    ("LOG_FILE_MAX_BACKUPS", "3", "logging.file.max_backups", 3),
    ("LOG_FILE_MAX_AGE_DAYS", "7", "logging.file.max_age_days", 7),
    ("LOG_FILE_COMPRESS", "no", "logging.file.compress", False),
    ("LOG_FILE_LEVEL", "error", "logging.file.level", "error"),
    ("LOG_ES_ENABLED", "1", "logging.elasticsearch.enabled", True),
    ("LOG_ES_ADDRESSES", "http://a:9200, http://b:9200", "logging.elasticsearch.addresses",
     ("http://a:9200", "http://b:9200")),
    ("LOG_ES_USERNAME", "elastic", "logging.elasticsearch.username", "elastic"),
    ("LOG_ES_PASSWORD", "changeme", "logging.elasticsearch.password", "changeme"),
    ("LOG_ES_INDEX_PREFIX", "bananas-logs-prod", "logging.elasticsearch.index_prefix", "bananas-logs-prod"),
    ("LOG_ES_LEVEL", "debug", "logging.elasticsearch.level", "debug"),
    ("LOG_ES_CLOUD_ID", "bananas-prod:dXMtZWFzdA==", "logging.elasticsearch.cloud_id", "bananas-prod:dXMtZWFzdA=="),
    ("LOG_ES_API_KEY", "VnVhQ2ZH==", "logging.elasticsearch.api_key", "VnVhQ2ZH=="),
    ("LOG_ES_FLUSH_BYTES", "1024", "logging.elasticsearch.flush_bytes", 1024),
    ("LOG_ES_FLUSH_INTERVAL", "5s", "logging.elasticsearch.flush_interval", 5.0),
    ("LOG_ES_NUM_WORKERS", "4", "logging.elasticsearch.num_workers", 4),
    # Bananas-only names
    ("WORKER_PROCESSES", "4", "worker.processes", 4),
    ("SHUTDOWN_TIMEOUT", "1m", "worker.shutdown_timeout", 60.0),
    ("WORKER_BROKER_WAIT", "2m", "worker.broker_wait", 120.0),
    ("WORKER_EVENT_LOOP", "UVLOOP", "worker.event_loop", "uvloop"),
    ("WORKER_QUEUES", "emails, reports", "worker.queues", ("emails", "reports")),
    ("WORKER_UNKNOWN_JOB_TYPES", "dead-letter", "worker.unknown_job_types", "dead-letter"),
    ("WORKER_PREFETCH_MULTIPLIER", "4", "worker.prefetch_multiplier", 4),
    ("MAX_PAYLOAD_BYTES", "2048", "max_payload_bytes", 2048),
    ("SCHEDULER_LEASE", "3s", "worker.scheduler_lease", 3.0),
    ("PERIODIC_GRACE", "1m", "worker.periodic_grace", 60.0),
]

BANANAS_ONLY_ENV = [
    ("BANANAS_BROKER", "memory://", "broker", "memory://"),
    ("BANANAS_SERIALIZER", "msgpack", "serializer", "msgpack"),
    ("BANANAS_RESULT_BACKEND", "redis://localhost:6379/1", "result_backend", "redis://localhost:6379/1"),
    ("BANANAS_ROUTER", "job-type", "router", "job-type"),
    ("BANANAS_SIGNING_KEY", "s3cret", "signing_key", "s3cret"),
    ("BANANAS_SIGNING_KEYS_OLD", "old1,old2", "signing_keys_old", ("old1", "old2")),
    ("BANANAS_JOBS_RETRY_BACKOFF_BASE", "2s", "jobs.retry_backoff_base", 2.0),
    ("BANANAS_JOBS_RETRY_BACKOFF_FACTOR", "1.5", "jobs.retry_backoff_factor", 1.5),
    ("BANANAS_JOBS_RETRY_BACKOFF_MAX", "10m", "jobs.retry_backoff_max", 600.0),
    ("BANANAS_PERIODIC", '[{"name": "nightly", "cron": "0 3 * * *"}]', "periodic",
     ({"name": "nightly", "cron": "0 3 * * *"},)),
]


@pytest.mark.parametrize(("name", "raw", "key", "expected"), SEED_ENV, ids=[row[0] for row in SEED_ENV])
def test_seed_env_var_plain_and_prefixed(tmp_path, name, raw, key, expected):
    s = load(tmp_path, env={name: raw})
    assert (s[key], s.source(key)) == (expected, f"env {name}")
    s = load(tmp_path, env={f"BANANAS_{name}": raw})
    assert (s[key], s.source(key)) == (expected, f"env BANANAS_{name}")


@pytest.mark.parametrize(("name", "raw", "key", "expected"), BANANAS_ONLY_ENV, ids=[r[0] for r in BANANAS_ONLY_ENV])
def test_bananas_only_env_vars(tmp_path, name, raw, key, expected):
    s = load(tmp_path, env={name: raw})
    assert (s[key], s.source(key)) == (expected, f"env {name}")


def test_every_key_has_an_env_var_and_seed_list_is_covered():
    names = {name for spec in ALL_KEYS for name in spec.env}
    for name, *_ in SEED_ENV:
        assert name in names and f"BANANAS_{name}" in names
    for name, *_ in BANANAS_ONLY_ENV:
        assert name in names
    assert all(spec.env for spec in ALL_KEYS)
    assert {row[2] for row in SEED_ENV + BANANAS_ONLY_ENV} == {spec.key for spec in ALL_KEYS}


def test_prefixed_env_var_wins(tmp_path):
    s = load(tmp_path, env={"WORKER_CONCURRENCY": "5", "BANANAS_WORKER_CONCURRENCY": "6"})
    assert (s["worker.concurrency"], s.source("worker.concurrency")) == (6, "env BANANAS_WORKER_CONCURRENCY")


def test_empty_env_var_counts_as_unset(tmp_path):
    write(tmp_path / "bananas.toml", "[worker]\nconcurrency = 7\n")
    s = load(tmp_path, env={"WORKER_CONCURRENCY": "", "BANANAS_WORKER_CONCURRENCY": "  ", "LOG_ES_USERNAME": ""})
    assert (s["worker.concurrency"], s.source("worker.concurrency")) == (7, "file bananas.toml")
    assert s["logging.elasticsearch.username"] is None


def test_env_is_not_read_from_os_environ_when_given(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKER_CONCURRENCY", "99")
    assert load(tmp_path, env={})["worker.concurrency"] == 10


# -- types --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "seconds"), [("100ms", 0.1), ("1s", 1.0), ("5m", 300.0), ("2h", 7200.0), ("90", 90.0)])
def test_durations(tmp_path, raw, seconds):
    assert load(tmp_path, env={"JOB_TIMEOUT": raw})["jobs.timeout"] == pytest.approx(seconds)


def test_toml_types(tmp_path):
    write(
        tmp_path / "bananas.toml",
        "[worker]\npriorities = ['LOW', 'high']\njob_types = 'a, b'\nscheduler_interval = 0.5\n"
        "enable_scheduler = 'off'\n[jobs]\ntimeout = '2h'\nretry_backoff_factor = 3\n",
    )
    s = load(tmp_path)
    assert s["worker.priorities"] == (Priority.LOW, Priority.HIGH)  # order kept, case folded
    assert s["worker.job_types"] == ("a", "b")
    assert s["worker.scheduler_interval"] == 0.5
    assert s["worker.enable_scheduler"] is False
    assert s["jobs.timeout"] == 7200.0
    assert s["jobs.retry_backoff_factor"] == 3.0 and isinstance(s["jobs.retry_backoff_factor"], float)


def test_warn_is_warning(tmp_path):
    assert load(tmp_path, env={"LOG_LEVEL": "WARN"})["logging.level"] == "warning"


# -- validation messages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["0", "1001"])
def test_concurrency_range(tmp_path, raw):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={"WORKER_CONCURRENCY": raw})
    assert str(info.value) == (
        f"invalid worker.concurrency = {raw} (from env WORKER_CONCURRENCY): must be an integer from 1 to 1000"
    )
    assert (info.value.key, info.value.value, info.value.source) == ("worker.concurrency", int(raw),
                                                                    "env WORKER_CONCURRENCY")


def test_concurrency_range_from_file_and_flag(tmp_path):
    write(tmp_path / "bananas.toml", "[worker]\nconcurrency = 5000\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value) == (
        "invalid worker.concurrency = 5000 (from file bananas.toml): must be an integer from 1 to 1000"
    )
    with pytest.raises(ConfigError) as info:
        load(elsewhere(tmp_path), overrides={"worker.concurrency": 0},
             override_sources={"worker.concurrency": "flag --concurrency"})
    assert str(info.value) == (
        "invalid worker.concurrency = 0 (from flag --concurrency): must be an integer from 1 to 1000"
    )


def test_concurrency_not_an_integer(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid worker.concurrency = 'ten' \(from env WORKER_CONCURRENCY\)"):
        load(tmp_path, env={"WORKER_CONCURRENCY": "ten"})
    with pytest.raises(ConfigError, match="must be an integer from 1 to 1000"):
        load(tmp_path, overrides={"worker.concurrency": 2.5})


@pytest.mark.parametrize("raw", ["50ms", "2m"])
def test_scheduler_interval_range(tmp_path, raw):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={"SCHEDULER_INTERVAL": raw})
    assert str(info.value) == (
        f"invalid worker.scheduler_interval = '{raw}' (from env SCHEDULER_INTERVAL): "
        "must be a duration from 100ms to 1m"
    )


def test_bad_duration(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={"JOB_TIMEOUT": "soon"})
    assert str(info.value) == (
        "invalid jobs.timeout = 'soon' (from env JOB_TIMEOUT): must be a duration greater than 0s "
        "(such as 100ms, 1s, 5m, 2h or a number of seconds)"
    )
    with pytest.raises(ConfigError, match="must be a duration greater than 0s"):
        load(tmp_path, env={"JOB_TIMEOUT": "0s"})


def test_bad_bool(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={"ENABLE_SCHEDULER": "maybe"})
    assert str(info.value) == (
        "invalid worker.enable_scheduler = 'maybe' (from env ENABLE_SCHEDULER): "
        "must be a boolean (true/false, 1/0, yes/no, on/off)"
    )


def test_bad_priority(tmp_path):
    write(tmp_path / "bananas.toml", "[worker]\npriorities = ['high', 'urgent']\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value) == (
        "invalid worker.priorities = ['high', 'urgent'] (from file bananas.toml): "
        "must be a non-empty list (TOML array or comma-separated) of: high, normal, low"
    )
    with pytest.raises(ConfigError, match="worker.priorities"):
        load(tmp_path / "x", env={"WORKER_PRIORITIES": ","})


def test_bad_enum_and_ranges(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid logging.format = 'xml' .*: must be one of: json, text$"):
        load(tmp_path, env={"LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match=r"invalid jobs.max_retries = 101 .*from 0 to 100$"):
        load(tmp_path, env={"MAX_RETRIES": "101"})
    with pytest.raises(ConfigError, match=r"invalid worker.processes = 65 .*from 1 to 64$"):
        load(tmp_path, env={"WORKER_PROCESSES": "65"})
    with pytest.raises(ConfigError, match=r"invalid worker.high_count = -1 .*of at least 0$"):
        load(tmp_path, env={"WORKER_HIGH_COUNT": "-1"})


def test_bad_types_in_toml(tmp_path):
    write(tmp_path / "bananas.toml", "[worker]\nmode = 5\n")
    with pytest.raises(ConfigError, match=r"invalid worker.mode = 5 .*must be a non-empty string"):
        load(tmp_path)
    write(tmp_path / "bananas.toml", "[worker]\njob_types = [1, 2]\n")
    with pytest.raises(ConfigError, match=r"invalid worker.job_types = \[1, 2\]"):
        load(tmp_path)
    write(tmp_path / "bananas.toml", "[worker]\nconcurrency = true\n")
    with pytest.raises(ConfigError, match="worker.concurrency = True"):
        load(tmp_path)


def test_broker_must_be_a_url(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid broker = 'localhost' \(from env BANANAS_BROKER\): must be a URL"):
        load(tmp_path, env={"BANANAS_BROKER": "localhost"})


def test_unknown_key_with_suggestion(tmp_path):
    write(tmp_path / "bananas.toml", "[worker]\nconcurency = 5\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    message = str(info.value)
    assert message.startswith(
        "invalid worker.concurency = 5 (from file bananas.toml): unknown key; did you mean 'worker.concurrency'? "
        "allowed keys in [worker]: broker_wait, concurrency, enable_scheduler,"
    )
    assert info.value.key == "worker.concurency"


def test_unknown_top_level_key_and_table(tmp_path):
    write(tmp_path / "bananas.toml", "brokr = 'memory://'\n")
    with pytest.raises(ConfigError, match="did you mean 'broker'\\? allowed keys at the top level: broker,"):
        load(tmp_path)
    write(tmp_path / "bananas.toml", "[wroker]\nconcurrency = 5\n")
    with pytest.raises(ConfigError, match="invalid wroker = .*did you mean 'worker'"):
        load(tmp_path)


def test_unknown_override_key(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid jobs.timout = '1s' \(from flag --timeout\).*'jobs.timeout'"):
        load(tmp_path, overrides={"jobs.timout": "1s"}, override_sources={"jobs.timout": "flag --timeout"})


def test_unknown_key_value_of_secret_is_redacted(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, overrides={"jobs.api_token": "hunter2"})
    assert "hunter2" not in str(info.value)


def test_secret_value_is_redacted_in_errors(tmp_path):
    write(tmp_path / "bananas.toml", "signing_key = 12345\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert "12345" not in str(info.value) and "'***'" in str(info.value)


# -- broker, tables, tiers ---------------------------------------------------------------------------------------


def test_broker_defaults_to_redis_url(tmp_path):
    s = load(tmp_path, env={"REDIS_URL": "redis://redis:6379"})
    assert (s["broker"], s.source("broker")) == ("redis://redis:6379", "env REDIS_URL")
    write(tmp_path / "bananas.toml", "redis_url = 'redis://file:6379'\n")
    s = load(tmp_path)
    assert (s["broker"], s.source("broker")) == ("redis://file:6379", "file bananas.toml")


def test_broker_and_redis_url_one_rule_the_stronger_source_wins_then_broker(tmp_path):
    # The file sets both: broker wins
    write(tmp_path / "bananas.toml", "broker = 'memory://file'\nredis_url = 'redis://file:6379'\n")
    s = load(tmp_path)
    assert (s["broker"], s.source("broker")) == ("memory://file", "file bananas.toml")
    # REDIS_URL in the environment beats the file's broker (the environment beats the file, for every key)
    s = load(tmp_path, env={"REDIS_URL": "redis://redis:6379"})
    assert (s["broker"], s.source("broker")) == ("redis://redis:6379", "env REDIS_URL")
    # Both in the environment: BANANAS_BROKER wins
    s = load(tmp_path, env={"REDIS_URL": "redis://redis:6379", "BANANAS_BROKER": "memory://env"})
    assert (s["broker"], s.source("broker")) == ("memory://env", "env BANANAS_BROKER")
    # An argument beats both
    s = load(tmp_path, env={"REDIS_URL": "redis://redis:6379"}, overrides={"broker": "memory://arg"})
    assert (s["broker"], s.source("broker")) == ("memory://arg", "argument")
    # Nothing set: redis_url's default
    assert load(elsewhere(tmp_path))["broker"] == "redis://localhost:6379"


def test_free_tables_pass_through(tmp_path):
    write(
        tmp_path / "bananas.toml",
        "[routes]\nsend_email = 'emails'\n'app.tasks.report' = 'reports'\n"
        "[broker_options]\nlease = '30s'\nmax_crash_deliveries = 5\n[broker_options.ssl]\nca = '/ca.pem'\n"
        "[result_backend_options]\nttl = 60\n",
    )
    s = load(tmp_path, overrides={"routes.resize": "images"})
    assert s.table("routes") == {"send_email": "emails", "app.tasks.report": "reports", "resize": "images"}
    assert s.source("routes.resize") == "argument"
    assert s.table("broker_options") == {"lease": "30s", "max_crash_deliveries": 5, "ssl": {"ca": "/ca.pem"}}
    assert s.table("result_backend_options") == {"ttl": 60}
    assert s["routes.app.tasks.report"] == "reports"


def test_route_must_be_a_string(tmp_path):
    write(tmp_path / "bananas.toml", "[routes]\nsend_email = 5\n")
    with pytest.raises(ConfigError, match=r"invalid routes.send_email = 5 .*must be a queue name"):
        load(tmp_path)


def test_logging_tiers_and_pass_through_keys(tmp_path):
    write(
        tmp_path / "bananas.toml",
        "[logging]\nlevel = 'debug'\n[logging.file]\nenabled = true\nrotation = 'daily'\n"
        "[logging.loki]\nenabled = 'yes'\nurl = 'http://loki:3100'\n",
    )
    s = load(tmp_path)
    assert s.logging_tiers() == ["file", "elasticsearch", "loki"]
    file_table = s.table("logging.file")
    assert file_table["enabled"] is True and file_table["rotation"] == "daily"
    assert file_table["path"] == "/var/log/bananas/bananas.log" and file_table["max_backups"] == 10
    assert s.table("logging.loki") == {"enabled": True, "url": "http://loki:3100"}
    assert s.table("logging.elasticsearch")["enabled"] is False
    assert s.table("logging.absent") == {}
    assert load(elsewhere(tmp_path)).logging_tiers() == ["file", "elasticsearch"]


def test_unknown_tier_enabled_must_be_bool(tmp_path):
    write(tmp_path / "bananas.toml", "[logging.loki]\nenabled = 'sometimes'\n")
    with pytest.raises(ConfigError, match=r"invalid logging.loki.enabled = 'sometimes'.*must be a boolean"):
        load(tmp_path)


def test_unknown_key_directly_in_logging(tmp_path):
    write(tmp_path / "bananas.toml", "[logging]\nlevle = 'debug'\n")
    with pytest.raises(ConfigError, match="did you mean 'logging.level'"):
        load(tmp_path)


def test_get_table_and_unknown(tmp_path):
    s = load(tmp_path)
    assert s.get("worker.nope") is None and s.get("worker.nope", 5) == 5
    with pytest.raises(KeyError):
        s["worker.nope"]
    with pytest.raises(KeyError):
        s.source("worker.nope")
    with pytest.raises(KeyError):
        s.table("nope")
    assert s["worker"]["concurrency"] == 10
    assert s.table("worker")["priorities"] == (Priority.HIGH, Priority.NORMAL, Priority.LOW)


def test_settings_are_immutable(tmp_path):
    write(tmp_path / "bananas.toml", "[broker_options.ssl]\nca = '/ca.pem'\n")
    s = load(tmp_path)
    s.table("broker_options")["ssl"]["ca"] = "changed"
    s["broker_options.ssl"]["ca"] = "changed"
    assert s["broker_options.ssl"] == {"ca": "/ca.pem"}
    with pytest.raises(AttributeError):
        s.config_file = "x"  # type: ignore[misc]


# -- as_dict, explain, redaction ------------------------------------------------------------------------------------


def test_redact_url():
    assert redact_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://user:pw@host") == "redis://user:***@host"
    assert redact_url("redis://host:6379") == "redis://host:6379"
    assert redact_url("memory://") == "memory://"
    assert redact_url("a rediss://u:p@h and amqp://x:y@z") == "a rediss://u:***@h and amqp://x:***@z"


def test_redaction_in_as_dict_and_explain(tmp_path):
    write(tmp_path / "bananas.toml", "[broker_options]\npassword = 'opt-pw'\n[logging.loki]\ntoken = 'loki-tok'\n")
    env = {
        "REDIS_URL": "redis://:hunter2@redis:6379/0",
        "BANANAS_RESULT_BACKEND": "redis://bob:pw2@redis:6379/1",
        "BANANAS_SIGNING_KEY": "sign-me",
        "LOG_ES_PASSWORD": "es-pw",
        "LOG_ES_API_KEY": "es-key",
        "LOG_ES_ADDRESSES": "https://elastic:es-url-pw@es1:9200,https://es2:9200",
    }
    s = load(tmp_path, env=env)
    data = s.as_dict()
    text = json.dumps(data) + json.dumps(s.explain())
    for secret in ("hunter2", "pw2", "sign-me", "es-pw", "es-key", "es-url-pw", "opt-pw", "loki-tok"):
        assert secret not in text
    assert data["broker"] == "redis://:***@redis:6379/0"
    assert data["redis_url"] == "redis://:***@redis:6379/0"
    assert data["result_backend"] == "redis://bob:***@redis:6379/1"
    assert data["signing_key"] == "***"
    es = data["logging"]["elasticsearch"]
    assert (es["password"], es["api_key"]) == ("***", "***")
    assert es["addresses"] == ["https://elastic:***@es1:9200", "https://es2:9200"]
    assert data["broker_options"] == {"password": "***"}
    assert data["logging"]["loki"] == {"token": "***"}

    raw = s.as_dict(redact=False)
    assert raw["signing_key"] == "sign-me" and raw["broker"] == "redis://:hunter2@redis:6379/0"
    assert {row["key"]: row["value"] for row in s.explain(redact=False)}["signing_key"] == "sign-me"
    assert s["signing_key"] == "sign-me"  # typed access is never redacted


def test_unset_secrets_stay_none(tmp_path):
    data = load(tmp_path).as_dict()
    assert data["signing_key"] is None and data["logging"]["elasticsearch"]["password"] is None


def test_as_dict_is_json_and_complete(tmp_path):
    s = load(tmp_path)
    data = json.loads(json.dumps(s.as_dict()))
    assert data["worker"]["priorities"] == ["high", "normal", "low"]
    assert data["worker"]["scheduler_interval"] == 1.0
    assert data["routes"] == {} and data["broker_options"] == {}
    for spec in ALL_KEYS:
        node = data
        for part in spec.key.split("."):
            node = node[part]


def test_explain_rows_carry_sources(tmp_path):
    write(tmp_path / "bananas.toml", "serializer = 'json'\n[routes]\nsend_email = 'emails'\n")
    s = load(
        tmp_path,
        env={"WORKER_CONCURRENCY": "20", "REDIS_URL": "redis://r:6379"},
        overrides={"worker.mode": "thin"},
        override_sources={"worker.mode": "flag --mode"},
    )
    rows = s.explain()
    keys = [row["key"] for row in rows]
    assert keys == sorted(keys)
    assert all(set(row) == {"key", "value", "source"} for row in rows)
    by_key = {row["key"]: row for row in rows}
    assert by_key["worker.concurrency"] == {
        "key": "worker.concurrency",
        "value": 20,
        "source": "env WORKER_CONCURRENCY",
    }
    assert by_key["worker.mode"]["source"] == "flag --mode"
    assert by_key["serializer"]["source"] == "file bananas.toml"
    assert by_key["routes.send_email"] == {"key": "routes.send_email", "value": "emails", "source": "file bananas.toml"}
    assert by_key["broker"] == {"key": "broker", "value": "redis://r:6379", "source": "env REDIS_URL"}
    assert by_key["jobs.timeout"] == {"key": "jobs.timeout", "value": 300.0, "source": "default"}
    assert {spec.key for spec in ALL_KEYS} <= set(by_key)
    json.dumps(rows)


# -- schema and docs ----------------------------------------------------------------------------------------------


def test_schema_is_well_formed():
    keys = [spec.key for spec in ALL_KEYS]
    assert len(keys) == len(set(keys))
    for spec in ALL_KEYS:
        assert spec.help and spec.type
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in spec.env)
        assert spec.allowed()
    secrets = {spec.key for spec in ALL_KEYS if spec.secret}
    assert secrets == {
        "signing_key", "signing_keys_old", "logging.elasticsearch.password", "logging.elasticsearch.api_key"
    }


def test_docs_list_every_key_and_env_var():
    text = DOCS.read_text(encoding="utf-8")
    for spec in SETTINGS_KEYS:
        assert f"`{spec.key}`" in text, spec.key
        for name in spec.env:
            assert f"`{name}`" in text, name


def test_enum_values_ignore_case_and_a_typo_gets_did_you_mean(tmp_path):
    assert load(tmp_path, env={"LOG_LEVEL": "DEBUG", "LOG_FORMAT": "Json"})["logging.format"] == "json"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={"LOG_LEVEL": "infoo"})
    assert str(info.value) == (
        "invalid logging.level = 'infoo' (from env LOG_LEVEL): must be one of: debug, info, warn, warning, error; "
        "did you mean 'info'?"
    )


def test_result_backend_accepts_none_in_any_case_and_explains_what_is_allowed(tmp_path):
    assert load(tmp_path, env={"BANANAS_RESULT_BACKEND": "NONE"})["result_backend"] == "none"
    with pytest.raises(ConfigError, match=r"must be a URL with a scheme, .* or 'none'$"):
        load(tmp_path, env={"BANANAS_RESULT_BACKEND": "nothing"})
