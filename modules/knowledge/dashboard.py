"""The operations routes: the dashboard (/dashboard, in Japanese, refreshing by itself) and Prometheus
metrics (/metrics), for the standalone app and for a host app.

    app.include_router(operations_router(read=supabase_user))   # a host app: its own dependency guards both
    operations_router(session=SessionAuth(token, hours))         # the standalone app (create_app does this)

With `session` (the standalone app), a page is served to a request that bears the KNOWLEDGE_API_TOKEN or a
signed-in browser's session cookie (modules/knowledge/session.py); anyone else is sent to the sign-in form,
and /metrics answers 401. With `read` (a host app), the host's dependency decides, as for the /knowledge
routes. The style sheet and the script are static files shipped in the package, served without
authentication (they hold no data).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from modules.knowledge.auth import Dependency, unauthorized
from modules.knowledge.dashboard_data import gather
from modules.knowledge.dashboard_page import render_login, render_page, render_panel
from modules.knowledge.service import KnowledgeService
from modules.knowledge.session import COOKIE, SessionAuth, slow_down
from modules.ops.metrics import CONTENT_TYPE

_STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def _service(request: Request) -> KnowledgeService:
    service: KnowledgeService | None = getattr(request.app.state, "knowledge", None)
    if service is None:
        raise HTTPException(503, "the knowledge service is not started (use knowledge_lifespan)")
    return service


Service = Annotated[KnowledgeService, Depends(_service)]


def operations_router(*, read: Dependency | None = None, session: SessionAuth | None = None) -> APIRouter:
    if (read is None) == (session is None):
        raise ValueError("operations_router needs exactly one of read= (a host's dependency) or session=")
    router = APIRouter(tags=["operations"])
    guard = [Depends(read)] if read is not None else []

    def allowed(request: Request) -> bool:
        return session is None or session.authorized(request)

    @router.get("/dashboard", include_in_schema=False, dependencies=guard)
    async def dashboard(request: Request, service: Service) -> Response:
        if not allowed(request):
            return _page(RedirectResponse("/dashboard/login", status_code=303))
        panel = render_panel(await _data(service))
        signed_in = session is not None and session.cookie_valid(request.cookies.get(COOKIE))
        return _page(HTMLResponse(render_page(panel, service.settings.dashboard_refresh, signed_in=signed_in)))

    @router.get("/dashboard/panel", include_in_schema=False, dependencies=guard)
    async def panel(request: Request, service: Service) -> Response:
        if not allowed(request):
            raise unauthorized("sign in at /dashboard/login")
        return _page(HTMLResponse(render_panel(await _data(service))))

    @router.get("/dashboard/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, "no such file")
        body = files("modules.knowledge").joinpath("static", name).read_bytes()
        return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})

    @router.get("/metrics", dependencies=guard, response_class=Response)
    async def metrics(request: Request, service: Service) -> Response:
        """Prometheus metrics of this process (the queue's counts read at each scrape)."""
        if not allowed(request):
            raise unauthorized(
                "this endpoint needs an 'Authorization: Bearer <token>' header with the KNOWLEDGE_API_TOKEN"
            )
        g = service.generator
        await service.metrics.refresh(g.store, model_id=g.embedder.model_id, retry=g.retry_rule)
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)

    if session is not None:
        _sign_in_routes(router, session)
    return router


def _sign_in_routes(router: APIRouter, session: SessionAuth) -> None:
    @router.get("/dashboard/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if session.authorized(request):
            return _page(RedirectResponse("/dashboard", status_code=303))
        return _page(HTMLResponse(render_login()))

    @router.post("/dashboard/login", include_in_schema=False)
    async def login(request: Request, token: Annotated[str, Form(max_length=4096)] = "") -> Response:
        if not session.token_matches(token):
            await slow_down()
            return _page(HTMLResponse(render_login(error="トークンが正しくありません。"), status_code=401))
        answer = RedirectResponse("/dashboard", status_code=303)
        answer.set_cookie(
            COOKIE,
            session.new_cookie(),
            max_age=session.lifetime,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return _page(answer)

    @router.post("/dashboard/logout", include_in_schema=False)
    async def logout() -> Response:
        answer = RedirectResponse("/dashboard/login", status_code=303)
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return _page(answer)


async def _data(service: KnowledgeService) -> Any:
    s = service.settings
    return await gather(service.generator, zone=s.dashboard_timezone, silence_seconds=s.alert_watcher_silence * 60)


def _page(response: Response) -> Response:
    for name, value in _HEADERS.items():
        response.headers[name] = value
    return response
