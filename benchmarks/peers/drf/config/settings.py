"""Peer: Django REST framework as cookiecutter-django sets it up (benchmarks/peers.py).

One settings module holding what cookiecutter-django's config/settings/base.py and
production.py set that matters here: DATABASES from DATABASE_URL with ATOMIC_REQUESTS (base)
and CONN_MAX_AGE 60 (production), DEBUG off, ALLOWED_HOSTS, USE_TZ with UTC, BigAutoField ids,
Django's default middleware. Left out: what a local benchmark cannot use or does not reach
(HTTPS redirects and cookies, static files, e-mail, caches, allauth, Sentry).
"""

import os
from urllib.parse import unquote, urlsplit

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "benchmark-peer-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

# DATABASES: cookiecutter-django reads DATABASE_URL with django-environ's env.db(); the same
# parts here with urllib.
_url = urlsplit(os.environ["DATABASE_URL"])
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        "ATOMIC_REQUESTS": True,
        "CONN_MAX_AGE": int(os.environ.get("CONN_MAX_AGE", "60")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "orders",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# DRF: cookiecutter-django adds session and token authentication and IsAuthenticated; the
# orders API is open (as the blueprint's auth: none), so the viewset allows anyone.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ("rest_framework.authentication.SessionAuthentication",),
    "DEFAULT_PERMISSION_CLASSES": ("rest_framework.permissions.IsAuthenticated",),
}
