"""The inbox in a real headless Chromium (Debian's chromium and chromium-driver, driven
by selenium) against `flowledger api` as a real process: sign in, open a task, see the
schema refuse an answer inline, complete it, watch the run resume on its timeline.
The screenshots are test artifacts in test-artifacts/inbox/ of the checkout, where a CI
job or a person finds them after the run (the README's two pictures come from there)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.integration.api_support import ApiDeployment, deploy
from tests.integration.runtime_support import REPO
from tests.stack_fixture import StackHandle
from tests.waiting import wait_for

FORM = {
    "type": "object",
    "required": ["approved", "amount"],
    "properties": {
        "approved": {"type": "boolean", "title": "Approved"},
        "amount": {"type": "integer", "minimum": 1, "title": "Amount", "description": "in EUR"},
        "level": {"enum": ["low", "high"], "title": "Level"},
        "note": {"type": "string", "title": "Note"},
    },
}
STEPS = [
    {"id": "prepare", "type": "assign", "assign": {"vars.order": {"$expr": "payload.order"}}},
    {
        "id": "ask",
        "type": "human.task",
        "task_type": "refund",
        "title": {"$expr": "'Refund for ' & payload.order"},
        "description": "Decide on the refund the customer asked for.",
        "context": {"order": {"$expr": "payload.order"}, "customer": "c-17"},
        "form_schema": FORM,
        "assign": {"vars.answer": {"$expr": "task.response"}},
    },
    {"id": "ret", "type": "control.return", "output": {"$expr": "vars.answer"}},
]


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        f"none of {names} is installed (scripts/setup installs chromium and chromium-driver)"
    )


@pytest.fixture(scope="module")
def api(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiDeployment]:
    yield from deploy(stack, tmp_path_factory.mktemp("inbox"))


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1100,900")
    service = Service(_binary("chromedriver", "chromium-driver"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        pytest.fail(f"headless chromium could not start: {exc}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots() -> Path:
    # Not under pytest's base temp: its place changes with every run and worker, and
    # only the last few are kept.
    folder = REPO / "test-artifacts" / "inbox"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


def _text(driver: WebDriver, css: str) -> str:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (WebDriverException, StaleElementReferenceException):
        return ""


def _open_task(api: ApiDeployment) -> tuple[str, dict[str, Any]]:
    document = {
        "id": f"refund-{uuid.uuid4().hex[:6]}",
        "version": 1,
        "tenant": api.tenant_a,
        "name": "refund",
        "steps": STEPS,
    }
    api.publish_definition(document)
    run_id = api.start(document["id"], {"order": "O-1001"})

    def task() -> list[dict[str, Any]]:
        found = api.call("GET", "/v1/tasks", "read_a", params={"run_id": run_id}).json()
        return [t for t in found if t["status"] == "OPEN"]

    return run_id, wait_for(task, 90, "the refund task")[0]


def test_inbox_task_refused_then_completed(
    api: ApiDeployment, browser: WebDriver, shots: Path
) -> None:
    run_id, _task = _open_task(api)
    browser.get(f"{api.url}/ui/tasks")
    assert browser.current_url.endswith("/ui/login")
    browser.find_element(By.ID, "token").send_keys(api.tokens["op_a"])
    browser.find_element(By.ID, "sign-in").click()
    wait_for(lambda: browser.current_url.endswith("/ui/tasks"), 30, "the inbox after sign-in")
    links = browser.find_elements(By.CSS_SELECTOR, "a.task-link")
    assert [link.text for link in links] == ["Refund for O-1001"]
    browser.save_screenshot(str(shots / "inbox-list.png"))

    links[0].click()
    wait_for(lambda: _text(browser, "h1") == "Refund for O-1001", 30, "the task page")
    assert "Decide on the refund" in _text(browser, ".description")
    assert '"customer": "c-17"' in _text(browser, "pre")
    kinds = [f.get_attribute("data-kind") for f in browser.find_elements(By.CSS_SELECTOR, ".field")]
    assert kinds == ["boolean", "integer", "enum", "string"]

    browser.find_element(By.ID, "f-amount").send_keys("0")
    Select(browser.find_element(By.ID, "f-level")).select_by_visible_text("high")
    browser.find_element(By.ID, "submit").click()
    wait_for(lambda: _text(browser, '.error[data-field="amount"]'), 30, "the schema's error")
    assert "minimum of 1" in _text(browser, '.error[data-field="amount"]')
    # The refused answer is kept in the form, and nothing reached the run.
    assert browser.find_element(By.ID, "f-amount").get_attribute("value") == "0"
    browser.save_screenshot(str(shots / "inbox-task-refused.png"))
    assert api.run(run_id)["run"]["status"] == "WAITING"

    amount = browser.find_element(By.ID, "f-amount")
    amount.clear()
    amount.send_keys("25")
    browser.find_element(By.ID, "f-approved").click()
    browser.find_element(By.ID, "f-note").send_keys("goodwill")
    browser.find_element(By.ID, "submit").click()
    wait_for(lambda: f"/ui/runs/{run_id}" in browser.current_url, 30, "the run page")
    # The page refreshes itself while the run is going.
    wait_for(lambda: _text(browser, "#run-status") == "SUCCEEDED", 90, "the run to resume")
    done = api.run(run_id)
    assert done["run"]["output"] == {
        "approved": True,
        "amount": 25,
        "level": "high",
        "note": "goodwill",
    }

    bars = browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect.step-bar")
    assert len(bars) == len(done["steps"]) == 3
    assert {b.get_attribute("data-status") for b in bars} == {"SUCCEEDED"}
    assert browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect.wait-bar")
    assert "resumed by task" in _text(browser, "svg.timeline")
    browser.save_screenshot(str(shots / "run-timeline.png"))


def test_inbox_is_scoped_to_the_tokens_tenants(api: ApiDeployment) -> None:
    _run_id, task = _open_task(api)
    path = f"/ui/tasks/{task['task_id']}"
    assert api.call("GET", path, "op_a").status_code == 200
    foreign = api.call("GET", path, "op_b")
    assert foreign.status_code == 404 and "HUMAN_TASK_NOT_FOUND" in foreign.text
    assert task["task_id"] not in api.call("GET", "/ui/tasks", "op_b").text
    assert api.call("GET", f"/ui/runs/{task['run_id']}", "op_b").status_code == 404
    # Without a token a page sends the browser to sign in.
    anonymous = api.call("GET", "/ui/tasks")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/ui/login"
