"""pyproject.toml as the host reads it (comfy_config, the parser the Comfy Registry's types mirror)."""

from __future__ import annotations

import sys

from host import REPO, comfyui_dir


def test_the_hosts_parser_reads_the_packs_metadata():
    sys.path.insert(0, str(comfyui_dir()))
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(REPO))
    assert config.project.name == "pyra" and config.tool_comfy.publisher_id == "pyra"
    assert config.tool_comfy.display_name == "Pyra"
    assert config.project.license.file == "LICENSE" and (REPO / "LICENSE").is_file()
    assert config.project.supported_os == ["OS Independent"]
    assert config.project.supported_accelerators == ["GPU :: NVIDIA CUDA"]
    assert config.project.supported_comfyui_version == ">=0.3.76"
