"""Who is asking: a Bearer token (scripts) or a session cookie (browser, with a CSRF token on writes).

`viewer` is the one dependency every route uses; API routes answer 401 without credentials,
pages redirect to the login page (or to first-run setup while there are no users).
"""
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.auth import service
from app.auth.models import User
from app.db import get_db

SESSION_COOKIE = "peftlab_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class LoginRequired(Exception):
    """A page was asked for without a login; the app turns this into a redirect."""

    def __init__(self, next_url: str):
        self.next_url = next_url


def _credentials(request: Request, session: Session):
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "Use the header Authorization: Bearer <token>.", headers={"WWW-Authenticate": "Bearer"})
        user = service.user_for_token(session, token=token.strip())
        if user is None:
            raise HTTPException(401, "This API token is not valid (wrong, or revoked).", headers={"WWW-Authenticate": "Bearer"})
        return user, None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        browser = service.session_for(session, cookie=cookie)
        if browser is not None:
            return service.get_user(session, user_id=browser.user_id), browser
    return None, None


def credential_digest(request: Request) -> tuple[str, str] | None:
    """("token" | "session", digest) of what this request signed in with: live streams re-check it."""
    header = request.headers.get("authorization")
    if header:
        return "token", service.digest(header.partition(" ")[2].strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    return ("session", service.digest(cookie)) if cookie else None


def viewer(request: Request, session: Annotated[Session, Depends(get_db)]) -> User:
    user, browser = _credentials(request, session)
    if user is None:
        if request.url.path.startswith("/api/"):
            raise HTTPException(401, "Not logged in: sign in, or send Authorization: Bearer <token>.",
                                headers={"WWW-Authenticate": "Bearer"})
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query)
    if browser is not None and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, browser.csrf_token):
            raise HTTPException(403, "Missing or wrong CSRF token: reload the page and try again.")
    request.state.user = user
    request.state.csrf_token = browser.csrf_token if browser is not None else None
    return user


def admin(user: Annotated[User, Depends(viewer)]) -> User:
    if not user.is_admin:
        raise HTTPException(403, "Only an admin can do that.")
    return user


def visible_projects(user: Annotated[User, Depends(viewer)], session: Annotated[Session, Depends(get_db)]) -> set[int] | None:
    """Project ids whose objects the viewer may see; None = all (admin)."""
    return service.project_ids(session, user=user)


Viewer = Annotated[User, Depends(viewer)]
Admin = Annotated[User, Depends(admin)]
Visible = Annotated[set[int] | None, Depends(visible_projects)]


def can_see(visible: set[int] | None, project_id: int | None) -> bool:
    return visible is None or (project_id is not None and project_id in visible)
