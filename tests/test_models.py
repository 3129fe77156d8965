"""age2hie_hub.models: registry, key layouts, heads, importers of foreign weights, inflation, export.

Expected key layouts are written down here from the reference code (torchvision's
models/video/resnet.py `r3d_18`, models/resnet.py `resnet18`; UKBiobank_deep_pretrain's `SFCN`), not
imported: torchvision is not a dependency.
"""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch

from age2hie_hub.errors import CheckpointError
from age2hie_hub.models import (
    HEAD_ARGS,
    Age2HieNet,
    ModelConfig,
    build_model,
    inflate_2d_to_3d,
    list_models,
    load_imagenet_resnet18,
    load_kinetics_r3d18,
    load_sfcn_ukbiobank,
    predict_outputs,
    replace_head,
)

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
HEADS = ("outcome", "age_regression", "age_softbin", "classification")


def expand(lines: str) -> list[str]:
    """Key list from a compact listing: `<bn>` stands for a BatchNorm's five state-dict entries."""
    keys = []
    for key in lines.split():
        keys += [key.replace("<bn>", b) for b in BN] if "<bn>" in key else [key]
    return keys


def _blocks_3d(layer: int, n_blocks: int) -> str:
    text = ""
    for b in range(n_blocks):
        text += f" layer{layer}.{b}.conv1.0.weight layer{layer}.{b}.conv1.1.<bn>"
        text += f" layer{layer}.{b}.conv2.0.weight layer{layer}.{b}.conv2.1.<bn>"
        if b == 0 and layer > 1:
            text += f" layer{layer}.0.downsample.0.weight layer{layer}.0.downsample.1.<bn>"
    return text


# torchvision.models.video.r3d_18: VideoResNet(BasicBlock, [Conv3DSimple] * 4, [2, 2, 2, 2], BasicStem)
R3D_18_KEYS = expand(
    "stem.0.weight stem.1.<bn>" + "".join(_blocks_3d(i, 2) for i in range(1, 5)) + " fc.weight fc.bias"
)
# torchvision.models.resnet18: ResNet(BasicBlock, [2, 2, 2, 2]), listed in full
RESNET18_KEYS = expand(
    """
    conv1.weight bn1.<bn>
    layer1.0.conv1.weight layer1.0.bn1.<bn> layer1.0.conv2.weight layer1.0.bn2.<bn>
    layer1.1.conv1.weight layer1.1.bn1.<bn> layer1.1.conv2.weight layer1.1.bn2.<bn>
    layer2.0.conv1.weight layer2.0.bn1.<bn> layer2.0.conv2.weight layer2.0.bn2.<bn>
    layer2.0.downsample.0.weight layer2.0.downsample.1.<bn>
    layer2.1.conv1.weight layer2.1.bn1.<bn> layer2.1.conv2.weight layer2.1.bn2.<bn>
    layer3.0.conv1.weight layer3.0.bn1.<bn> layer3.0.conv2.weight layer3.0.bn2.<bn>
    layer3.0.downsample.0.weight layer3.0.downsample.1.<bn>
    layer3.1.conv1.weight layer3.1.bn1.<bn> layer3.1.conv2.weight layer3.1.bn2.<bn>
    layer4.0.conv1.weight layer4.0.bn1.<bn> layer4.0.conv2.weight layer4.0.bn2.<bn>
    layer4.0.downsample.0.weight layer4.0.downsample.1.<bn>
    layer4.1.conv1.weight layer4.1.bn1.<bn> layer4.1.conv2.weight layer4.1.bn2.<bn>
    fc.weight fc.bias
    """
)
# UKBiobank_deep_pretrain SFCN, as saved through nn.DataParallel
UKB_SFCN_KEYS = expand(
    " ".join(f"module.feature_extractor.conv_{i}.0.weight module.feature_extractor.conv_{i}.0.bias "
             f"module.feature_extractor.conv_{i}.1.<bn>" for i in range(6))
    + " module.classifier.conv_6.weight module.classifier.conv_6.bias"
)


def _bn_entry(key: str, n: int, gen: torch.Generator) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.tensor(1000)
    if key.endswith("running_var"):
        return torch.rand(n, generator=gen) + 0.5
    return torch.randn(n, generator=gen) * 0.1 + (1.0 if key.endswith("weight") else 0.0)


