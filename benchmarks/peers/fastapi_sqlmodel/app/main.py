"""Peer: FastAPI + SQLModel as full-stack-fastapi-template writes it (benchmarks/peers.py).

Run from the directory above: uvicorn app.main:app --workers 2 --loop uvloop --http httptools
"""

from fastapi import FastAPI

from app.api.main import api_router

app = FastAPI(title="orders")


@app.get("/health")
async def health() -> dict[str, str]:  # for the benchmark's start-up poll only
    return {"status": "ok"}


app.include_router(api_router)
