"""Django settings, read from the environment.

Every value an operator may set is an environment variable; a bad value raises
`ImproperlyConfigured` at start-up instead of being silently replaced.

| variable            | default                                        |
|---------------------|------------------------------------------------|
| DEBUG               | false                                          |
| SECRET_KEY          | required unless DEBUG (a dev key is used then) |
| ALLOWED_HOSTS       | localhost,127.0.0.1 (comma separated)          |
| DATABASE_URL        | sqlite:///<repo>/var/db.sqlite3 (WAL mode)     |
| CELERY_BROKER_URL   | sqla+sqlite:///<repo>/var/celery-broker.sqlite |
| CELERY_RESULT_BACKEND | db+sqlite:///<repo>/var/celery-results.sqlite |
| TRAINING_QUEUE      | gpu                                            |
| TRAINING_HEARTBEAT_S | 10 (a running task writes its heartbeat)      |
| TRAINING_STALE_AFTER_S | 120 (no heartbeat for this long: failed)    |
| TRAINING_FLUSH_S    | 0.5 (metrics/progress batch interval)          |
| TRAINING_NUM_GPUS   | 1 (>1: runs go through `accelerate launch`)    |
| TRAINING_LAUNCH     | auto (`accelerate`: always a subprocess)       |
| ARTIFACTS_ROOT      | <repo>/var/artifacts                           |
| MAX_UPLOAD_MB       | 200                                            |
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")) or BASE_DIR / "var")
# The default SQLite files (database, broker, results) live here; SQLite cannot
# create a missing directory, so make it before anything opens them.
VAR_DIR.mkdir(parents=True, exist_ok=True)
# STATIC_ROOT: whitenoise warns on every request when it is missing.
(VAR_DIR / "static").mkdir(exist_ok=True)

DEBUG = env_bool("DEBUG", False)

_secret = env_str("SECRET_KEY")
if not _secret:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (set DEBUG=1 for development)"
        )
    _secret = "dev-only-insecure-key-do-not-use-in-production"
SECRET_KEY: str = _secret

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "template_partials",
    "annotate",
    "training",
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
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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


def _database_from_url(url: str) -> dict:
    """Parse DATABASE_URL; only SQLite and PostgreSQL are supported."""
    try:
        config = dj_database_url.parse(url, conn_max_age=60)
    except Exception as exc:  # dj_database_url raises bare ValueErrors/KeyErrors
        raise ImproperlyConfigured(f"DATABASE_URL={url!r} cannot be parsed: {exc}") from exc
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.sqlite3":
        # WAL lets readers proceed during a write; IMMEDIATE takes the write lock
        # at BEGIN so two annotators never deadlock upgrading a read lock.
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
        config["CONN_MAX_AGE"] = 0
    elif engine != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            f"DATABASE_URL={url!r} selects {engine or 'an unknown engine'}; use sqlite:/// or postgres://"
        )
    return config


DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {"default": _database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "annotate.User"
AUTHENTICATION_BACKENDS = ["annotate.auth.HumanOnlyBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve from the finders in dev and tests so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True

MAX_UPLOAD_MB = env_int("MAX_UPLOAD_MB", 200, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_MB * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

ARTIFACTS_ROOT = Path(env_str("ARTIFACTS_ROOT") or VAR_DIR / "artifacts")

# --- Celery -----------------------------------------------------------------
# Embedded default: kombu's SQLAlchemy transport on a SQLite file, so the demo
# needs no server. Production points these at Redis or RabbitMQ.
CELERY_BROKER_URL = (
    env_str("CELERY_BROKER_URL") or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite'}"
)
CELERY_RESULT_BACKEND = (
    env_str("CELERY_RESULT_BACKEND") or f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite'}"
)
_broker_schemes = (
    "sqla+",
    "redis://",
    "rediss://",
    "amqp://",
    "pyamqp://",
    "filesystem://",
    "memory://",
)
if not CELERY_BROKER_URL.startswith(_broker_schemes):
    raise ImproperlyConfigured(f"CELERY_BROKER_URL={CELERY_BROKER_URL!r} has an unsupported scheme")
TRAINING_QUEUE = env_str("TRAINING_QUEUE") or "gpu"
# Run supervision (training/services_runs.py and run_job.py read these and
# validate them; None means "use the documented default").
TRAINING_HEARTBEAT_S = env_str("TRAINING_HEARTBEAT_S")
TRAINING_STALE_AFTER_S = env_str("TRAINING_STALE_AFTER_S")
TRAINING_FLUSH_S = env_str("TRAINING_FLUSH_S")
TRAINING_NUM_GPUS = env_int("TRAINING_NUM_GPUS", 1, minimum=1)
TRAINING_LAUNCH = env_str("TRAINING_LAUNCH") or "auto"
if TRAINING_LAUNCH not in ("auto", "accelerate"):
    raise ImproperlyConfigured(f"TRAINING_LAUNCH={TRAINING_LAUNCH!r}: use auto or accelerate")
CELERY_TASK_ROUTES = {"training.tasks.*": {"queue": TRAINING_QUEUE}}
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ACKS_LATE = False  # training is never retried automatically
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- REST framework ---------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pairwise API",
    "DESCRIPTION": "Preference labeling, agreement reports, exports and training runs.",
    "VERSION": "1",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
}

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
