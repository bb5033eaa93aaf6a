"""Session fixtures shared by every test: the real stack for integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowledger.settings import Settings
from tests.stack_fixture import StackHandle, isolated, start
from topics import admin


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flowledger stack")
    group.addoption("--stack-kafka", default=None, help="attach to this Kafka bootstrap")
    group.addoption("--stack-temporal", default=None, help="attach to this Temporal address")
    group.addoption(
        "--stack-database",
        default=None,
        help="'sqlite', 'postgres' or a SQLAlchemy URL to attach to",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackHandle]:
    root: Path = tmp_path_factory.mktemp("stack")
    handle = start(
        root,
        request.config.getoption("--stack-kafka"),
        request.config.getoption("--stack-temporal"),
        request.config.getoption("--stack-database"),
    )
    yield handle
    handle.close()


@pytest.fixture
def settings(stack: StackHandle, tmp_path: Path) -> Settings:
    """A test's own settings, with the catalogue topics created under its prefix."""
    own = isolated(stack, tmp_path)
    admin.ensure(own)
    return own
