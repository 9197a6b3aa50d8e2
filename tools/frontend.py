"""Drive the host's real frontend in headless Debian chromium (Playwright): load workflows, convert them.

The server cannot turn a UI-format workflow into an API prompt (HOST.md section 7): that is the
frontend's `app.graphToPrompt()`. The browser test and `make demo` both go through this module.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
# Console lines that are the sandbox's, not a workflow's: 404s for optional assets, and the frontend's
# look-ups of node-pack info on the Comfy registry, which its CSP blocks when the machine is offline.
BENIGN_CONSOLE = (
    "favicon",
    "Failed to load resource: the server responded with a status of 404",
    "Connecting to 'https://api.comfy.org/",
)
# first-run dialogs that would cover the canvas in screenshots
# The frontend settings a test page runs with: no tutorial, and workflow schema validation on (frontends of 2026,
# e.g. 1.49 with ComfyUI 0.33.0, turn it off by default, so a schema-invalid workflow would load without a word).
QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Validation.Workflows": True}
APP_READY_TIMEOUT_MS = 90_000


@dataclass
class LoadReport:
    """What the frontend made of one workflow."""

    name: str
    missing_types: list[str] = field(default_factory=list)
    errored_nodes: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    node_count: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing_types or self.errored_nodes or self.alerts or self.console_errors)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("Debian's chromium is missing: run `make test-host` (apt-get install chromium)")
    return path


@contextmanager
def frontend_page(url: str, width: int = 1600, height: int = 1000):
    """A page with the host's frontend loaded and `window.app` ready; collects console errors."""
    from playwright.sync_api import sync_playwright

    for key, value in QUIET_SETTINGS.items():
        req = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(), method="POST")
        urllib.request.urlopen(req, timeout=10).close()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.pyra_console = []
            page.on("console", lambda m: m.type == "error" and page.pyra_console.append(m.text))
            page.on("pageerror", lambda e: page.pyra_console.append(f"pageerror: {e}"))
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph",
                                   timeout=APP_READY_TIMEOUT_MS)
            page.wait_for_timeout(1000)
            yield page
        finally:
            browser.close()


def _take_console(page) -> list[str]:
    errors = [e for e in page.pyra_console if not any(b in e for b in BENIGN_CONSOLE)]
    page.pyra_console.clear()
    return errors


def load_workflow(page, workflow: dict, name: str, screenshot: Path | None = None) -> LoadReport:
    """Load a UI-format workflow the way a user opening the file does; report what went wrong."""
    _take_console(page)
    result = page.evaluate(
        """async ([wf, name]) => {
            const toasts = '.p-toast-message-error, .p-toast-message-warn';
            document.querySelectorAll('.p-toast-message').forEach(e => e.remove());
            await window.app.loadGraphData(wf, true, true, name);
            await new Promise(r => setTimeout(r, 500));
            const alerts = [...document.querySelectorAll(toasts)].map(e => e.innerText.trim());
            const registered = window.LiteGraph.registered_node_types;
            const missing = wf.nodes.map(n => n.type).filter(t => !(t in registered));
            const nodes = window.app.graph.nodes || window.app.graph._nodes;
            const errored = nodes.filter(n => n.has_errors).map(n => `${n.id}:${n.type}`);
            return {missing: [...new Set(missing)], errored, alerts, count: nodes.length};
        }""",
        [workflow, name],
    )
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    return LoadReport(name, result["missing"], result["errored"], result["alerts"], _take_console(page),
                      result["count"])


def workflow_to_api(page, workflow: dict, name: str) -> dict:
    """The API-format prompt the frontend would queue for this workflow (`app.graphToPrompt().output`)."""
    report = load_workflow(page, workflow, name)
    if report.missing_types:
        raise RuntimeError(f"{name}: node types missing in the frontend: {report.missing_types}")
    return page.evaluate("async () => (await window.app.graphToPrompt()).output")


def read_workflow(path: Path) -> dict:
    return json.loads(path.read_text())
