"""The Jinja2 environment every domain's page routes render with (autoescaping on)."""
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

from app.methods import all_specs

ROOT = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(ROOT / "templates"))
# Every page that lists methods (filters, forms, labels) reads them from the registry.
templates.env.globals["method_specs"] = all_specs()
templates.env.globals["method_titles"] = {spec.name: spec.title for spec in all_specs()}


def render(request: Request, name: str, title: str, http_status: int = 200, **context):
    """A page; the layout also gets the signed-in user and the CSRF token its scripts send on writes."""
    base = {"title": title, "current_user": getattr(request.state, "user", None),
            "csrf_token": getattr(request.state, "csrf_token", None)}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=http_status)
