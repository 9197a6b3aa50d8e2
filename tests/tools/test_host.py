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


def test_the_default_host_is_the_newest_whose_source_is_here(monkeypatch, tmp_path):
    import host

    monkeypatch.delenv("PYRA_HOST", raising=False)
    monkeypatch.setattr(host, "SHARED_HOSTS", tmp_path)
    assert host.default_host() == "0.3.76-dev"   # without ../shared only the PyPI snapshot is available
    (tmp_path / "comfyui-0.8.1.tar.gz").touch()
    assert host.default_host() == "0.8.1"
    (tmp_path / "comfyui-0.33.0.tar.gz").touch()
    assert host.available_hosts() == ["0.3.76-dev", "0.8.1", "0.33.0"] and host.default_host() == "0.33.0"


def test_each_host_gets_its_own_folder_and_pinned_requirements(monkeypatch):
    import host

    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.delenv("COMFYUI_PYTHON", raising=False)
    for name, spec in host.HOSTS.items():
        monkeypatch.setenv("PYRA_HOST", name)
        assert host.comfyui_dir() == host.HOST_ROOT / name / "ComfyUI"
        assert host.host_python() == host.HOST_ROOT / name / "venv" / "bin" / "python"
        pins = [line for line in spec.requirements.read_text().splitlines() if line and not line.startswith("#")]
        assert "torch==2.14.1" in pins and all("==" in line for line in pins), name


def test_an_unknown_or_absent_host_is_one_clear_message(monkeypatch, tmp_path, capsys):
    import host

    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.setenv("PYRA_HOST", "9.9.9")
    assert main(["host.py", "comfyui"]) == 1
    assert "unknown host '9.9.9'" in capsys.readouterr().err
    monkeypatch.setattr(host, "SHARED_HOSTS", tmp_path)
    monkeypatch.setenv("PYRA_HOST", "0.33.0")
    assert main(["host.py", "comfyui"]) == 1
    assert "comfyui-0.33.0.tar.gz, which is not here" in capsys.readouterr().err
