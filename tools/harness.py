"""Start the real ComfyUI server with the Pyra pack on loopback and talk to it over HTTP and the websocket.

Used by the e2e tests, the browser test, `make demo` and `make serve`. Runs in the host's python.

    with ComfyServer.start(preview="latent2rgb") as srv:
        pid = srv.queue(api_prompt)
        entry = srv.wait(pid)           # the /history entry; raises on error or timeout
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from host import PACK_LINK_NAME, REPO, HostError, check_comfyui, comfyui_dir, host_python  # noqa: E402

STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base_dir(base: Path, comfyui: Path) -> Path:
    """A throw-away `--base-directory`: the pack in custom_nodes/, the host's models through a YAML."""
    for sub in ("custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_LINK_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    models = comfyui / "models"
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(
        "pyra_host:\n"
        f"  base_path: {models}\n"
        "  diffusion_models: diffusion_models\n  unet: unet\n  vae: vae\n  loras: loras\n"
        "  checkpoints: checkpoints\n  upscale_models: upscale_models\n  controlnet: controlnet\n"
    )
    return yaml


class ComfyServer:
    """A ComfyUI server process on 127.0.0.1, its base directory in a temp folder unless given."""

    def __init__(self, proc: subprocess.Popen, port: int, base: Path, log_path: Path, owns_base: bool):
        self.proc, self.port, self.base, self.log_path, self._owns_base = proc, port, base, log_path, owns_base
        self.url = f"http://127.0.0.1:{port}"
        self.client_id = uuid.uuid4().hex

    @classmethod
    def start(cls, port: int | None = None, base: Path | None = None, preview: str = "none",
              extra_args: tuple[str, ...] = ()) -> ComfyServer:
        comfyui = comfyui_dir()
        check_comfyui(comfyui)
        owns_base = base is None
        base = Path(tempfile.mkdtemp(prefix="pyra-host-")) if base is None else base
        yaml = make_base_dir(base, comfyui)
        port = port or free_port()
        cmd = [str(host_python()), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--extra-model-paths-config", str(yaml),
               "--database-url", "sqlite:///:memory:", "--disable-auto-launch", "--disable-api-nodes",
               "--use-pytorch-cross-attention", "--preview-method", preview, *extra_args]
        log_path = base / "server.log"
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.Popen(cmd, cwd=comfyui, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env)
        srv = cls(proc, port, base, log_path, owns_base)
        srv._wait_ready()
        return srv

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HostError(f"ComfyUI exited during start-up (code {self.proc.returncode}):\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        self.stop()
        raise HostError(f"ComfyUI did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(lines[-n:])

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read()

    def post(self, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
        except urllib.error.HTTPError as err:
            raise PromptRejected(err.code, err.read().decode(errors="replace")) from err
        return json.loads(body) if body else {}

    def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        return self.post("/prompt", payload)["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600, allow_error: bool = False) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            entry = hist.get(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("completed") or status.get("status_str") in ("success", "error"):
                if status.get("status_str") != "success" and not allow_error:
                    raise PromptFailed(prompt_id, status.get("messages", []), self.log_tail())
                return entry
            if self.proc.poll() is not None:
                raise HostError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def output_images(self, entry: dict) -> list[Path]:
        """Paths of the images a finished prompt wrote into the output folder."""
        paths = []
        for out in entry.get("outputs", {}).values():
            for img in out.get("images", []):
                if img.get("type") == "output":
                    paths.append(self.base / "output" / img.get("subfolder", "") / img["filename"])
        return paths

    def output_arrays(self, entry: dict) -> list:
        """The output images as float32 RGB arrays in [0, 1] (numpy and PIL come with the host)."""
        import numpy as np
        from PIL import Image

        out = []
        for path in self.output_images(entry):
            with Image.open(path) as im:
                out.append(np.asarray(im.convert("RGB"), dtype=np.float32) / 255)
        return out

    def interrupt(self) -> None:
        self.post("/interrupt")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._owns_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> ComfyServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class PromptRejected(RuntimeError):
    """POST /prompt answered with an error (validation failed)."""

    def __init__(self, code: int, body: str):
        super().__init__(f"HTTP {code}: {body[:2000]}")
        self.code, self.body = code, body


class PromptFailed(RuntimeError):
    """A queued prompt ended with status 'error'."""

    def __init__(self, prompt_id: str, messages: list, log_tail: str):
        errors = [m for m in messages if m and m[0] == "execution_error"]
        detail = json.dumps(errors[-1][1], indent=1)[:3000] if errors else json.dumps(messages)[:2000]
        super().__init__(f"prompt {prompt_id} failed: {detail}\n--- server log ---\n{log_tail}")
        self.messages = messages
