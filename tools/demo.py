"""`make demo`: run every shipped workflow end to end in the real host, on the demo models.

Starts ComfyUI on loopback, lets the real frontend (headless chromium) turn each `workflows/*.json` into
the prompt it would queue, runs it, copies the images to `out/demo/<workflow>/` and prints a table:
workflow, status, seconds, peak memory (the server process's resident set, sampled every 20 ms).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontend import frontend_page, read_workflow, workflow_to_api
from harness import ComfyServer
from host import REPO

OUT = REPO / "out" / "demo"


class PeakRss:
    """Peak resident memory of a process while the block runs."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_workflow(srv: ComfyServer, name: str, prompt: dict) -> tuple[str, float, int, int]:
    t0 = time.perf_counter()
    with PeakRss(srv.proc.pid) as mem:
        try:
            entry = srv.wait(srv.queue(prompt), timeout=900)
            status = "ok"
        except Exception as err:  # the table reports it; the exit code says the demo failed
            print(f"--- {name} failed ---\n{err}", file=sys.stderr)
            entry, status = {}, "FAILED"
    seconds = time.perf_counter() - t0
    images = srv.output_images(entry) if entry else []
    dest = OUT / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for path in images:
        shutil.copy2(path, dest / path.name)
    return status, seconds, mem.peak, len(images)


def main() -> int:
    workflows = sorted((REPO / "workflows").glob("*.json"))
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    t_start = time.perf_counter()
    with ComfyServer.start(preview="latent2rgb") as srv:
        with frontend_page(srv.url) as page:
            prompts = {p.stem: workflow_to_api(page, read_workflow(p), p.name) for p in workflows}
        for name, prompt in prompts.items():
            print(f"running {name} ...", flush=True)
            rows.append((name, *run_workflow(srv, name, prompt)))
    width = max([len("workflow")] + [len(r[0]) for r in rows])
    print(f"\n{'workflow':<{width}}  status  seconds  peak MiB  images")
    for name, status, seconds, peak, n in rows:
        print(f"{name:<{width}}  {status:<6}  {seconds:7.1f}  {peak / 2**20:8.0f}  {n:6d}")
    print(f"\n{len(rows)} workflows in {time.perf_counter() - t_start:.1f} s; images in {OUT}")
    return 0 if rows and all(r[1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
