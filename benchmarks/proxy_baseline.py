"""A minimal FastAPI + httpx pass-through proxy for ``POST /v1/chat/completions``: the yardstick for daehwa's /v1.

No authentication, no validation beyond JSON, no store; uvicorn's defaults (access log at info): the request body
goes to the upstream as is and the upstream's answer comes back (streamed chunk by chunk with ``stream: true``).
``bench_gateway.py`` runs it in its own process next to ``daehwa serve`` so the CPU per request of both is measured
side by side in one run.

    python benchmarks/proxy_baseline.py --upstream http://127.0.0.1:PORT/v1 --port 8100
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse


def create_proxy(upstream: str) -> FastAPI:
    app = FastAPI()
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    client = httpx.AsyncClient(base_url=upstream, timeout=60, limits=limits)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        if body.get("stream"):
            upstream_request = client.build_request("POST", "/chat/completions", json=body)
            answer = await client.send(upstream_request, stream=True)

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in answer.aiter_raw():
                        yield chunk
                finally:
                    await answer.aclose()

            return StreamingResponse(relay(), status_code=answer.status_code, media_type="text/event-stream")
        answer = await client.post("/chat/completions", json=body)
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, ending in /v1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_proxy(args.upstream), host="127.0.0.1", port=args.port, log_level="info")


if __name__ == "__main__":
    main()
