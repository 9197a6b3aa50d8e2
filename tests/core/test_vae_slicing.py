"""core/vae: sliced decoding (and KL encoding) equals the host's full KL and TAESD decode / KL encode (random weights).

The modules come from the host's own classes (imported on the CPU); the slicer itself is host-free.
"""

from __future__ import annotations

import importlib
import sys
import weakref

import pytest
import torch
from host import comfyui_dir
from packload import load_pack_package
from vae_helpers import seeded_

load_pack_package()
vae = importlib.import_module("pyra_pack.core.vae")
rowops = importlib.import_module("pyra_pack.core.vae.rowops")
stream = importlib.import_module("pyra_pack.core.vae.stream")
enc = importlib.import_module("pyra_pack.core.vae.kl_encode")
kl = importlib.import_module("pyra_pack.core.vae.kl")

TOL_FP32 = 1e-4


@pytest.fixture(scope="module")
def host():
    sys.path.insert(0, str(comfyui_dir()))
    from comfy.cli_args import args

    args.cpu = True
    args.use_pytorch_cross_attention = True
    import comfy.ldm.models.autoencoder
    import comfy.taesd.taesd

    return comfy.ldm.models.autoencoder, comfy.taesd.taesd


def tiny_kl(host, z_channels=4, ch_mult=(1, 2, 2), num_res_blocks=1):
    dd = {"double_z": True, "z_channels": z_channels, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
          "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks, "attn_resolutions": [], "dropout": 0.0}
    return seeded_(host[0].AutoencoderKL(ddconfig=dd, embed_dim=z_channels))


def latent(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rows", [1, 2, 5, 13])
def test_kl_sliced_equals_full_decode(host, rows):
    model = tiny_kl(host)
    z = latent((2, 4, 13, 11))   # batch 2, odd sizes
    with torch.no_grad():
        ref = model.decode(z)
    out = vae.sliced_decode(model, z, rows)
    assert out.shape == ref.shape == (2, 3, 52, 44)
    assert (out - ref).abs().max().item() <= TOL_FP32


def test_kl_16_channels_two_blocks_per_level(host):
    """SD3/Flux-style latent channels and the real num_res_blocks=2 layout (three blocks per up level)."""
    model = tiny_kl(host, z_channels=16, ch_mult=(1, 2, 2, 2), num_res_blocks=2)
    z = latent((1, 16, 7, 9))
    with torch.no_grad():
        ref = model.decode(z)
    out = vae.sliced_decode(model, z, 2)
    assert out.shape == ref.shape == (1, 3, 56, 72)
    assert (out - ref).abs().max().item() <= TOL_FP32


def test_bands_without_whole_tensor_statistics_differ(host, monkeypatch):
    """The exactness test can fail: normalising each band with its own statistics (a naive slicer) is far off."""
    model = tiny_kl(host)
    z = latent((1, 4, 13, 11))
    with torch.no_grad():
        ref = model.decode(z)

    def band_local(self, x, r0, a, b, h_in, stack):
        y = torch.nn.functional.group_norm(x, self.norm.num_groups, self.norm.weight, self.norm.bias, self.norm.eps)
        return torch.nn.functional.silu(y) if self.silu else y

    monkeypatch.setattr(rowops.GroupNormAct, "__call__", band_local)
    assert (vae.sliced_decode(model, z, 3) - ref).abs().max().item() > 1e-2


def test_kl_decode_without_halo_rows_differs(host, monkeypatch):
    """The exactness test can fail: convolutions that read no halo rows (zeros at every band edge) are far off."""
    model = tiny_kl(host)
    z = latent((1, 4, 13, 11))
    with torch.no_grad():
        ref = model.decode(z)
    monkeypatch.setattr(rowops.Conv, "need", lambda self, a, b, h_in: (a, b))
    assert (vae.sliced_decode(model, z, 3) - ref).abs().max().item() > 1e-2


def checkpoint_peak_bytes(monkeypatch, model, z, rows) -> int:
    """The most bytes the live checkpoints (`stream.Rows`) hold at once during a sliced decode."""
    live, peak = weakref.WeakSet(), [0]
    init, append = stream.Rows.__init__, stream.Rows.append

    def tally():
        peak[0] = max(peak[0], sum(r.nbytes() for r in live))

    def init_(self, t=None):
        init(self, t)
        live.add(self)
        tally()

    def append_(self, a, y):
        append(self, a, y)
        tally()

    monkeypatch.setattr(stream.Rows, "__init__", init_)
    monkeypatch.setattr(stream.Rows, "append", append_)
    vae.sliced_decode(model, z, rows)
    return peak[0]


def test_kl_growing_segment_never_holds_input_and_output_whole(host, monkeypatch):
    """The last up level turns a half-resolution 2c-channel checkpoint (X/2 bytes) into a full-resolution c-channel
    one (X bytes). Input blocks are released band by band, so the checkpoints never hold X/2 + X at once; with the
    release disabled they do (the check can fail)."""
    model = tiny_kl(host)
    z = latent((1, 4, 26, 11))
    full = 32 * (4 * 26) * (4 * 11) * 4   # level 0: 32 channels at full resolution, fp32
    assert checkpoint_peak_bytes(monkeypatch, model, z, 1) <= 1.15 * full
    monkeypatch.setattr(stream.Rows, "release_before", lambda self, row: None)
    assert checkpoint_peak_bytes(monkeypatch, model, z, 1) >= 1.5 * full


def test_released_rows_cannot_be_read():
    rows = stream.Rows()
    rows.append(0, torch.zeros(1, 2, 3, 4))
    rows.append(3, torch.ones(1, 2, 3, 4))
    assert rows.read(2, 4)[0, 0, :, 0].tolist() == [0.0, 1.0]   # across two blocks
    rows.release_before(3)
    with pytest.raises(RuntimeError, match="released"):
        rows.read(2, 4)
    assert rows.read(3, 5).shape == (1, 2, 2, 4)


def test_rows_split_blocks_own_their_memory():
    """A whole tensor handed to the executor in blocks: each block is its own storage (a released view would keep
    the whole tensor alive), and the rows read back unchanged."""
    t = latent((1, 2, 7, 3))
    rows = stream.Rows.split(t, 3)
    assert [r0 for r0, _ in rows.blocks] == [0, 3, 6]
    assert all(b.untyped_storage().data_ptr() != t.untyped_storage().data_ptr() for _, b in rows.blocks)
    assert torch.equal(rows.read(2, 7), t[..., 2:7, :])


def test_kl_bf16_within_twice_the_precision_gap(host):
    """In bf16 the sliced decode stays within 2x the gap between the bf16 and fp32 full decodes."""
    model = tiny_kl(host)
    z = latent((1, 4, 9, 8))
    with torch.no_grad():
        ref32 = model.decode(z)
        model16 = model.to(torch.bfloat16)
        ref16 = model16.decode(z.bfloat16()).float()
    out = vae.sliced_decode(model16, z.bfloat16(), 2)
    gap = (ref16 - ref32).abs().max().item()
    assert (out - ref32).abs().max().item() <= 2 * gap


@pytest.mark.parametrize("channels", [4, 16])
def test_taesd_sliced_equals_full_decode(host, channels):
    model = seeded_(host[1].TAESD(latent_channels=channels))
    z = latent((2, channels, 11, 9))
    with torch.no_grad():
        ref = model.decode(z)
    for rows in (1, 4):
        out = vae.sliced_decode(model, z, rows)
        assert out.shape == ref.shape == (2, 3, 88, 72)
        assert (out - ref).abs().max().item() <= TOL_FP32


def test_unsupported_modules_are_named(host):
    with pytest.raises(vae.SliceUnsupported, match="Linear"):
        vae.decoder_for(torch.nn.Linear(2, 2))
    with pytest.raises(vae.SliceUnsupported, match="4-D"):
        vae.sliced_decode(tiny_kl(host), latent((1, 4, 2, 8, 8)), 2)


def test_group_stats_merge_matches_whole_tensor():
    x = latent((2, 8, 10, 6)) * 3 + 5
    acc = rowops.GroupStats(4)
    for a in range(0, 10, 3):
        acc.add(x[..., a:a + 3, :])
    mean, rstd = acc.result(1e-6)
    var, ref_mean = torch.var_mean(x.reshape(2, 4, -1).double(), dim=-1, correction=0)
    assert torch.allclose(mean.double(), ref_mean, atol=1e-6)
    assert torch.allclose(rstd.double(), torch.rsqrt(var + 1e-6), rtol=1e-5)


def test_auto_slice_rows():
    gib = 1 << 30
    assert vae.auto_slice_rows((1, 4, 96, 96), 2, 80 * gib) == 12            # capped at an eighth of the height
    assert vae.auto_slice_rows((1, 4, 256, 256), 2, 80 * gib) == vae.MAX_AUTO_ROWS == 16   # and at 16 rows
    assert vae.auto_slice_rows((1, 4, 256, 256), 2, 1 * gib) < 16            # less memory, thinner bands
    assert vae.auto_slice_rows((1, 4, 256, 256), 2, 0) == 1
    # 16x VAEs (Flux.2, Wan 2.2, HunyuanVideo 1.5): the same caps in output rows, half as many latent rows
    assert vae.auto_slice_rows((1, 128, 256, 256), 2, 80 * gib, upscale=16) == 8
    assert vae.auto_slice_rows((1, 48, 44, 80), 2, 80 * gib, 256, upscale=16) == 6
    assert vae.auto_slice_rows((1, 48, 8, 8), 2, 80 * gib, 256, upscale=16) == 2
    assert vae.auto_slice_rows((1, 4, 3, 5), 4, 80 * gib) == 3


# Exact sliced KL encoding

def image(shape, seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("rows", [1, 2, 5, 13])
def test_kl_banded_encode_equals_full_encode(host, rows):
    model = tiny_kl(host)
    x = image((2, 3, 52, 44))   # batch 2, odd latent sizes (13 x 11: this tiny VAE downsamples 4x)
    with torch.no_grad():
        ref = model.encode(x)
    out = enc.kl_encode(model, x, rows)
    assert out.shape == ref.shape == (2, 4, 13, 11)
    assert (out - ref).abs().max().item() <= TOL_FP32


def test_kl_16_channel_encode(host):
    model = tiny_kl(host, z_channels=16, ch_mult=(1, 2, 2, 2), num_res_blocks=2)
    x = image((1, 3, 56, 72))
    with torch.no_grad():
        ref = model.encode(x)
    assert (enc.kl_encode(model, x, 2) - ref).abs().max().item() <= TOL_FP32


def tiny_engine(host, z_channels=16):
    """What the host builds for a KL VAE file without quant convolutions (SD3, Flux): an AutoencodingEngine around
    the same Encoder and Decoder, no post_quant_conv."""
    dd = {"double_z": True, "z_channels": z_channels, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
          "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    mod = "comfy.ldm.modules.diffusionmodules.model."
    return seeded_(host[0].AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": mod + "Encoder", "params": dd},
        decoder_config={"target": mod + "Decoder", "params": dd}))


def test_kl_without_quant_convs_decodes_and_encodes_exactly(host):
    """SD3/Flux-format files: no post_quant_conv or quant_conv. These took the host's plain decode before."""
    model = tiny_engine(host)
    assert not hasattr(model, "post_quant_conv") and vae.decoder_for(model)[0] == "kl" and enc.can_encode(model)
    z = latent((1, 16, 9, 7))
    x = image((1, 3, 36, 28))
    with torch.no_grad():
        ref, ref_z = model.decode(z), model.encode(x)
    out = vae.sliced_decode(model, z, 2)
    assert out.shape == ref.shape == (1, 3, 36, 28)
    assert (out - ref).abs().max().item() <= TOL_FP32
    out_z = enc.kl_encode(model, x, 2)
    assert out_z.shape == ref_z.shape == (1, 16, 9, 7)
    assert (out_z - ref_z).abs().max().item() <= TOL_FP32


def test_other_engines_are_not_taken_for_kl(host):
    """An AutoencodingEngine around another decoder class (the host's video VAEs) is not a KL VAE here."""
    model = tiny_engine(host)

    class VideoDecoder(type(model.decoder)):
        pass

    model.decoder.__class__ = VideoDecoder
    with pytest.raises(vae.SliceUnsupported, match="AutoencodingEngine"):
        vae.decoder_for(model)


def test_band_local_norm_or_missing_halo_is_detected(host, monkeypatch):
    """The comparison can fail: per-band GroupNorm statistics, or a convolution without halo rows, are far off."""
    model = tiny_kl(host)
    x = image((1, 3, 52, 44))
    with torch.no_grad():
        ref = model.encode(x)
    with monkeypatch.context() as m:
        def band_local(self, x, r0, a, b, h_in, stack):
            y = torch.nn.functional.group_norm(x, self.norm.num_groups, self.norm.weight, self.norm.bias,
                                               self.norm.eps)
            return torch.nn.functional.silu(y) if self.silu else y

        m.setattr(rowops.GroupNormAct, "__call__", band_local)
        assert (enc.kl_encode(model, x, 3) - ref).abs().max().item() > 1e-2
    with monkeypatch.context() as m:
        m.setattr(rowops.Conv, "need", lambda self, a, b, h_in: (a, b))   # zeros at every band edge
        assert (enc.kl_encode(model, x, 3) - ref).abs().max().item() > 1e-2


def test_unsupported_encoders_are_named(host):
    with pytest.raises(vae.SliceUnsupported, match="Linear"):
        enc.kl_encode(torch.nn.Linear(2, 2), image((1, 3, 16, 16)), 2)
    with pytest.raises(vae.SliceUnsupported, match="4-D"):
        enc.kl_encode(tiny_kl(host), image((1, 3, 2, 16, 16)), 2)


def test_group_norm_act_in_group_chunks_equals_torch_group_norm_on_strided_input():
    """The chunked fp32 work gives torch's GroupNorm (+ SiLU) in fp32 and bf16, also on a non-contiguous band."""
    rowops = importlib.import_module("pyra_pack.core.vae.rowops")
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(32, 64, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 64, 9, 16).transpose(-1, -2)  # non-contiguous
    op = rowops.GroupNormAct(norm, silu=True)
    xg = x.reshape(2, 32, -1)
    var, mean = torch.var_mean(xg, dim=-1, correction=0)
    op.stats = (mean, torch.rsqrt(var + norm.eps))
    want = torch.nn.functional.silu(norm(x))
    torch.testing.assert_close(op(x, 0, 0, 0, 0, None), want, atol=1e-5, rtol=1e-5)
    xb = x.to(torch.bfloat16)
    var, mean = torch.var_mean(xb.float().reshape(2, 32, -1), dim=-1, correction=0)
    op.stats = (mean, torch.rsqrt(var + norm.eps))
    got = op(xb, 0, 0, 0, 0, None)
    ref = torch.nn.functional.silu(norm(xb.float()).to(torch.bfloat16))  # rounded before the SiLU, as the host
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref.float(), atol=1e-2, rtol=1e-2)


# The KL decode's fast paths (sub-pixel upsample + conv, fused GroupNorm, whole low levels) against their
# references and the host's full decode.

def conv3x3(cin=6, cout=5, seed=0):
    return seeded_(torch.nn.Conv2d(cin, cout, 3, padding=1), seed)


def run_rows(ops, x, a, b):
    """Output rows [a, b) of `ops` on x, computed by the executor from only the input rows their `need` asks for."""
    return stream.Program(ops, [], x.shape[-2]).band(0, len(ops), stream.Rows(x), a, b)


@pytest.mark.parametrize("rows", [(0, 14), (0, 1), (3, 8), (5, 6), (13, 14), (4, 13)])
def test_upconv_equals_upsample_then_conv(rows):
    conv = conv3x3()
    x = latent((2, 6, 7, 5))
    with torch.no_grad():
        ref = conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))[..., rows[0]:rows[1], :]
        fast = run_rows([rowops.UpConv2x(conv)], x, *rows)
        slow = run_rows([rowops.Upsample2x(), rowops.Conv(conv)], x, *rows)
    assert fast.shape == slow.shape == ref.shape
    assert (fast - ref).abs().max().item() <= 1e-5
    assert (slow - ref).abs().max().item() <= 1e-5


