"""The project keeps its blueprint twice: blueprint.yaml (what it was generated from, for
people and the generator) and config/system_config.yaml (what the service reads at start-up).
This proves the two say the same about every store and endpoint."""

from __future__ import annotations

from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent


def _read(relative: str) -> dict:
    return yaml.safe_load((PROJECT / relative).read_text(encoding="utf-8"))


def test_system_config_says_what_the_blueprint_says():
    blueprint = _read("blueprint.yaml")
    config = _read("config/system_config.yaml")
    assert config["system"] == blueprint["system"]
    stores, endpoints = {}, {}
    for component in blueprint["components"]:
        settings = component["config"]
        if component["type"] == "store":
            stores[component["name"]] = {
                "table": settings["table"],
                "fields": settings.get("fields"),  # none: a store of JSON documents
            }
        else:
            endpoints[component["name"]] = settings
    assert config["stores"] == stores
    assert config["endpoints"] == endpoints
    assert config["stores"] and config["endpoints"]
