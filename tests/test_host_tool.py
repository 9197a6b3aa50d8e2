"""tools/host.py and tools/harness.py: a missing host is one clear message; COMFYUI_PATH is honoured."""

from __future__ import annotations

import pytest
from harness import make_base_dir
from host import HostError, check_comfyui, comfyui_dir, host_python, main


def test_missing_comfyui_says_how_to_fix(tmp_path):
    with pytest.raises(HostError, match=r"make host.*COMFYUI_PATH"):
        check_comfyui(tmp_path)


def test_install_reports_a_broken_comfyui_path_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "nowhere"))
    assert main(["host.py", "install"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[pyra host] ERROR:") and "COMFYUI_PATH" in err[0]


def test_comfyui_path_and_its_venv_are_used(tmp_path, monkeypatch):
    root = tmp_path / "ComfyUI"
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "venv" / "bin" / "python").touch()
    monkeypatch.setenv("COMFYUI_PATH", str(root))
    monkeypatch.delenv("COMFYUI_PYTHON", raising=False)
    assert comfyui_dir() == root.resolve()
    assert host_python() == root / "venv" / "bin" / "python"
    monkeypatch.setenv("COMFYUI_PYTHON", "/opt/py/bin/python")
    assert str(host_python()) == "/opt/py/bin/python"


def test_server_base_dir_links_the_pack_and_the_models(tmp_path):
    comfy = tmp_path / "ComfyUI"
    yaml = make_base_dir(tmp_path / "base", comfy)
    assert (tmp_path / "base" / "custom_nodes" / "pyra" / "__init__.py").is_file()
    assert f"base_path: {comfy / 'models'}" in yaml.read_text()
    for sub in ("input", "output", "temp", "user"):
        assert (tmp_path / "base" / sub).is_dir()
