"""core/plain_load: a torch file with code is refused in our words (no advice to load it unsafely), a damaged
one is told apart, and non-finite tensors are named with their file; the LoRA and SaRA readers use them."""

from __future__ import annotations

import importlib
import re

import pytest
import torch
from packload import load_pack_package

load_pack_package()
plain = importlib.import_module("pyra_pack.core.plain_load")
lora_file = importlib.import_module("pyra_pack.core.adapters.lora_file")
sara = importlib.import_module("pyra_pack.core.adapters.sara")


class Payload:
    def __reduce__(self):  # what a malicious pickle does on load; weights_only must never call it
        return (pytest.fail, ("the pickle's code ran",))


@pytest.fixture
def files(tmp_path):
    torch.save({"w": Payload()}, tmp_path / "code.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    torch.save({"w": torch.ones(1000)}, tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:2000])
    return tmp_path


@pytest.mark.parametrize("reader", [plain.load_plain, lora_file.load_state_dict, sara.read_checkpoint])
def test_code_is_refused_in_our_words(files, reader):
    with pytest.raises(ValueError, match=r"code\.pt holds Python code or objects besides tensors") as err:
        reader(files / "code.pt")
    assert "weights_only" not in str(err.value) and str(files) not in str(err.value)


@pytest.mark.parametrize("name, text", [("junk.pt", "is not a torch file of plain tensors (or it is damaged)"),
                                        ("cut.pt", "is corrupt or truncated")])
def test_a_damaged_file_is_not_called_code(files, name, text):
    with pytest.raises(ValueError, match=re.escape(f"{name} {text}")) as err:
        plain.load_plain(files / name)
    assert "weights_only" not in str(err.value)


def test_non_finite_tensors_are_named(tmp_path):
    t = torch.zeros(4, 3)
    t[1, 2], t[0, 0] = float("inf"), float("nan")
    torch.save({"a.lora_down.weight": torch.ones(2, 3), "a.lora_up.weight": t}, tmp_path / "bad.pt")
    with pytest.raises(lora_file.LoraFileError, match=r"bad.pt: tensor a.lora_up.weight holds 2 non-finite"):
        lora_file.load_state_dict(tmp_path / "bad.pt")
    plain.refuse_non_finite_tensors({"n": torch.arange(3), "f": torch.ones(2)}, "ok.pt")  # integers, finite: fine


def test_a_sara_file_without_values_is_refused(tmp_path):
    torch.save({"threshold": 2e-3}, tmp_path / "empty.pt")
    with pytest.raises(lora_file.LoraFileError, match=r"empty\.pt holds a threshold but no trained values"):
        sara.read_checkpoint(tmp_path / "empty.pt")
