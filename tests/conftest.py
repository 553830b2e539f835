"""Shared fixtures: where the shared corpus and fixtures are, a loopback feed server, and
a config file writer. Tests use real servers, files and databases — no mocks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: CI shares two cores with whatever else runs, and a slow example
# is not a failure of the property (performance is measured in benchmarks/, not here).
settings.register_profile("aggregator", deadline=None)
settings.load_profile("aggregator")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPUS = Path(os.environ.get("AGGREGATOR_CORPUS", ROOT.parent / "shared" / "corpus"))
FIXTURES = Path(os.environ.get("AGGREGATOR_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def corpus_dir() -> Path:
    if not (CORPUS / "real").is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}; set AGGREGATOR_CORPUS to its path")
    return CORPUS


def fixture_file(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"shared fixture {name} not found in {FIXTURES}; set AGGREGATOR_FIXTURES to its folder")
    return path


@pytest.fixture
def server():
    from tests.server import FeedServer

    with FeedServer() as srv:
        yield srv


def write_config(path: Path, sources: list[dict], **settings) -> Path:
    """A config.toml for tests: loopback allowed, everything under ``path``'s folder."""
    import tomlkit

    doc = tomlkit.document()
    doc.add("data_dir", settings.pop("data_dir", "data"))
    doc.add("output_dir", settings.pop("output_dir", "out"))
    doc.add("base_url", settings.pop("base_url", "https://feeds.example.org/"))
    doc.add("allow_private_networks", settings.pop("allow_private_networks", True))
    for key, value in settings.items():
        doc.add(key, value)
    if sources:
        aot = tomlkit.aot()
        for s in sources:
            t = tomlkit.table()
            for k, v in s.items():
                t.add(k, v)
            aot.append(t)
        doc.add("sources", aot)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return path
