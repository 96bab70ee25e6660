import json

import pytest
import torch
from torch.nn import functional as F

from faststyle.errors import FaststyleError
from faststyle.transformer import ResidualBlock, TransformerNet, Upsample


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


def test_a_residual_block_adds_its_body_to_its_input() -> None:
    torch.manual_seed(0)
    block = ResidualBlock(8).eval()
    last_norm = block.body[-1][-1]
    x = torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        body = block.body(x)
        torch.testing.assert_close(block(x), x + body)
        last_norm.weight.zero_()
        last_norm.bias.zero_()
        torch.testing.assert_close(block(x), x)  # a silent body leaves the input through


def test_upsampling_repeats_each_pixel_before_its_convolution() -> None:
    up = Upsample(4, 4).eval()
    conv = up.conv[1]
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[range(4), range(4), 1, 1] = 1.0  # identity kernel
        x = torch.randn(1, 4, 5, 7)
        nearest = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
        torch.testing.assert_close(up(x), F.instance_norm(nearest, eps=up.conv[2].eps))


def test_odd_sizes_are_padded_at_the_bottom_and_right(net: TransformerNet) -> None:
    # output pixel (i, j) belongs to input pixel (i, j): the padding to a multiple of 4 goes after the image
    x = torch.rand(1, 3, 67, 93)
    padded = F.pad(x, (0, 3, 0, 1), mode="reflect")  # 68×96
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :67, :93])
        assert (net(x) - net(padded)[..., 1:, 3:]).abs().max() > 1e-2