def fake_r3d18_kinetics(seed: int = 0, width: int = 64) -> dict[str, torch.Tensor]:
    """Random tensors in the shapes torchvision's Kinetics-400 r3d_18 file has (width 64; less for speed)."""
    gen = torch.Generator().manual_seed(seed)
    planes = {1: width, 2: 2 * width, 3: 4 * width, 4: 8 * width}
    out = {}
    for key in R3D_18_KEYS:
        parts = key.split(".")
        if key == "stem.0.weight":
            out[key] = torch.randn(width, 3, 3, 7, 7, generator=gen) * 0.05
        elif parts[0] == "stem":
            out[key] = _bn_entry(key, width, gen)
        elif parts[0] == "fc":
            out[key] = torch.randn((400, 8 * width) if key == "fc.weight" else (400,), generator=gen) * 0.05
        else:
            layer, block = int(parts[0][5:]), int(parts[1])
            p = planes[layer]
            inp = planes[max(layer - 1, 1)] if block == 0 else p
            if parts[3] == "1":  # conv1.1 / conv2.1 / downsample.1: BatchNorm
                out[key] = _bn_entry(key, p, gen)
            elif parts[2] == "downsample":
                out[key] = torch.randn(p, inp, 1, 1, 1, generator=gen) * 0.1
            else:
                out[key] = torch.randn(p, inp if parts[2] == "conv1" else p, 3, 3, 3, generator=gen) * 0.05
    return out


def fake_resnet18_imagenet(seed: int = 0, width: int = 64) -> dict[str, torch.Tensor]:
    """Random tensors in torchvision resnet18's shapes (width 64 = the real one; smaller for fast tests)."""
    gen = torch.Generator().manual_seed(seed)
    planes = {1: width, 2: 2 * width, 3: 4 * width, 4: 8 * width}
    out = {}
    for key in RESNET18_KEYS:
        parts = key.split(".")
        if key == "conv1.weight":
            out[key] = torch.randn(width, 3, 7, 7, generator=gen) * 0.05
        elif parts[0] == "bn1":
            out[key] = _bn_entry(key, width, gen)
        elif parts[0] == "fc":
            out[key] = torch.randn((1000, 8 * width) if key == "fc.weight" else (1000,), generator=gen) * 0.05
        else:
            layer, block = int(parts[0][5:]), int(parts[1])
            p = planes[layer]
            inp = planes[max(layer - 1, 1)] if block == 0 else p
            if parts[2] == "downsample":
                out[key] = (torch.randn(p, inp, 1, 1, generator=gen) * 0.1 if parts[3] == "0"
                            else _bn_entry(key, p, gen))
            elif parts[2].startswith("conv"):
                out[key] = torch.randn(p, inp if parts[2] == "conv1" else p, 3, 3, generator=gen) * 0.1
            else:
                out[key] = _bn_entry(key, p, gen)
    return out


def fake_sfcn_ukbiobank(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    channels = [1, 32, 64, 128, 256, 256, 64]
    out = {}
    for key in UKB_SFCN_KEYS:
        parts = key.split(".")
        if parts[2] == "conv_6":
            out[key] = torch.randn((40, 64, 1, 1, 1) if parts[3] == "weight" else (40,), generator=gen) * 0.1
            continue
        i = int(parts[2][5:])
        if parts[3] == "0":
            k = 1 if i == 5 else 3
            shape = (channels[i + 1], channels[i], k, k, k) if parts[4] == "weight" else (channels[i + 1],)
            out[key] = torch.randn(shape, generator=gen) * 0.1
        else:
            out[key] = _bn_entry(key, channels[i + 1], gen)
    return out


def tiny(arch: str, head: str = "outcome", **arch_args) -> Age2HieNet:
    torch.manual_seed(0)
    return build_model(ModelConfig(arch, {"width": 0.125, **arch_args}, head)).eval()


# ---------------------------------------------------------------- registry and configs


def test_registry_names():
    assert list_models() == ["resnet3d_10", "resnet3d_18", "resnet3d_34", "sfcn", "slice_resnet18"]


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are .*resnet3d_18.*slice_resnet18"):
        build_model(ModelConfig("resnet3d_50"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ModelConfig("sfcn", {"widht": 0.5}), r"unknown arch_args \['widht'\]; valid are .*width"),
        (ModelConfig("resnet3d_18", {"depth_axis": "t"}), "depth_axis must be one of"),
        (ModelConfig("slice_resnet18", {"pooling": "max"}), "pooling must be one of"),
        (ModelConfig("sfcn", {"in_channels": 0}), "in_channels must be a positive integer"),
        (ModelConfig("sfcn", head="age_softbin", head_args={"nbins": 3}), r"unknown head_args \['nbins'\]"),
        (ModelConfig("sfcn", head="age_softbin", head_args={"age_range": [5, 1]}), "low < high"),
        (ModelConfig("sfcn", head="age_regression", head_args={"unit": "days"}), "unit must be one of"),
        (ModelConfig("sfcn", head="classification", head_args={"num_classes": 1}), "num_classes"),
    ],
)
def test_bad_arguments_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        build_model(config)


