"""Where the server's non-Python files live: templates/, static/ (with static/vendor/, the browser libraries)
and migrations/.

In a source checkout they sit at the repository root. A built wheel carries copies inside the package, under
app/share/ (the build step in app/build_assets.py puts them there), so an installed peftlab serves a complete UI
and migrates its database without a checkout.
"""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_PACKAGED = PACKAGE_DIR / "share"


def resource_root() -> Path:
    """app/share in an installed wheel, else the checkout root."""
    return _PACKAGED if (_PACKAGED / "templates").is_dir() else PACKAGE_DIR.parent


ROOT = resource_root()
