"""Files the box ships with: the pages, the schemas, the example config.

Found through importlib.resources, never through the source tree's layout, so `hallbox` runs
from an installed wheel with no checkout present, and from a checkout (`make run`, editable
install) alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _package_dir(package: str, *parts: str) -> Path:
    # Wheels install unzipped, so the resource is a real directory; StaticFiles needs one.
    path = Path(str(resources.files(package).joinpath(*parts)))
    if not path.exists():
        raise FileNotFoundError(f"{package}: {'/'.join(parts) or '.'} is not installed")
    return path


def ui_dir() -> Path:
    """The pages and their front-end assets (kiosk_ui/, node_modules included once installed)."""
    return _package_dir("kiosk_ui")


def schemas_dir() -> Path:
    return _package_dir("edge", "schemas")


def example_file(name: str) -> Path:
    """An example shipped with the package: hall.example.toml, mqtt.example.toml, ..."""
    return _package_dir("edge", "examples", name)


def example_config() -> Path:
    return example_file("hall.example.toml")
