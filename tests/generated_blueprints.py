"""Blueprints made by code: large systems for scale tests and benchmarks."""

from __future__ import annotations

FIELD_KINDS = [
    {"type": "string", "required": True, "max_length": 80},
    {"type": "integer", "minimum": 0},
    {"type": "number"},
    {"type": "boolean", "default": False},
    {"type": "date"},
    {"type": "datetime"},
    {"type": "uuid"},
    {"type": "json"},
    {"type": "text"},
    {"type": "string", "enum": ["a", "b", "c"]},
]


def large_blueprint(components: int, name: str = "large_system") -> dict:
    """components/2 stores, each served by one endpoint; names of every length up to 63."""
    stores = components // 2
    result = []
    for index in range(stores):
        store = f"store_{index}" if index else "s" * 57 + "_store"  # a 63-character name
        fields = {
            f"field_{n}": dict(FIELD_KINDS[n % len(FIELD_KINDS)]) for n in range(index % 7 + 1)
        }
        if index % 5 == 4:
            fields = None
        config = {"fields": fields} if fields else {}
        result.append({"name": store, "type": "store", "config": config})
        endpoint = f"api_{index}" if index else "e" * 59 + "_api"
        result.append(
            {
                "name": endpoint,
                "type": "api_endpoint",
                "config": {"store": store, "path": f"/v1/items-{index}"},
            }
        )
    return {"schema_version": 1, "system": {"name": name}, "components": result}
