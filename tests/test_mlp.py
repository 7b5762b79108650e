"""MLP noise predictor: shapes, linear growth for large inputs, time embedding, GroupNorm."""

import pytest
import torch
from torch import nn

import dlpm.models.mlp as mlp_module
from dlpm.models import build_model
from dlpm.models.mlp import MLP, GroupNorm1d, MLPConfig, SinusoidalEmbedding

# One change from the default per entry: each switch of the architecture.
VARIANTS = [
    {},
    {"group_norm": False},
    {"skip_connection": False},
    {"time_emb_type": "learnable"},
    {"linear_input_path": False},
    {"norm_groups": 4},
    {"act": "relu"},
]


def _relative_nonlinearity(net: nn.Module, scale: float) -> float:
    """Return |f(2 s x) - 2 f(s x)| / |f(s x)| over a batch: 0 for a linear map at scale s."""
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    t = torch.rand(64)
    with torch.no_grad():
        once = net(scale * x, t)
        twice = net(2 * scale * x, t)
    return ((twice - 2 * once).norm() / once.norm()).item()


def test_mlp_output_shape():
    net = MLP(dim=2, nunits=16, nblocks=2)
    assert net(torch.randn(5, 2), torch.rand(5)).shape == (5, 2)


def test_mlp_rejects_bad_time_shape():
    net = MLP(dim=2, nunits=16, nblocks=1)
    with pytest.raises(ValueError, match="t must have shape"):
        net(torch.randn(5, 2), torch.rand(5, 1))


@pytest.mark.parametrize("options", VARIANTS)
def test_mlp_output_grows_linearly(options):
    # The output is (linear in x) + (bounded terms) for large |x|, so the relative deviation
    # from linearity at scale s is O(1/s); at s = 1e4 it is ~1e-4, far below 1e-2.
    # A network that normalises the raw input saturates and gives a deviation near 1.
    net = MLP(dim=2, nunits=32, nblocks=3, **options)
    with torch.no_grad():
        if net.input_gain is not None:
            net.input_gain.bias.fill_(0.5)
    assert _relative_nonlinearity(net, 1e4) < 1e-2


def test_linearity_check_detects_saturating_network():
    # Negative control: GroupNorm right after the first layer bounds the output, which is the
    # failure the MLP avoids; the check above must reject such a network.
    class Saturating(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(2, 32), nn.GroupNorm(8, 32), nn.SiLU())
            self.out = nn.Linear(32, 2)

        def forward(self, x, t):
            return self.out(self.layers(x))

    assert _relative_nonlinearity(Saturating(), 1e4) > 0.5


def test_linear_input_path_follows_x_over_sigma():
    # With the residual branch zeroed, eps = g(t) * x exactly: a bias of 1/sigma in the gain
    # gives x / sigma, the large-|x| target of the DLPM regression.
    net = MLP(dim=2, nunits=16, nblocks=1)
    sigma = 0.25
    with torch.no_grad():
        net.output.weight.zero_()
        net.output.bias.zero_()
        net.input_gain.bias.fill_(1 / sigma)
    x = torch.randn(8, 2) * 1e3
    torch.testing.assert_close(net(x, torch.rand(8)), x / sigma)


def test_sinusoidal_embedding_separates_adjacent_steps():
    # Adjacent steps of a 1000-step chain (t/T apart by 0.001) must map to distinct features:
    # the fastest frequency (1000 rad per unit) turns by 1 rad between them.
    embedding = SinusoidalEmbedding(32)
    t = torch.arange(1000) / 1000
    features = embedding(t)
    gaps = (features[1:] - features[:-1]).norm(dim=1)
    assert gaps.min().item() > 0.5


def test_group_norm_1d_matches_torch():
    torch.manual_seed(0)
    reference = nn.GroupNorm(4, 16)
    ours = GroupNorm1d(4, 16)
    with torch.no_grad():
        reference.weight.uniform_()
        reference.bias.uniform_()
        ours.weight.copy_(reference.weight)
        ours.bias.copy_(reference.bias)
    h = torch.randn(10, 16) * 3 + 1
    torch.testing.assert_close(ours(h), reference(h))


def test_norm_groups_must_divide_units():
    with pytest.raises(ValueError, match="norm_groups"):
        MLP(nunits=10, norm_groups=4)


def test_build_model_from_config_section():
    net = build_model("mlp", MLPConfig(nunits=8, nblocks=1), (3,))
    assert net(torch.randn(4, 3), torch.rand(4)).shape == (4, 3)


def test_build_model_rejects_images():
    with pytest.raises(ValueError, match="vector data"):
        build_model("mlp", MLPConfig(), (1, 28, 28))


@pytest.mark.parametrize(
    "options", VARIANTS + [{"act": "gelu"}, {"act": "tanh"}, {"act": "leaky_relu"}]
)
@pytest.mark.parametrize("distinct_times", [1, 7])
def test_inference_path_matches_training_path(monkeypatch, options, distinct_times):
    # The no-grad path evaluates rows in chunks with reused buffers; 40 rows per chunk here, so
    # a batch of 100 ends on a partial chunk. Its output must equal the autograd path's.
    monkeypatch.setattr(mlp_module, "INFERENCE_CHUNK_BYTES", 40 * 32 * 4)
    torch.manual_seed(0)
    net = MLP(dim=3, nunits=32, nblocks=3, **options)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.3)
    x = torch.randn(100, 3) * 5
    t = torch.randint(0, distinct_times, (100,)) / 10
    reference = net(x, t)
    assert reference.requires_grad
    with torch.no_grad():
        fast = net(x, t)
    # Float32 rounding of differently blocked matrix products, relative to the output's scale
    # (without normalisation the activations reach 1e2 here).
    scale = reference.abs().max().item()
    torch.testing.assert_close(fast, reference.detach(), rtol=1e-5, atol=1e-5 * scale)


def test_inference_path_keeps_dropout_in_training_mode():
    # The chunked no-grad path has no dropout, so training mode must keep the dropping path:
    # two calls then differ. In eval mode they agree.
    net = MLP(dim=2, nunits=32, nblocks=2, dropout_rate=0.5)
    x, t = torch.randn(50, 2), torch.rand(50)
    with torch.no_grad():
        assert not torch.equal(net(x, t), net(x, t))
        net.eval()
        torch.testing.assert_close(net(x, t), net(x, t), rtol=0, atol=0)
