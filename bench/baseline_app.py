"""The baseline handlers: what a robot handler built on the official SDK's framework helper does.

    python bench/baseline_app.py --port P --rest-url http://127.0.0.1:S/oauth-server/rest/ --client-id local.x.y

`--rest-url` is the OAuth server's REST endpoint (its app.info is the one with client_id).

POST /robot  parse the form, validate it by calling the OAuth server's `app.info` with the request's token (as
             b24pysdk's `workflow_dependency(bitrix_app=...)` does, but with a non-blocking client),
             compare member_id, domain and client_id, answer 200. Nothing is stored.
POST /direct the same, then answer the robot at once with one `bizproc.event.send` (no journal, no
             queue): the floor of end-to-end latency.
POST /noop   read the body and answer 200: the ceiling of the HTTP stack and the load generator.
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from b24robots.inbound.formcodec import decode_form


def install_endpoint(auth: dict[str, Any]) -> str:
    return str(auth.get("client_endpoint") or "")


def create_baseline(rest_url: str, client_id: str) -> FastAPI:
    app = FastAPI()
    http = httpx.AsyncClient(timeout=15.0, limits=httpx.Limits(max_connections=200))

    async def validated(request: Request) -> tuple[dict[str, Any], dict[str, Any]] | None:
        form = decode_form(await request.body())
        auth = form.get("auth")
        if not isinstance(auth, dict) or not auth.get("access_token"):
            return None
        try:
            answer = await http.get(f"{rest_url}app.info", params={"auth": auth["access_token"]})
            info = answer.json().get("result") if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        install = info.get("install") if isinstance(info, dict) else None
        if not isinstance(install, dict) or info is None:
            return None
        same = install.get("member_id") == auth.get("member_id") and install.get("domain") == auth.get("domain")
        return (form, auth) if same and info.get("client_id") == client_id else None

    @app.post("/robot")
    async def robot(request: Request) -> JSONResponse:
        ok = await validated(request)
        return JSONResponse({"status": "ok"} if ok else {"error": "invalid auth"}, status_code=200 if ok else 401)

    @app.post("/direct")
    async def direct(request: Request) -> JSONResponse:
        ok = await validated(request)
        if not ok:
            return JSONResponse({"error": "invalid auth"}, status_code=401)
        form, auth = ok
        props = form.get("properties") or {}
        values = {"total": round(float(props.get("amount", 0)) * 1.2, 2), "note": str(props.get("note", ""))}
        params = {"event_token": form["event_token"], "return_values": values, "auth": auth["access_token"]}
        # the answer goes to the portal (the OAuth server only vouches for the token)
        sent = await http.post(f"{install_endpoint(auth)}bizproc.event.send", json=params)
        return JSONResponse({"status": "answered" if sent.status_code == 200 else "failed"})

    @app.post("/noop")
    async def noop(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "ok"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rest-url", required=True, help="the (simulated) OAuth server's /rest/ URL")
    parser.add_argument("--client-id", required=True)
    args = parser.parse_args()
    app = create_baseline(args.rest_url, args.client_id)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
