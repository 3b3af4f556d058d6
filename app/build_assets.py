"""Build step for the browser libraries and the package data of a wheel.

`python -m app.build_assets` fills static/vendor/ from node_modules/ (what `npm ci` installed from
package-lock.json, at exactly the locked versions; it runs `npm ci` itself when node_modules is missing or
stale). The Makefile runs it after `npm ci`; the wheel build runs it through `BuildPy` below (pyproject's
cmdclass), which then copies templates/, static/ and migrations/ into the package as app/share/, so an
installed wheel serves the whole UI (see app/resources.py).

Self-contained on purpose: setuptools loads this file by path during a build, before peftlab is installed.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent

# npm package → (folder under static/vendor, the files of it the pages load, plus its licence).
VENDORED = {
    "uplot": ("uplot", ["dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"]),
    "swagger-ui-dist": ("swagger-ui", ["swagger-ui.css", "swagger-ui-bundle.js", "LICENSE", "NOTICE"]),
    # The search page's parallel-coordinates chart (uPlot has none).
    "echarts": ("echarts", ["dist/echarts.min.js", "LICENSE", "NOTICE"]),
}
STAMP = "versions.json"  # static/vendor/versions.json: which locked versions the copies came from
SHARED_DIRS = ("templates", "static", "migrations")


class AssetError(RuntimeError):
    pass


def locked_versions(root: Path = CHECKOUT) -> dict[str, str]:
    packages = json.loads((root / "package-lock.json").read_text())["packages"]
    try:
        return {name: packages[f"node_modules/{name}"]["version"] for name in VENDORED}
    except KeyError as e:
        raise AssetError(f"package-lock.json has no entry for {e.args[0]}: run `npm install`") from None


def _installed_version(root: Path, name: str) -> str | None:
    manifest = root / "node_modules" / name / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.is_file() else None


def vendor_is_current(root: Path = CHECKOUT) -> bool:
    stamp = root / "static" / "vendor" / STAMP
    if not stamp.is_file() or json.loads(stamp.read_text()) != locked_versions(root):
        return False
    return all((root / "static" / "vendor" / folder / Path(f).name).is_file()
               for folder, files in VENDORED.values() for f in files)


def vendor(root: Path = CHECKOUT) -> Path:
    """static/vendor/ from node_modules at the locked versions; a no-op when it is already current."""
    target = root / "static" / "vendor"
    if vendor_is_current(root):
        return target
    locked = locked_versions(root)
    if any(_installed_version(root, name) != version for name, version in locked.items()):
        if shutil.which("npm") is None:
            raise AssetError("node_modules does not match package-lock.json and npm is not installed: "
                             "install Node.js/npm, or build from an sdist that contains static/vendor")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=root, check=True)
    for name, (folder, files) in VENDORED.items():
        out = target / folder
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for f in files:
            shutil.copy2(root / "node_modules" / name / f, out / Path(f).name)
    (target / STAMP).write_text(json.dumps(locked, indent=2) + "\n")
    return target


def copy_shared(root: Path, package_dir: Path) -> None:
    """templates/, static/ and migrations/ into <package_dir>/share (the wheel's copy)."""
    share = package_dir / "share"
    shutil.rmtree(share, ignore_errors=True)
    for name in SHARED_DIRS:
        shutil.copytree(root / name, share / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


try:
    from setuptools.command.build_py import build_py as _build_py
except ImportError:  # `python -m app.build_assets` in a venv without setuptools needs only vendor()
    _build_py = None

if _build_py is not None:
    class BuildPy(_build_py):
        """build_py that also ships the browser assets, pages and migrations as package data."""

        def run(self):
            super().run()
            if getattr(self, "editable_mode", False):
                return  # an editable install serves the checkout itself (`make install` fills static/vendor)
            vendor(CHECKOUT)
            copy_shared(CHECKOUT, Path(self.build_lib) / "app")


if __name__ == "__main__":
    try:
        print(f"browser assets in {vendor()}")
    except AssetError as e:
        sys.exit(str(e))
