"""The Jinja2 environment every domain's page routes render with (autoescaping on)."""
from fastapi import Request
from fastapi.templating import Jinja2Templates

from app.resources import ROOT  # the checkout root, or app/share in a wheel

from app.methods import all_specs

templates = Jinja2Templates(directory=str(ROOT / "templates"))
# Every page that lists methods (filters, forms, labels) reads them from the registry.
templates.env.globals["method_specs"] = all_specs()
templates.env.globals["method_titles"] = {spec.name: spec.title for spec in all_specs()}


def render(request: Request, name: str, title: str, http_status: int = 200, **context):
    """A page; the layout also gets the signed-in user and the CSRF token its scripts send on writes."""
    base = {"title": title, "current_user": getattr(request.state, "user", None),
            "csrf_token": getattr(request.state, "csrf_token", None)}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=http_status)