def test_build_model_by_name_like_timm_create_model():
    torch.manual_seed(0)
    by_name = build_model("resnet3d_18", head="age_softbin", head_args={"bins": 4}, in_channels=2, width=0.125)
    assert by_name.config == ModelConfig("resnet3d_18", {"in_channels": 2, "width": 0.125}, "age_softbin", {"bins": 4})
    torch.manual_seed(0)
    by_config = build_model(ModelConfig("resnet3d_18", {"in_channels": 2, "width": 0.125}, "age_softbin", {"bins": 4}))
    # same seed, same config: bit-identical weights (a weight comparison, not a forward pass)
    assert by_name.state_dict().keys() == by_config.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), by_config.state_dict().values()))
    plain = build_model("sfcn")  # the call from the issue: default head, default arch_args
    assert plain.config == ModelConfig("sfcn") and plain.config.head == "outcome"
    assert build_model("sfcn", arch_args={"width": 0.25}).config.arch_args == {"width": 0.25}


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: build_model("resnet3d_50"), ValueError, "valid names are .*resnet3d_18.*slice_resnet18"),
        (lambda: build_model("sfcn", widht=0.5), ValueError, r"unknown arch_args \['widht'\]; valid are .*width"),
        (lambda: build_model("sfcn", head="age_softbin", bins=4), ValueError,
         r"unknown arch_args \['bins'\].*head_args of 'age_softbin'"),
        (lambda: build_model("sfcn", head="age"), ValueError, "head must be one of"),
        (lambda: build_model("sfcn", head="age_softbin", head_args={"nbins": 3}), ValueError, r"unknown head_args"),
        (lambda: build_model("sfcn", width=0.5, arch_args={"width": 0.25}), TypeError, "given both"),
        (lambda: build_model(ModelConfig("sfcn"), head="outcome"), TypeError,
         r"takes no other arguments, got \['head'\]"),
        (lambda: build_model(ModelConfig("sfcn"), in_channels=2), TypeError, r"got \['in_channels'\]"),
        (lambda: build_model(None), TypeError, r"ModelConfig or an architecture name, got NoneType.*"
                                               r"build_model\(ModelConfig\(arch=\"sfcn\""),
        (lambda: build_model({"arch": "sfcn"}), TypeError,
         r"got dict; call build_model\(ModelConfig\.from_dict\(d\)\)"),
    ],
)
def test_build_model_bad_calls_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------- shapes, heads, export


@pytest.mark.parametrize("arch", ["resnet3d_10", "resnet3d_18", "resnet3d_34", "sfcn", "slice_resnet18"])
def test_output_shapes_every_arch_and_head(arch):
    # sfcn needs >= 32 voxels a side (five max-pools); the others take small anisotropic volumes
    x = torch.randn(2, 1, 32, 32, 32) if arch == "sfcn" else torch.randn(2, 1, 24, 20, 8)
    expected = {"outcome": (2,), "age_regression": (2,), "age_softbin": (2, 40), "classification": (2, 3)}
    base = tiny(arch)
    for head in HEADS:
        model = replace_head(base, head, {"num_classes": 3} if head == "classification" else None)
        with torch.inference_mode():
            raw = model(x)
            out = model.predict_outputs(raw)
        assert raw.shape == expected[head], (arch, head)
        assert torch.isfinite(raw).all()
        if head == "outcome":
            assert out["probability"].shape == (2,) and ((out["probability"] > 0) & (out["probability"] < 1)).all()
        elif head == "classification":
            assert torch.allclose(out["probabilities"].sum(-1), torch.ones(2))
        else:
            assert out["age"].shape == (2,)
        if head == "age_softbin":
            assert torch.allclose(raw.exp().sum(-1), torch.ones(2))
            assert ((out["age"] > 42) & (out["age"] < 82)).all() and (out["age_sd"] > 0).all()