def test_upconv_with_swapped_phases_differs(monkeypatch):
    """The check above can fail: tap sums assigned to the wrong output phase are far off."""
    conv = conv3x3()
    x = latent((1, 6, 7, 5))
    op = rowops.UpConv2x(conv)
    kernels, bias = op.phase_weights(x.device, x.dtype)
    monkeypatch.setattr(op, "phase_weights", lambda device, dtype: (kernels[::-1], bias))
    with torch.no_grad():
        ref = conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        assert (run_rows([op], x, 0, 14) - ref).abs().max().item() > 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_group_norm_equals_reference(dtype):
    norm = seeded_(torch.nn.GroupNorm(4, 12, eps=1e-6))
    x = (latent((2, 12, 5, 7)) * 3 + 1).to(dtype)
    acc = rowops.GroupStats(4)
    acc.add(x)
    stats = acc.result(norm.eps)
    out = {}
    for fused in (False, True):
        op = rowops.GroupNormAct(norm, False, fused)
        op.stats = stats
        out[fused] = op(x.clone(), 0, 0, 5, 5, []).float()
    with torch.no_grad():
        host_way = norm.to(dtype)(x).float()
    tol = 1e-5 if dtype == torch.float32 else 2 ** -7 * host_way.abs().max().item()   # bf16: one rounding step
    assert (out[True] - out[False]).abs().max().item() <= tol
    assert (out[True] - host_way).abs().max().item() <= tol


