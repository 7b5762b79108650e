"""UNet: shapes, timestep embedding, argument checks and a short denoising fit on digits."""

import math

import pytest
import torch

from bem.datasets.images import get_image_dataset
from dlpm.models.unet import UNetModel, count_parameters, timestep_embedding

# Level multipliers whose halvings divide each size (8 -> 4, 16 -> 4, 32 -> 4).
MULT_FOR_SIZE = {8: (1, 2), 16: (1, 2, 2), 32: (1, 2, 2, 2)}


def small_unet(channels: int, size: int, mult=None, **overrides) -> UNetModel:
    options = dict(
        channel_mult=mult or MULT_FOR_SIZE[size],
        num_res_blocks=1,
        attn_resolutions=(size // 2,),
        num_heads=2,
        image_size=size,
    )
    options.update(overrides)
    return UNetModel(channels, 16, channels, **options)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_output_shape(channels, size):
    torch.manual_seed(0)
    model = small_unet(channels, size)
    x = torch.randn(2, channels, size, size)
    assert model(x, torch.rand(2)).shape == (2, channels, size, size)


@pytest.mark.parametrize("mult", [(1, 2, 2), (1, 2, 2, 2)])
def test_mnist_size_28(mult):
    # (1, 2, 2) halves twice (28 -> 7); (1, 2, 2, 2) pads 28 to 32 and crops back.
    model = small_unet(1, 28, mult=mult, attn_resolutions=(14,))
    assert model(torch.randn(2, 1, 28, 28), torch.rand(2)).shape == (2, 1, 28, 28)


def randomise_zero_layers(model: UNetModel) -> None:
    """Give the zero-initialised layers random weights so that every path reaches the output."""
    for parameter in model.parameters():
        if torch.all(parameter == 0):
            torch.nn.init.normal_(parameter, std=0.1)


def test_padding_matches_explicit_padding():
    # A 28x28 input is zero-padded by 2 on each side to 32x32 and the output cropped back, so it
    # must equal the output on the explicitly padded input, cropped at the same offsets.
    torch.manual_seed(0)
    model = small_unet(1, 28, mult=(1, 2, 2, 2), attn_resolutions=())
    randomise_zero_layers(model)
    x, t = torch.randn(1, 1, 28, 28), torch.tensor([0.3])
    padded = model(torch.nn.functional.pad(x, (2, 2, 2, 2)), t)[..., 2:30, 2:30]
    torch.testing.assert_close(model(x, t), padded)


def test_learn_variance_doubles_channels():
    model = small_unet(3, 8, learn_variance=True)
    assert model(torch.randn(2, 3, 8, 8), torch.rand(2)).shape == (2, 6, 8, 8)


def test_output_is_zero_at_initialisation():
    # The output convolution is zero-initialised, as in improved DDPM.
    model = small_unet(1, 8)
    assert torch.all(model(torch.randn(2, 1, 8, 8), torch.rand(2)) == 0)


@pytest.mark.parametrize("scale_shift", [True, False])
def test_output_depends_on_timestep(scale_shift):
    torch.manual_seed(0)
    model = small_unet(1, 8, use_scale_shift_norm=scale_shift)
    randomise_zero_layers(model)
    x = torch.randn(1, 1, 8, 8)
    first = model(x, torch.tensor([500 / 1000]))
    second = model(x, torch.tensor([501 / 1000]))
    assert (first - second).abs().max() > 1e-4


def test_embedding_separates_neighbouring_steps():
    steps = torch.arange(1000) / 1000
    embedding = timestep_embedding(steps, 128)
    relative = (embedding[1:] - embedding[:-1]).norm(dim=1) / embedding[:-1].norm(dim=1)
    # With t scaled back to steps, neighbours differ by one radian at the fastest frequency,
    # and the relative distance is about 0.24 for every k. An embedding fed t/T unscaled moves
    # by at most 1e-3 radian, a relative distance below 3e-4.
    assert relative.min() > 0.1


def test_embedding_first_and_last_step_far_apart():
    steps = torch.tensor([0.0, 999 / 1000])
    first, last = timestep_embedding(steps, 128)
    cosine = torch.dot(first, last) / (first.norm() * last.norm())
    # Measured 0.18; the unscaled embedding gives 0.97.
    assert cosine < 0.5


def test_embedding_shape_odd_dim():
    assert timestep_embedding(torch.rand(3), 7).shape == (3, 7)


def test_attention_resolution_must_match_a_level():
    with pytest.raises(ValueError, match="attn_resolutions"):
        UNetModel(1, 16, 1, channel_mult=(1, 2), attn_resolutions=(3,), image_size=8)


def test_num_heads_must_divide_channels():
    with pytest.raises(ValueError, match="num_heads"):
        UNetModel(1, 16, 1, channel_mult=(1, 2), attn_resolutions=(4,), num_heads=3, image_size=8)


def test_wrong_input_shapes_rejected():
    model = small_unet(1, 8)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.randn(2, 1, 8, 8), torch.rand(2, 1))


def test_count_parameters():
    assert count_parameters(torch.nn.Linear(3, 2)) == 8
    frozen = torch.nn.Linear(3, 2).requires_grad_(False)
    assert count_parameters(frozen) == 0


def test_cifar10_lt_size():
    # 128 channels, (1, 2, 2, 2), 2 blocks, attention at 8x8 and 4x4, no FiLM: the model of
    # the DLPM CIFAR10-LT experiments, "about 37M parameters".
    model = UNetModel(
        3,
        128,
        3,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(8, 4),
        use_scale_shift_norm=False,
        image_size=32,
    )
    assert count_parameters(model) == 37_064_707


@pytest.fixture
def single_thread():
    """Run on one thread: OpenMP threads spin and stall on shared CPU cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_denoising_fit_lowers_loss_on_digits(single_thread):
    torch.manual_seed(0)
    dataset = get_image_dataset("digits")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    model = small_unet(1, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def noisy(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # Cosine schedule of improved DDPM: abar(t) = cos((t + s)/(1 + s) * pi/2)**2, s = 0.008.
        abar = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        abar = abar[:, None, None, None]
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    generator = torch.Generator().manual_seed(1)
    eval_x0 = images[torch.randint(len(images), (256,), generator=generator)]
    eval_t = torch.rand(256, generator=generator) * 0.98
    eval_noise = torch.randn(eval_x0.shape, generator=generator)

    def eval_loss() -> float:
        with torch.no_grad():
            prediction = model(noisy(eval_x0, eval_t, eval_noise), eval_t)
            return float(((prediction - eval_noise) ** 2).mean())

    before = eval_loss()
    for _ in range(20):
        x0 = images[torch.randint(len(images), (32,))]
        t = torch.rand(32) * 0.98
        noise = torch.randn_like(x0)
        loss = ((model(noisy(x0, t, noise), t) - noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()

    # The zero-initialised output predicts 0, so the loss starts at the mean of 16,384 squared
    # standard normals: 1 with standard deviation sqrt(2 / 16384) = 0.011.
    assert abs(before - 1.0) < 0.06
    # A drop of 0.1 is about 9 standard deviations of the evaluation noise.
    assert after < before - 0.1
