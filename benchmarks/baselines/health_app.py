"""Baseline A: the smallest Flask service there is, with one JSON health check."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
