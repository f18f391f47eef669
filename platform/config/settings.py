"""Portico control-plane settings. Everything comes from the environment; defaults are the
embedded quick start (SQLite and a filesystem broker under var/), which needs no server.

Secrets can be given as VAR or as VAR_FILE (a path whose content is the value), as Docker and
Kubernetes secrets are mounted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parents[2]
VAR_DIR = Path(os.environ.get("PORTICO_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_secret(name: str, default: str | None = None) -> str:
    """VAR, or the content of the file named by VAR_FILE. Without a default the value is required."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    value = os.environ.get(name)
    if value:
        return value
    if default is None:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set")
    return default


DEBUG = env_bool("PORTICO_DEBUG", False)
PRODUCTION = env_bool("PORTICO_PRODUCTION", False)

# In production every secret is required; the quick start uses fixed development values so that a
# fresh clone runs with no setup. They are visible in this file and must never reach a deployment.
_dev = None if PRODUCTION else "dev-insecure-"
SECRET_KEY = env_secret("PORTICO_SECRET_KEY", _dev and _dev + "django-secret-key-change-me-0123456789")
# Shared by the control plane and every proxy worker: signs snapshots, encrypts keys inside them.
FLEET_KEY = env_secret("PORTICO_FLEET_KEY", _dev and _dev + "fleet-key-0123456789abcdef")
# Encrypts private keys and other secrets at rest in the database (comma-separated: the first
# encrypts, all decrypt, so keys can be rotated).
DATA_KEYS = env_list("PORTICO_DATA_KEYS") or [
    env_secret("PORTICO_DATA_KEY", _dev and _dev + "data-key-0123456789abcdef")
]

# Seals the audit log's hash chain (HMAC-SHA256): whoever can write to the database but does not
# hold this key cannot rewrite events and recompute the chain. Comma-separated: the first seals new
# events, all verify (rotation). By default derived from the secret key.
AUDIT_KEYS = env_list("PORTICO_AUDIT_KEYS") or [
    hmac.new(SECRET_KEY.encode(), b"portico audit chain", hashlib.sha256).hexdigest()
]

ALLOWED_HOSTS = env_list("PORTICO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("PORTICO_CSRF_TRUSTED_ORIGINS")
BASE_URL = env_str("PORTICO_BASE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc assets, served locally (no CDN)
    "tenancy",
    "audit",
    "edge",
    "certs",
    "fleet",
    "traffic",
    "api",
    "advisor",
    "frontend",
    # after frontend, so the dashboard's templates override allauth's
    "allauth",
    "allauth.account",
    "allauth.mfa",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "audit.middleware.RequestContextMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portico.sqlite3'}"),
        conn_max_age=env_int("PORTICO_DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The quick start runs web, Celery and beat against one file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "tenancy.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- security (production mode makes `manage.py check --deploy` clean) ---------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("PORTICO_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("PORTICO_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("PORTICO_HSTS_PRELOAD", False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- accounts (django-allauth): email sign-in, verified addresses, TOTP with recovery codes ------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "frontend:home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Portico] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if PRODUCTION else "http"
# Login throttling: allauth's defaults, written out so they are visible and tunable.
ACCOUNT_RATE_LIMITS = {
    "login_failed": env_str("PORTICO_LOGIN_FAILED_RATE", "10/m/ip,5/5m/key"),
    "login": "30/m/ip",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "confirm_email": "1/3m/key",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Portico"

# --- email: files under var/mail by default (the quick start and tests read them), SMTP when set -
DEFAULT_FROM_EMAIL = env_str("PORTICO_EMAIL_FROM", "Portico <portico@localhost>")
if env_str("PORTICO_SMTP_HOST"):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": env_str("PORTICO_SMTP_HOST"),
                "port": env_int("PORTICO_SMTP_PORT", 587),
                "username": env_str("PORTICO_SMTP_USER") or None,
                "password": env_secret("PORTICO_SMTP_PASSWORD", "") or None,
                "use_tls": env_bool("PORTICO_SMTP_STARTTLS", True),
                "use_ssl": env_bool("PORTICO_SMTP_SSL", False),
                "timeout": 20,
            },
        }
    }
elif PRODUCTION:
    raise ImproperlyConfigured("PORTICO_SMTP_HOST must be set in production: sign-up and invitations send email")
else:
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "OPTIONS": {"file_path": env_str("PORTICO_MAIL_DIR", str(VAR_DIR / "mail"))},
        }
    }

# --- Content-Security-Policy (Django's own): no inline script or style, nothing from elsewhere --
from django.utils.csp import CSP  # noqa: E402

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],  # the TOTP QR code is a data: URI
    "connect-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}

