import json

import pytest
import torch

from faststyle.errors import FaststyleError
from faststyle.transformer import TransformerNet


@pytest.fixture(scope="module")
def net() -> TransformerNet:
    torch.manual_seed(0)
    return TransformerNet().eval()


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 67, 93), (1, 3, 130, 255)])
def test_keeps_shape_and_range(net: TransformerNet, shape: tuple[int, ...]) -> None:
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == shape
    assert out.min() >= 0 and out.max() <= 1


def test_parameter_count_matches_johnson() -> None:
    # Johnson et al. report ≈1.68M parameters, i.e. rounded to 3 significant figures: ±5k.
    # Exact count, per layer: 9×9 convs 3→32 and 32→3 (+3 bias), 3×3 convs 32→64, 64→128, 10×128→128,
    # 128→64, 64→32, and a (γ, β) pair per channel of every instance norm. Convs before instance norm
    # have no bias (the norm subtracts it), which drops 1,600 parameters from the 1,679,235 of a biased net.
    convs = 81 * 3 * 32 + 9 * (32 * 64 + 64 * 128 + 10 * 128 * 128 + 128 * 64 + 64 * 32) + 81 * 32 * 3 + 3
    norms = 2 * (32 + 64 + 128 + 10 * 128 + 64 + 32)
    count = sum(p.numel() for p in TransformerNet().parameters())
    assert count == convs + norms == 1_677_635
    assert abs(count - 1.68e6) <= 5_000


def test_width_and_depth_options() -> None:
    half = TransformerNet(width=0.5, num_residual=3)
    assert len(half.residuals) == 3
    assert half.encoder[0][1].out_channels == 16
    assert half(torch.rand(1, 3, 33, 40)).shape == (1, 3, 33, 40)
    with pytest.raises(FaststyleError):
        TransformerNet(width=0)


def test_gradients_reach_every_parameter() -> None:
    net = TransformerNet(width=0.25, num_residual=2)
    x = torch.rand(2, 3, 37, 45, requires_grad=True)
    net(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_config_round_trip(net: TransformerNet) -> None:
    config = json.loads(json.dumps(net.config()))
    assert config == {"width": 1.0, "num_residual": 5}
    copy = TransformerNet.from_config(config).eval()
    copy.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 50, 61)
    with torch.no_grad():
        assert torch.equal(net(x), copy(x))
    with pytest.raises(FaststyleError, match="unknown keys"):
        TransformerNet.from_config({**config, "depth": 3})


def test_channels_last(net: TransformerNet) -> None:
    x = torch.rand(2, 3, 67, 93)
    with torch.no_grad():
        expected = net(x)
        cl_net = TransformerNet.from_config(net.config()).eval()
        cl_net.load_state_dict(net.state_dict())
        cl_net = cl_net.to(memory_format=torch.channels_last)
        out = cl_net(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
