"""Sign-in pages (first-run setup, login, logout, settings) and the account API (me, tokens, users, projects)."""
import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from app.auth import service
from app.auth.deps import SESSION_COOKIE, Admin, Viewer
from app.auth.models import Project
from app.auth.schemas import (MemberAdd, MemberOut, MeOut, ProjectCreate, ProjectOut, TokenCreate, TokenCreated,
                              TokenOut, UserCreate, UserOut)
from app.db import get_db
from app.ids import Id
from app.templating import render

router = APIRouter(prefix="/api", tags=["auth"])
public_pages = APIRouter(include_in_schema=False)  # reachable without a login
pages = APIRouter(include_in_schema=False)
DB = Annotated[Session, Depends(get_db)]
FORM_CSRF_COOKIE = "peftlab_form_csrf"


# pages: setup, login, logout -----------------------------------------------------------------

def _safe_next(value: str | None) -> str:
    """Only same-site paths: '/runs' yes, '//evil.example' or 'https://…' no."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/runs"


def _form_page(request: Request, template: str, title: str, status: int = 200, **context):
    """Render a sign-in form with a fresh double-submit CSRF token (there is no session yet)."""
    token = secrets.token_urlsafe(24)
    response = render(request, template, title, http_status=status, form_csrf=token, **context)
    response.set_cookie(FORM_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


def _check_form_csrf(request: Request, sent: str) -> None:
    expected = request.cookies.get(FORM_CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise HTTPException(403, "The form expired or did not come from this site; reload the page and try again.")


def _signed_in(request: Request, session: Session, user, next_url: str) -> RedirectResponse:
    cookie, _ = service.start_session(session, user=user)
    response = RedirectResponse(_safe_next(next_url), status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        max_age=service.SESSION_DAYS * 86400)
    response.delete_cookie(FORM_CSRF_COOKIE)
    return response


@public_pages.get("/setup")
def setup_page(request: Request, session: DB):
    if service.count_users(session):
        # Setup is done: a signed-in visitor goes home, anyone else to the sign-in form.
        cookie = request.cookies.get(SESSION_COOKIE)
        signed_in = cookie and service.session_for(session, cookie=cookie) is not None
        return RedirectResponse("/runs" if signed_in else "/login", status_code=303)
    return _form_page(request, "auth/setup.html", "Welcome")


@public_pages.post("/setup")
def setup_submit(request: Request, session: DB, username: Annotated[str, Form()] = "",
                 password: Annotated[str, Form()] = "", confirm: Annotated[str, Form()] = "",
                 csrf_token: Annotated[str, Form()] = ""):
    _check_form_csrf(request, csrf_token)
    if service.count_users(session):
        raise HTTPException(409, "peftlab already has an admin; sign in instead.")
    if password != confirm:
        return _form_page(request, "auth/setup.html", "Welcome", 422, error="The two passwords differ.", username=username)
    try:
        user = service.create_first_admin(session, username=username, password=password)
    except service.AuthError as e:
        return _form_page(request, "auth/setup.html", "Welcome", 422, error=str(e), username=username)
    return _signed_in(request, session, user, "/runs")


@public_pages.get("/login")
def login_page(request: Request, session: DB, next: str | None = None):
    if not service.count_users(session):
        return RedirectResponse("/setup", status_code=303)
    return _form_page(request, "auth/login.html", "Sign in", next=_safe_next(next))


@public_pages.post("/login")
async def login_submit(request: Request, session: DB, username: Annotated[str, Form(max_length=200)] = "",
                       password: Annotated[str, Form(max_length=1000)] = "", csrf_token: Annotated[str, Form()] = "",
                       next: Annotated[str, Form()] = "/runs"):
    _check_form_csrf(request, csrf_token)
    # The peer's address; behind a proxy listed in PEFTLAB_TRUSTED_PROXIES, the client it forwarded
    # for (`peftlab serve` has uvicorn read X-Forwarded-For from those proxies only).
    address = request.client.host if request.client else "?"
    if await run_in_threadpool(service.too_many_failures, session, username=username, address=address):
        return _form_page(request, "auth/login.html", "Sign in", 429, next=_safe_next(next), username=username,
                          error="Too many failed sign-ins from here. Wait 15 minutes and try again.")
    user = await run_in_threadpool(service.authenticate, session, username=username, password=password)
    if user is None:
        await run_in_threadpool(service.record_failure, session, username=username, address=address)
        return _form_page(request, "auth/login.html", "Sign in", 401, next=_safe_next(next), username=username,
                          error="Wrong username or password.")
    await run_in_threadpool(service.clear_failures, session, username=username, address=address)
    return _signed_in(request, session, user, next)


@pages.post("/logout")
def logout(request: Request, session: DB, user: Viewer):
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        service.end_session(session, cookie=cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@pages.get("/settings")
def settings_page(request: Request, user: Viewer):
    return render(request, "auth/settings.html", "Settings")


# API: me, tokens -----------------------------------------------------------------------------

@router.get("/me", response_model=MeOut)
def me(user: Viewer, session: DB):
    projects = [ProjectOut(id=p.id, name=p.name, role=r) for p, r in service.projects_of(session, user=user)]
    return MeOut(**UserOut.model_validate(user).model_dump(), projects=projects)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(user: Viewer, session: DB):
    return service.tokens_of(session, user=user)


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, user: Viewer, session: DB):
    token, row = service.create_token(session, user=user, name=body.name)
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: Id, user: Viewer, session: DB):
    if not service.revoke_token(session, user=user, token_id=token_id):
        raise HTTPException(404, f"Token {token_id} not found (or already revoked).")


# API: users (admins) -------------------------------------------------------------------------

@router.get("/users", response_model=list[UserOut])
def list_users(user: Admin, session: DB):
    return service.all_users(session)


@router.post("/users", status_code=201, response_model=UserOut)
def create_user(body: UserCreate, user: Admin, session: DB):
    try:
        return service.create_user(session, username=body.username, password=body.password, is_admin=body.is_admin)
    except service.AuthError as e:
        raise HTTPException(422, str(e)) from None


# API: projects and sharing -------------------------------------------------------------------

@router.get("/projects", response_model=list[ProjectOut])
def list_projects(user: Viewer, session: DB):
    return [ProjectOut(id=p.id, name=p.name, role=r) for p, r in service.projects_of(session, user=user)]


@router.post("/projects", status_code=201, response_model=ProjectOut)
def create_project(body: ProjectCreate, user: Viewer, session: DB):
    project = service.create_project(session, user=user, name=body.name)
    return ProjectOut(id=project.id, name=project.name, role="owner")


def _project_role(session: Session, user, project_id: int) -> str:
    role = service.role_in(session, user=user, project_id=project_id)
    if role is None and not (user.is_admin and session.get(Project, project_id) is not None):
        raise HTTPException(404, f"Project {project_id} not found.")
    return role or "admin"


@router.get("/projects/{project_id}/members", response_model=list[MemberOut])
def list_members(project_id: Id, user: Viewer, session: DB):
    _project_role(session, user, project_id)
    return [MemberOut(user_id=u.id, username=u.username, role=r) for u, r in service.members(session, project_id=project_id)]


@router.post("/projects/{project_id}/members", status_code=201, response_model=MemberOut)
def add_member(project_id: Id, body: MemberAdd, user: Viewer, session: DB):
    if _project_role(session, user, project_id) not in ("owner", "admin"):
        raise HTTPException(403, "Only the project's owner can share it.")
    try:
        added = service.add_member(session, project_id=project_id, username=body.username)
    except service.AuthError as e:
        raise HTTPException(422, str(e)) from None
    return MemberOut(user_id=added.id, username=added.username, role=service.role_in(session, user=added, project_id=project_id))


@router.delete("/projects/{project_id}/members/{user_id}", status_code=204)
def remove_member(project_id: Id, user_id: Id, user: Viewer, session: DB):
    if _project_role(session, user, project_id) not in ("owner", "admin"):
        raise HTTPException(403, "Only the project's owner can change who it is shared with.")
    if not service.remove_member(session, project_id=project_id, user_id=user_id):
        raise HTTPException(404, f"User {user_id} is not a member of project {project_id} (owners cannot be removed).")
