"""The pack's structure rules (ARCHITECTURE.md): nodes -> host -> core -> kernels, node classes only in nodes/,
the host's internals only in host/, relative imports, the V3 entrypoint only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOST_MODULES = {
    "comfy", "comfy_api", "comfy_extras", "comfy_execution", "comfy_config", "folder_paths", "server", "nodes",
    "execution", "latent_preview", "node_helpers", "app", "utils", "main", "protocol",
}
PACK_TOP = {"core", "kernels", "nodes", "host", "tests", "benchmarks", "tools", "workflows"}
# what each layer may import from the pack (by top-level folder): nodes -> host -> core -> kernels -> torch
ALLOWED = {"core": {"core", "kernels"}, "kernels": {"kernels"}, "host": {"host", "core", "kernels"},
           "nodes": {"nodes", "host", "core", "kernels"}}
# what each layer may import from the host: node classes see comfy_api only, host/ everything but comfy_api
HOST_ALLOWED = {"core": set(), "kernels": set(), "host": HOST_MODULES - {"comfy_api"}, "nodes": {"comfy_api"}}


def pack_files(layer: str) -> list[Path]:
    return sorted((REPO / layer).rglob("*.py"))


def imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) for every import; relative ones are resolved to a repo-absolute dotted name."""
    pkg = path.relative_to(REPO).parent.parts
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append((node.module or "", 0))
        elif isinstance(node, ast.ImportFrom):
            assert node.level - 1 <= len(pkg), f"{path}: relative import climbs out of the pack"
            base = list(pkg[: len(pkg) - node.level + 1])
            tails = [node.module] if node.module else [a.name for a in node.names]
            out += [(".".join([*base, tail]), node.level) for tail in tails]
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_import_direction(layer):
    for path in pack_files(layer):
        for module, level in imports(path):
            top = module.split(".")[0]
            if level:
                assert top in ALLOWED[layer], f"{path.relative_to(REPO)} imports {module}: {layer} may not import {top}"
            elif top in HOST_MODULES:
                assert top in HOST_ALLOWED[layer], (
                    f"{path.relative_to(REPO)} imports {module}: {layer}/ may import only "
                    f"{sorted(HOST_ALLOWED[layer]) or 'nothing'} of the host")
            assert level or top not in PACK_TOP - {"nodes"}, (
                f"{path.relative_to(REPO)}: absolute import of pack module {module}; use a relative import"
            )


def test_import_checker_catches_violations(tmp_path, monkeypatch):
    """The rule above can fail: a core file importing the host or nodes/ is reported."""
    fake = tmp_path / "core" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("import comfy.sd\nfrom ..nodes import x\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    with pytest.raises(AssertionError, match=r"of the host|may not import"):
        test_import_direction("core")


def test_node_modules_hold_node_classes_only():
    """nodes/: every class is a V3 ComfyNode (or the extension); every function is a schema helper (schema.py) or
    the loader of __init__.py. What a node does to a model lives in host/."""
    for path in pack_files("nodes"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert bases & {"io.ComfyNode", "ComfyExtension"}, f"{path.name}: class {node.name} is not a node"
            elif isinstance(node, ast.FunctionDef) and path.name not in ("schema.py", "__init__.py"):
                assert node.name.startswith("_"), f"{path.name}: {node.name}() is glue: move it to host/"


def test_layout_checks_can_fail(tmp_path, monkeypatch):
    """A node file importing comfy.samplers, and a host file importing comfy_api, are reported."""
    for layer, text in (("nodes", "import comfy.samplers\n"), ("host", "from comfy_api.latest import io\n")):
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "bad.py").write_text(text)
    (tmp_path / "nodes" / "glue.py").write_text("def sample(model):\n    return model\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    for layer in ("nodes", "host"):
        with pytest.raises(AssertionError, match="of the host"):
            test_import_direction(layer)
    with pytest.raises(AssertionError, match="glue"):
        test_node_modules_hold_node_classes_only()


def test_entrypoint_is_v3_only():
    tree = ast.parse((REPO / "__init__.py").read_text())
    names = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    funcs = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert "NODE_CLASS_MAPPINGS" not in names, "NODE_CLASS_MAPPINGS would stop the host calling comfy_entrypoint"
    assert "comfy_entrypoint" in funcs


def test_workflows_folder_holds_only_templates():
    for path in (REPO / "workflows").iterdir():
        assert path.suffix in (".json", ".jpg"), f"workflows/ is served as templates: move {path.name} elsewhere"
        if path.suffix == ".json":
            assert path.with_suffix(".jpg").is_file(), f"{path.name} has no same-name .jpg thumbnail"