def test_multichannel_and_anisotropic_input():
    model = tiny("resnet3d_10", in_channels=2)
    with torch.inference_mode():
        assert model(torch.randn(1, 2, 32, 28, 12)).shape == (1,)
        with pytest.raises(ValueError, match="expected 2 input channel"):
            model(torch.randn(1, 1, 32, 28, 12))
        with pytest.raises(ValueError, match=r"expected input \(N, C, X, Y, Z\)"):
            model(torch.randn(2, 32, 28, 12))
    with pytest.raises(ValueError, match="every spatial side must be >= 32"):
        tiny("sfcn")(torch.randn(1, 1, 32, 32, 24))


def test_softbin_expected_age_and_spread():
    model = build_model(ModelConfig("sfcn", {"width": 0.125}, "age_softbin", {"bins": 4, "age_range": [0, 40]}))
    centers = torch.tensor([5.0, 15.0, 25.0, 35.0])
    prob = torch.tensor([[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    out = predict_outputs(model.head, prob.clamp_min(1e-12).log())
    assert torch.allclose(out["age"], torch.tensor([20.0, 5.0]), atol=1e-4)
    assert torch.allclose(out["age_sd"], torch.tensor([5.0, 0.0]), atol=1e-3)
    labels = model.head.soft_labels(torch.tensor([20.0, 3.0]), sigma=4.0)
    assert torch.allclose(labels.sum(-1), torch.ones(2))
    assert abs(float((labels[0] * centers).sum()) - 20.0) < 1e-4  # symmetric about a bin edge
    assert labels[1].argmax() == 0


def test_age_regression_units_and_offset():
    model = build_model(ModelConfig("sfcn", {"width": 0.125}, "age_regression",
                                    {"unit": "weeks", "offset": 40.0, "scale": 2.0})).eval()
    torch.nn.init.zeros_(model.head.fc.weight)
    torch.nn.init.constant_(model.head.fc.bias, 1.5)
    with torch.inference_mode():
        assert torch.allclose(model(torch.randn(2, 1, 32, 32, 32)), torch.tensor([43.0, 43.0]))
    assert model.head.unit == "weeks"


def test_head_args_table_matches_heads():
    assert set(HEAD_ARGS) == set(HEADS)


@pytest.mark.parametrize("arch", ["resnet3d_10", "resnet3d_34", "sfcn", "slice_resnet18"])
def test_onnx_export_torchscript_matches_torch(arch):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = tiny(arch, "age_softbin")
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 1, 32, 32, 32),), buffer, dynamo=False, opset_version=17,
                      input_names=["volume"], output_names=["raw"], dynamic_axes={"volume": {0: "n"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session.run(None, {"volume": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_onnx_export_dynamo_attention_slices():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = tiny("slice_resnet18", "outcome", pooling="attention")
    program = torch.onnx.export(model, (torch.randn(1, 1, 32, 32, 16),), dynamo=True, opset_version=18,
                                dynamic_shapes=({0: torch.export.Dim("n")},), verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 32, 32, 16)
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- key layouts


def test_resnet3d_18_has_torchvision_r3d_18_keys():
    backbone = build_model(ModelConfig("resnet3d_18")).backbone.state_dict()
    assert list(backbone) == [k for k in R3D_18_KEYS if not k.startswith("fc.")]
    assert backbone["stem.0.weight"].shape == (64, 1, 3, 7, 7)  # 1 input channel by default
    assert backbone["layer3.0.downsample.0.weight"].shape == (256, 128, 1, 1, 1)


def test_resnet3d_10_and_34_block_counts():
    for arch, blocks in (("resnet3d_10", (1, 1, 1, 1)), ("resnet3d_34", (3, 4, 6, 3))):
        keys = tiny(arch).backbone.state_dict()
        for layer, n in enumerate(blocks, start=1):
            assert f"layer{layer}.{n - 1}.conv2.0.weight" in keys and f"layer{layer}.{n}.conv1.0.weight" not in keys


def test_slice_resnet18_has_torchvision_resnet18_keys():
    keys = list(build_model(ModelConfig("slice_resnet18")).backbone.state_dict())
    assert keys == [k for k in RESNET18_KEYS if not k.startswith("fc.")]


def test_sfcn_has_ukbiobank_keys():
    keys = list(build_model(ModelConfig("sfcn", head="age_softbin")).state_dict())
    expected = [k.replace("module.", "backbone.", 1) for k in UKB_SFCN_KEYS if "classifier" not in k]
    assert keys == expected + ["head.fc.weight", "head.fc.bias"]


def test_parameter_counts_match_torchvision_published_numbers():
    """torchvision's weight metadata: r3d_18 has 33,371,472 parameters, resnet18 11,689,512 (with their fc)."""
    def count(module):
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):  # shapes only: no time spent on initialisation
        r3d = build_model(ModelConfig("resnet3d_18", {"in_channels": 3})).backbone
        r2d = build_model(ModelConfig("slice_resnet18", {"in_channels": 3})).backbone
    assert count(r3d) + 512 * 400 + 400 == 33_371_472
    assert count(r2d) + 512 * 1000 + 1000 == 11_689_512


def test_width_multiplier_slims_channels():
    sd = tiny("resnet3d_18").backbone.state_dict()
    assert sd["stem.0.weight"].shape[0] == 8 and sd["layer4.1.conv2.0.weight"].shape[:2] == (64, 64)
    assert tiny("resnet3d_18").num_features == 64


# ---------------------------------------------------------------- importers


def _outputs(model: Age2HieNet, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def test_kinetics_r3d18_loads_every_key_and_changes_outputs(caplog):
    model = build_model(ModelConfig("resnet3d_18")).eval()
    x = torch.randn(1, 1, 8, 16, 16)
    before = _outputs(model, x)
    fake = fake_r3d18_kinetics()
    with caplog.at_level(logging.INFO, logger="age2hie_hub.models.importers"):
        load_kinetics_r3d18(model, fake)
    assert "fc.bias" in caplog.text and "fc.weight" in caplog.text  # dropped classifier is logged
    loaded = model.backbone.state_dict()
    for key, value in fake.items():
        if key.startswith("fc."):
            continue
        want = value.sum(1, keepdim=True) if key == "stem.0.weight" else value  # RGB summed to grey
        assert torch.equal(loaded[key], want.to(loaded[key].dtype)), key
    assert not torch.allclose(before, _outputs(model, x))


def test_kinetics_rgb_stem_for_multichannel_input():
    fake = fake_r3d18_kinetics(width=8)
    two = load_kinetics_r3d18(tiny("resnet3d_18", in_channels=2), fake)
    three = load_kinetics_r3d18(tiny("resnet3d_18", in_channels=3), fake)
    grey = fake["stem.0.weight"].sum(1, keepdim=True)
    assert torch.allclose(two.backbone.stem[0].weight, torch.cat([grey / 2, grey / 2], 1))
    assert torch.equal(three.backbone.stem[0].weight, fake["stem.0.weight"])  # kept as it is


def test_kinetics_wrong_missing_and_misshaped_keys_are_named():
    model = tiny("resnet3d_18")
    fake = fake_r3d18_kinetics(width=8)
    renamed = dict(fake)
    renamed["layer2.0.conv1.0.weights"] = renamed.pop("layer2.0.conv1.0.weight")
    with pytest.raises(CheckpointError, match=r"missing: \['layer2.0.conv1.0.weight'\].*unexpected: "
                                              r"\['layer2.0.conv1.0.weights'\]"):
        load_kinetics_r3d18(model, renamed)
    with pytest.raises(CheckpointError, match=r"100 mis-shaped: \['layer1.0.conv1.0.weight: file \(8, 8, 3, 3, 3\) "
                                              r"vs model \(16, 16, 3, 3, 3\)'"):
        load_kinetics_r3d18(tiny("resnet3d_18", width=0.25), fake)  # a wider model cannot take these weights
    with pytest.raises(CheckpointError, match=r"unexpected: \['layer1.1.conv1.0.weight'"):
        load_kinetics_r3d18(tiny("resnet3d_10"), fake)  # ResNet-10 has one block per layer
    with pytest.raises(TypeError, match="ResNet3d backbone"):
        load_kinetics_r3d18(tiny("sfcn"), fake)


def test_importers_read_files_and_refuse_code_pickles(tmp_path):
    from safetensors.torch import save_file

    fake = fake_r3d18_kinetics(width=8)
    torch.save(fake, tmp_path / "r3d_18.pth")
    save_file(fake, str(tmp_path / "r3d_18.safetensors"))
    torch.save({"state_dict": fake}, tmp_path / "wrapped.pt")
    for name in ("r3d_18.pth", "r3d_18.safetensors", "wrapped.pt"):
        model = load_kinetics_r3d18(tiny("resnet3d_18"), str(tmp_path / name))
        assert torch.equal(model.backbone.layer4[1].conv2[0].weight, fake["layer4.1.conv2.0.weight"]), name

    torch.save({"state_dict": fake, "note": io.StringIO("code-bearing object")}, tmp_path / "evil.pth")
    refused = r"evil.pth: refused to unpickle.*Unsupported global.*StringIO.*weights_only=True"
    with pytest.raises(CheckpointError, match=refused):
        load_kinetics_r3d18(tiny("resnet3d_18"), tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_kinetics_r3d18(tiny("resnet3d_18"), tmp_path / "absent.pth")
    for junk in ("junk.pth", "junk.safetensors"):
        (tmp_path / junk).write_bytes(b"not a checkpoint")
        with pytest.raises(CheckpointError, match=f"{junk}: not a readable"):
            load_kinetics_r3d18(tiny("resnet3d_18"), tmp_path / junk)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth: expected a state dict"):
        load_kinetics_r3d18(tiny("resnet3d_18"), tmp_path / "list.pth")


def test_imagenet_resnet18_into_slice_model(caplog):
    model = tiny("slice_resnet18", pooling="attention")
    fake = fake_resnet18_imagenet(width=8)  # width 0.125 of 64
    x = torch.randn(1, 1, 32, 32, 4)
    before = _outputs(model, x)
    pool_before = {k: v.clone() for k, v in model.backbone.pool.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="age2hie_hub.models.importers"):
        load_imagenet_resnet18(model, fake)
    assert "fc.weight" in caplog.text and "pool.V.weight" in caplog.text
    loaded = model.backbone.state_dict()
    for key, value in fake.items():
        if not key.startswith("fc."):
            want = value.sum(1, keepdim=True) if key == "conv1.weight" else value
            assert torch.equal(loaded[key], want.to(loaded[key].dtype)), key
    for key, value in pool_before.items():  # our attention pool is not in the ImageNet file: kept
        assert torch.equal(model.backbone.pool.state_dict()[key], value)
    assert not torch.allclose(before, _outputs(model, x))
    broken = dict(fake)
    del broken["layer3.1.bn2.running_var"]
    with pytest.raises(CheckpointError, match=r"missing: \['layer3.1.bn2.running_var'\]"):
        load_imagenet_resnet18(tiny("slice_resnet18"), broken)


def test_sfcn_ukbiobank_loads_backbone_and_softbin_head(caplog):
    fake = fake_sfcn_ukbiobank()
    model = build_model(ModelConfig("sfcn", head="age_softbin")).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    before = _outputs(model, x)
    load_sfcn_ukbiobank(model, fake)
    state = model.state_dict()
    for key, value in fake.items():
        if "classifier" in key:
            target = "head.fc." + key.rsplit(".", 1)[1]
            assert torch.equal(state[target], value.flatten(1) if value.dim() == 5 else value)
        else:
            assert torch.equal(state[key.replace("module.", "backbone.", 1)], value), key
    after = _outputs(model, x)
    assert not torch.allclose(before, after)
    # the head then computes exactly the original classifier: 1x1x1 conv on pooled features, log-softmax
    with torch.inference_mode():
        pooled = model.backbone(x)
        conv_6 = torch.nn.functional.conv3d(
            pooled[:, :, None, None, None],
            fake["module.classifier.conv_6.weight"],
            fake["module.classifier.conv_6.bias"],
        )
        original = conv_6.flatten(1).log_softmax(1)
    assert torch.allclose(after, original, atol=1e-5)

    outcome = build_model(ModelConfig("sfcn", head="outcome"))
    with caplog.at_level(logging.INFO, logger="age2hie_hub.models.importers"):
        load_sfcn_ukbiobank(outcome, fake)
    assert "dropped the source classifier" in caplog.text and "classifier.conv_6.weight" in caplog.text
    with pytest.raises(CheckpointError, match=r"unexpected: \['feature_extractor.conv_6.0.weight'\]"):
        load_sfcn_ukbiobank(outcome, {**fake, "module.feature_extractor.conv_6.0.weight": torch.zeros(1)})


@pytest.mark.parametrize("in_channels", [1, 2])
def test_inflated_resnet18_matches_2d_net_on_depth_constant_input(in_channels):
    """I3D inflation: repeat/depth kernels give the 2D response exactly, away from the padded end slices."""
    fake = fake_resnet18_imagenet(seed=3, width=8)
    net2d = load_imagenet_resnet18(tiny("slice_resnet18", in_channels=in_channels), fake)
    net3d = load_imagenet_resnet18(tiny("resnet3d_18", in_channels=in_channels, stem_pool=True), fake)
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, 32, 32, generator=gen).repeat(1, in_channels, 1, 1)
    volume = image[..., None].repeat(1, 1, 1, 1, 128)  # constant along z, the depth axis
    with torch.inference_mode():
        f2d = net2d.backbone.encode_slices(image)  # (1, F)
        fmap = net3d.backbone.forward_features(volume)  # (1, F, 16, 1, 1)
    assert fmap.shape[2] == 16
    # depth receptive field of r3d-18 is 109 slices: position 8 (input slices 10..118) sees no padding
    torch.testing.assert_close(fmap[:, :, 8].mean(dim=(2, 3)), f2d, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fmap[:, :, 0].mean(dim=(2, 3)), f2d, atol=1e-3)  # the documented edge effect


def test_inflate_names_unknown_keys():
    inflated = inflate_2d_to_3d(fake_resnet18_imagenet(width=8))
    assert sorted(inflated) == sorted(R3D_18_KEYS)
    assert inflated["layer1.0.conv1.0.weight"].shape == (8, 8, 3, 3, 3)
    assert inflated["layer2.0.downsample.0.weight"].shape == (16, 8, 1, 1, 1)
    with pytest.raises(CheckpointError, match="classifier.weight"):
        inflate_2d_to_3d({"classifier.weight": torch.zeros(2, 2)})


# ---------------------------------------------------------------- transfer


def test_replace_head_keeps_backbone_and_logs_dropped_keys(caplog):
    source = build_model(ModelConfig("resnet3d_10", {"width": 0.125}, "age_softbin", {"bins": 10}))
    source.eval()
    with caplog.at_level(logging.INFO, logger="age2hie_hub.models.net"):
        target = replace_head(source, "outcome")
    assert "head.fc.weight" in caplog.text and "head.fc.bias" in caplog.text
    assert target.config == ModelConfig("resnet3d_10", {"width": 0.125}, "outcome", {})
    assert source.config.head == "age_softbin" and source.head.fc.out_features == 10  # unchanged
    assert not target.training
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[key], value)
    assert target.head.fc.weight.shape == (1, source.num_features)
    # a copy, not shared: training the new model leaves the source alone
    with torch.no_grad():
        target.backbone.stem[0].weight.add_(1.0)
    assert not torch.equal(target.backbone.stem[0].weight, source.backbone.stem[0].weight)
    x = torch.randn(2, 1, 16, 16, 8)
    with torch.inference_mode():
        assert target(x).shape == (2,)
    # and the rebuilt config restores the same structure, so a checkpoint round-trips
    rebuilt = build_model(target.config)
    rebuilt.load_state_dict(target.state_dict(), strict=True)
