"""Shared fixtures: the pack under an alias, an in-process host, and a real server on loopback.

- `packload.load_pack_package()`: the repository as package `pyra_pack` for host-free tests.
- `comfy_host` (session): ComfyUI imported in this process on the CPU, the pack loaded by the host's own
  loader from a temp custom_nodes folder; `.module("host.analytic")`, `.node("PyraX")`, `.run(prompt)`.
- `server` (session): `tools/harness.ComfyServer`, the real `main.py` on 127.0.0.1 with latent2rgb previews.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import types
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests"))

from host import comfyui_dir  # noqa: E402


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA: GPU tests run on the lent H200, results in benchmarks/results/")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class _HeadlessServer:
    """What execution.PromptExecutor touches on the server object."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass

    def queue_updated(self):
        pass


class InProcessHost:
    def __init__(self, pack_module_name: str):
        self.pack_name = pack_module_name

    def module(self, dotted: str) -> types.ModuleType:
        """A pack submodule as the host loaded it, e.g. `module("host.analytic")`."""
        return importlib.import_module(f"{self.pack_name}.{dotted}")

    def node(self, node_id: str):
        import nodes

        return nodes.NODE_CLASS_MAPPINGS[node_id]

    def run(self, prompt: dict) -> dict:
        """Validate and execute an API-format prompt; returns the history outputs (raises on failure)."""
        import execution

        pid = str(uuid.uuid4())
        valid = asyncio.run(execution.validate_prompt(pid, prompt, None))
        if not valid[0]:
            raise AssertionError(f"prompt invalid: {valid[1]} {valid[3]}")
        ex = execution.PromptExecutor(_HeadlessServer(), cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
        ex.execute(prompt, pid, extra_data={}, execute_outputs=valid[2])
        if not ex.success:
            raise AssertionError(f"prompt failed: {ex.status_messages[-1:]}")
        return ex.history_result["outputs"]


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory) -> InProcessHost:
    root = comfyui_dir()
    if not (root / "main.py").is_file():
        pytest.fail(f"no ComfyUI at {root}: run `make host` (or set COMFYUI_PATH)")
    base = tmp_path_factory.mktemp("inproc")
    for sub in ("custom_nodes", "input", "output", "temp"):
        (base / sub).mkdir()
    (base / "custom_nodes" / "pyra").symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = True
    args.use_pytorch_cross_attention = True
    args.disable_api_nodes = True
    import folder_paths

    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.folder_names_and_paths["custom_nodes"] = ([str(base / "custom_nodes")], set())
    for kind in ("diffusion_models", "vae", "loras", "checkpoints", "controlnet"):
        folder_paths.add_model_folder_path(kind, str(root / "models" / kind))
    # utils.extra_config, then server, then nodes: `nodes` puts comfy/ first on sys.path (HOST.md section 0)
    for name in ("utils.extra_config", "server", "nodes"):
        importlib.import_module(name)
    import nodes

    cwd = os.getcwd()
    try:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    finally:
        os.chdir(cwd)
    name = str(base / "custom_nodes" / "pyra").replace(".", "_x_")
    if name not in sys.modules or "PyraAnalyticModel" not in nodes.NODE_CLASS_MAPPINGS:
        pytest.fail("the host did not register the Pyra pack; see the log above for its import error")
    return InProcessHost(name)


@pytest.fixture(scope="session")
def gpu_host():
    """For tests marked gpu: the host's model code on the GPU without its server, as benchmarks import it (the
    in-process host forces the CPU). Returns a loader of pack modules that do not import comfy_api."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _host import import_host, pack_module

    import_host()
    return pack_module


@pytest.fixture(scope="session")
def server():
    from harness import ComfyServer

    srv = ComfyServer.start(preview="latent2rgb")
    yield srv
    srv.stop()