# --- Celery -------------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "portico-fs://")
if CELERY_BROKER_URL.startswith(("portico-fs://", "filesystem://")):
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "control_folder": str(BROKER_DIR / "control"),  # fanout bindings; relative to cwd otherwise
        # 10 ms polling: ~7 ms delivery at ~1 % idle CPU per consumer (measured; default 1 s).
        "polling_interval": 0.01,
    }
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Acknowledge on receipt (Celery's default). Late acks were tried: an ack racing a broker restart
# hits a kombu bug (AttributeError in the Redis transport's reconnect) that left the worker's
# consumer dead. Every task here is safe to lose: publishes are re-driven by beat's periodic
# publish, agents repeat hello and heartbeats, certificate issuance is swept and resumed.
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict = {}

# --- Portico ------------------------------------------------------------------------------------
AUDIT_RETENTION_DAYS = env_int("PORTICO_AUDIT_RETENTION_DAYS", 365)
# SSRF guard: networks and names no tenant's backend may point at (cloud metadata, link-local,
# unspecified, multicast). Loopback and private ranges stay allowed: origins often live there.
BACKEND_DENY_NETWORKS = [
    ipaddress.ip_network(n)
    for n in env_list(
        "PORTICO_BACKEND_DENY_NETWORKS",
        "169.254.0.0/16,fe80::/10,0.0.0.0/8,::/128,224.0.0.0/4,ff00::/8,100.100.100.200/32,fd00:ec2::254/128",
    )
]
BACKEND_DENY_HOSTNAMES = env_list("PORTICO_BACKEND_DENY_HOSTNAMES", "metadata.google.internal,metadata,instance-data")
# Safety net for publishes that could not be enqueued (broker down): cheap when nothing is pending.
CELERY_BEAT_SCHEDULE["fleet-publish-pending"] = {"task": "fleet.publish", "schedule": 10.0}
CELERY_BEAT_SCHEDULE["security-checkup"] = {"task": "advisor.checkup_all", "schedule": 24 * 3600.0}
CELERY_BEAT_SCHEDULE["audit-retention"] = {"task": "audit.tasks.apply_retention", "schedule": 3600.0}

# --- Certificates -------------------------------------------------------------------------------
# ACME directory: "letsencrypt", "letsencrypt-staging", or any directory URL (pebble in tests).
# Production defaults to Let's Encrypt. Elsewhere ACME is off unless set (a laptop cannot pass
# HTTP-01 anyway); internal names and internal-CA sites get certificates either way.
ACME_DIRECTORY = env_str("PORTICO_ACME_DIRECTORY", "letsencrypt" if PRODUCTION else "")
ACME_CA_BUNDLE = env_str("PORTICO_ACME_CA_BUNDLE", "")  # CA file that verifies the ACME server (pebble's)
ACME_EMAIL = env_str("PORTICO_ACME_EMAIL", "")  # the CA's expiry and policy mails go here
ACME_ACCOUNT_PER_ORG = env_bool("PORTICO_ACME_ACCOUNT_PER_ORG", False)  # default: one account for the platform
ACME_ROLLOUT_TIMEOUT = env_int("PORTICO_ACME_ROLLOUT_TIMEOUT", 30)  # seconds for tokens to reach every online worker
CELERY_BEAT_SCHEDULE["certs-renew"] = {"task": "certs.renew_due", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["certs-sweep"] = {"task": "certs.sweep", "schedule": 30.0}

# --- REST API -----------------------------------------------------------------------------------
# Requests per API token (or signed-in person, or client address when anonymous): "600/min",
# "20/s", "10000/hour". Counted in the default cache: set PORTICO_CACHE_URL when several web
# processes serve the API.
PORTICO_API_RATE = env_str("PORTICO_API_RATE", "600/min")
if env_str("PORTICO_CACHE_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": env_str("PORTICO_CACHE_URL")}}
CELERY_BEAT_SCHEDULE["api-idempotency-keys"] = {"task": "api.expire_idempotency_keys", "schedule": 3600.0}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "api.schema.PorticoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.CredentialRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "api.ordering.StrictOrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Portico API",
    "DESCRIPTION": "Automate sites, backends, certificates and policies on a Portico platform. "
    "Authenticate with an organization's API token (`Authorization: Bearer pt_...`) or a dashboard session.",
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "SiteStateEnum": "edge.models.Site.State",
        "BackendStateEnum": "edge.models.Backend.State",
        "PolicyKindEnum": "edge.models.Policy.Kind",
        "PurgeKindEnum": "edge.models.Purge.Kind",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_components",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("PORTICO_LOG_LEVEL", "INFO")},
}

# --- Traffic (metrics, inspector, alerts) ----------------------------------------------------------
TRAFFIC_MINUTE_HOURS = env_int("PORTICO_TRAFFIC_MINUTE_HOURS", 48)  # minute rollups; then hours only
TRAFFIC_RETENTION_DAYS = env_int("PORTICO_TRAFFIC_RETENTION_DAYS", 30)  # hourly rollups
TRAFFIC_SAMPLE_DAYS = env_int("PORTICO_TRAFFIC_SAMPLE_DAYS", 7)  # inspector samples
# Replay of an inspected request, sent by the control plane itself (traffic/replay.py): per
# organization and minute, seconds to wait, KiB of the answer's body shown. Backend addresses also
# pass BACKEND_DENY_NETWORKS and these networks, for replays only: the control plane's own
# neighbours (its database, broker, admin services) which workers' backends may use but replays may not.
PORTICO_REPLAY_PER_MINUTE = env_int("PORTICO_REPLAY_PER_MINUTE", 30)
PORTICO_REPLAY_TIMEOUT = env_int("PORTICO_REPLAY_TIMEOUT", 10)
PORTICO_REPLAY_BODY_KIB = env_int("PORTICO_REPLAY_BODY_KIB", 64)
REPLAY_DENY_NETWORKS = [ipaddress.ip_network(n) for n in env_list("PORTICO_REPLAY_DENY_NETWORKS", "")]
# /metrics (Prometheus) on the platform: open from loopback; from elsewhere only with
# "Authorization: Bearer <PORTICO_METRICS_TOKEN>". Empty token: loopback only.
METRICS_TOKEN = env_str("PORTICO_METRICS_TOKEN", "")
CELERY_BEAT_SCHEDULE["traffic-downsample"] = {"task": "traffic.downsample", "schedule": 300.0}
CELERY_BEAT_SCHEDULE["traffic-retention"] = {"task": "traffic.apply_retention", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["traffic-alerts"] = {"task": "traffic.evaluate_alerts", "schedule": 30.0}
