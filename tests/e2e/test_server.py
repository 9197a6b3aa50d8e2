"""End to end through the real ComfyUI server on loopback: HTTP prompts, websocket progress, files written."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from PIL import Image
from prompts import DEMO_FAMILIES, analytic_textures, demo_model

pytestmark = pytest.mark.server


class WsListener:
    """Collects websocket events for one client id in a thread (JSON messages and binary preview frames)."""

    def __init__(self, server):
        import websocket

        self.ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={server.client_id}")
        self.ws.settimeout(0.5)
        self.events: list[tuple[float, str, dict]] = []
        self.previews = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import websocket

        while not self._stop:
            try:
                msg = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:
                return
            if isinstance(msg, bytes):
                self.previews += 1
            else:
                data = json.loads(msg)
                self.events.append((time.monotonic(), data["type"], data.get("data", {})))

    def first(self, kind: str, prompt_id: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, k, d in list(self.events):
                if k == kind and d.get("prompt_id") == prompt_id:
                    return t, d
            time.sleep(0.02)
        raise TimeoutError(f"no {kind} event for {prompt_id}")

    def close(self):
        self._stop = True
        self.thread.join(timeout=2)
        self.ws.close()


def load_images(server, entry) -> list[np.ndarray]:
    paths = server.output_images(entry)
    assert paths, f"no images written: {entry.get('outputs')}"
    images = []
    for path in paths:
        with Image.open(path) as im:
            assert "prompt" in im.info, "SaveImage should embed the API prompt in the PNG"
            images.append(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
    return images


def test_pack_is_served(server):
    info = server.get("/object_info/PyraAnalyticModel")["PyraAnalyticModel"]
    assert info["category"] == "Pyra/demo"
    assert info["python_module"].startswith("custom_nodes.")
    tooltips = [spec[1].get("tooltip") for spec in info["input"]["required"].values()]
    assert all(tooltips), "every input needs a tooltip"


def test_the_help_panel_finds_each_nodes_page(server):
    """The frontend fetches /extensions/<module>/docs/<NodeId>.md, <module> from the node's python_module."""
    from harness import REPO

    info = server.get("/object_info")
    for node in ("PyraStepCache", "PyraExactVAEDecode"):
        module = info[node]["python_module"].split(".", 1)[1]
        page = server.get_bytes(f"/extensions/{module}/docs/{node}.md").decode()
        assert page == (REPO / "web" / "docs" / f"{node}.md").read_text()


def test_the_chinese_locale_reaches_the_frontend(server):
    translations = server.get("/i18n")
    assert translations["zh"]["nodeDefs"]["PyraStepCache"]["display_name"] == "步骤缓存 (Pyra)"


def test_the_node_search_finds_pyra_by_the_words_users_type(server):
    """Search aliases reach the frontend on hosts whose schema has them (0.33.0); experimental nodes say so."""
    from harness import comfyui_dir

    info = server.get("/object_info")
    if "search_aliases" in (comfyui_dir() / "comfy_api" / "latest" / "_io.py").read_text():
        assert "teacache" in info["PyraStepCache"]["search_aliases"]
        assert "hires fix" in info["PyraDiffuseHigh"]["search_aliases"]
    assert info["PyraDFMTrain"]["experimental"] and info["PyraTrainSparseAdapter"]["experimental"]
    assert not info["PyraPyramidSampler"].get("experimental")


def test_rarely_changed_inputs_are_marked_advanced(server):
    """Where the host's inputs take the flag (0.33.0) the frontend folds them into its advanced section."""
    from harness import comfyui_dir

    inputs = server.get("/object_info/PyraDiffuseHigh")["PyraDiffuseHigh"]["input"]["required"]
    flags = {name: spec[1].get("advanced", False) for name, spec in inputs.items() if len(spec) > 1}
    if "advanced: bool=None" in (comfyui_dir() / "comfy_api" / "latest" / "_io.py").read_text():
        assert flags["sharpen"] and flags["wavelet"] and not flags["steps"] and not flags["scales"], flags
    else:
        assert not any(flags.values()), flags


def test_analytic_textures_with_progress_and_previews(server):
    ws = WsListener(server)
    try:
        pid = server.queue(analytic_textures(width=64, height=48, batch=2, steps=8))
        entry = server.wait(pid, timeout=120)
        ws.first("execution_success", pid)
    finally:
        ws.close()
    images = load_images(server, entry)
    assert len(images) == 2 and images[0].shape == (48, 64, 3)
    for img in images:
        assert np.isfinite(img).all() and img.std() > 0.02, "a texture, not a flat or broken image"
    assert np.abs(images[0] - images[1]).mean() > 0.01, "batch items must differ"
    progress = [d["value"] for _, k, d in ws.events if k == "progress" and d.get("prompt_id") == pid]
    assert progress and progress == sorted(progress) and progress[-1] == 8
    assert ws.previews >= 1, "latent2rgb previews should reach the websocket"


@pytest.mark.parametrize("family", sorted(DEMO_FAMILIES))
def test_demo_models_through_stock_loaders(server, family):
    entry = server.wait(server.queue(demo_model(family)), timeout=300)
    images = load_images(server, entry)
    expected_frames = 5 if family == "wan21" else 1
    assert len(images) == expected_frames
    assert images[0].shape == (64, 64, 3)
    assert all(np.isfinite(im).all() for im in images)


def test_wrong_latent_gets_a_clear_error(server):
    video_latent = {"class_type": "EmptyHunyuanLatentVideo",
                    "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1}}
    pid = server.queue(analytic_textures(latent_node=video_latent))
    entry = server.wait(pid, timeout=120, allow_error=True)
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "EmptyChromaRadianceLatentImage" in errors[0]["exception_message"]


def test_interrupt_stops_a_long_run(server):
    ws = WsListener(server)
    try:
        steps = 10000
        pid = server.queue(analytic_textures(width=256, height=256, batch=4, steps=steps, sampler="dpmpp_2m",
                                             seed=7, prefix="pyra_test_interrupt"))
        ws.first("progress", pid, timeout=60)
        t_interrupt = time.monotonic()
        server.interrupt()
        t_stopped, _ = ws.first("execution_interrupted", pid, timeout=30)
    finally:
        ws.close()
    entry = server.wait(pid, timeout=30, allow_error=True)
    assert entry["status"]["status_str"] == "error"
    last = max(d["value"] for _, k, d in ws.events if k == "progress" and d.get("prompt_id") == pid)
    assert last < steps, "the run finished instead of stopping"
    assert t_stopped - t_interrupt < 5.0, f"took {t_stopped - t_interrupt:.2f} s to stop"
    assert not server.output_images(entry), "an interrupted run must not save images"
