"""The Jinja2 environment every domain's page routes render with (autoescaping on)."""
from fastapi import Request
from fastapi.templating import Jinja2Templates

from app.resources import ROOT  # the checkout root, or app/share in a wheel

templates = Jinja2Templates(directory=str(ROOT / "templates"))


def render(request: Request, name: str, title: str, http_status: int = 200, **context):
    """A page; the layout also gets the signed-in user and the CSRF token its scripts send on writes."""
    base = {"title": title, "current_user": getattr(request.state, "user", None),
            "csrf_token": getattr(request.state, "csrf_token", None)}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=http_status)