def test_whole_steps_real_sdxl_layout(host):
    """The real SDXL/Flux layout runs its 1/8- and 1/4-resolution steps whole (3 + 1 + 3), nothing larger."""
    dd = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    with torch.device("meta"):
        model = host[0].AutoencoderKL(ddconfig=dd, embed_dim=4)
    assert kl.whole_steps(model, 256, 256) == 7
    assert len(kl.up_steps(model)) == 15


@pytest.mark.parametrize("rows", [1, 3, 13])
def test_fast_decode_equals_full_and_reference(host, rows):
    model = tiny_kl(host)
    z = latent((2, 4, 13, 11))
    assert kl.whole_steps(model, 13, 11) > 0   # the case exercises the whole-run prefix
    with torch.no_grad():
        ref = model.decode(z)
    fast = kl.kl_decode(model, z, rows)
    slow = kl.kl_decode(model, z, rows, fast=False)
    assert fast.shape == ref.shape
    assert (fast - ref).abs().max().item() <= TOL_FP32
    assert (slow - ref).abs().max().item() <= TOL_FP32


def test_fast_decode_bf16_within_twice_the_precision_gap(host):
    model = tiny_kl(host, ch_mult=(1, 2, 2, 2), num_res_blocks=2)
    z = latent((1, 4, 9, 8))
    with torch.no_grad():
        ref32 = model.decode(z)
        model16 = model.to(torch.bfloat16)
        ref16 = model16.decode(z.bfloat16()).float()
    gap = (ref16 - ref32).abs().max().item()
    for fast in (True, False):
        out = kl.kl_decode(model16, z.bfloat16(), 2, fast=fast)
        assert (out - ref32).abs().max().item() <= 2 * gap
