"""UNet noise predictor for images, in the style of improved DDPM.

Architecture after Nichol and Dhariwal, "Improved Denoising Diffusion Probabilistic Models"
(ICML 2021), itself built on the DDPM UNet of Ho et al. (2020). Residual blocks receive a
timestep embedding, added after a normalisation or applied as a FiLM scale and shift of the
normalised activations when ``use_scale_shift_norm`` is true. The blocks use GroupNorm and SiLU.
Multi-head self-attention runs at chosen feature-map resolutions. Strided convolutions
downsample, nearest-neighbour upsampling and a convolution upsample, and skip connections join
the two halves. Output convolutions start at zero, so every residual branch starts as the
identity.

The network is called as ``model(x, t)`` with ``t`` the rescaled timestep ``t/T`` in [0, 1).
:class:`UNetConfig` is its config section ``model.unet`` and :func:`build_unet` builds it.
"""

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bem.config import option

logger = logging.getLogger(__name__)

# Steps per unit of rescaled time fed to the sinusoidal embedding: t/T in [0, 1) is mapped back
# to [0, 1000), the integer-step range for which the DDPM embedding frequencies were chosen.
DEFAULT_TIME_SCALE = 1000.0


def timestep_embedding(
    t: torch.Tensor, dim: int, *, time_scale: float = DEFAULT_TIME_SCALE, max_period: float = 1e4
) -> torch.Tensor:
    """Embed rescaled timesteps with sinusoids (Vaswani et al. 2017, as used in DDPM).

    The input ``t`` in [0, 1) is multiplied by ``time_scale`` before the sinusoids. Without that
    factor, the fastest frequency (1 radian per unit) turns by less than one radian over the
    whole range, and the embeddings of the first and last of 1000 steps are nearly parallel.

    Args:
        t: rescaled timesteps, shape (B,), float.
        dim: embedding size; odd sizes get one zero column at the end.
        time_scale: factor applied to ``t`` first (1000 maps t/T back to a step count).
        max_period: slowest period, in units of ``t * time_scale``.

    Returns:
        Tensor of shape (B, dim): ``[cos(w_i s), sin(w_i s)]`` with ``s = t * time_scale`` and
        ``w_i = max_period**(-i/half)`` for ``i = 0 .. half-1``, ``half = dim // 2``.
    """
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got shape {tuple(t.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    frequencies = torch.exp(exponent / half)
    angles = (t.float() * time_scale)[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2 == 1:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def _group_count(channels: int, max_groups: int = 32) -> int:
    """Return the largest divisor of ``channels`` that is at most ``max_groups``.

    Improved DDPM uses 32 groups; narrow layers (fewer than 32 channels, or counts that 32 does
    not divide) get the largest count that divides them.
    """
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    raise AssertionError("unreachable: 1 divides every channel count")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_group_count(channels), channels)


def _zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding (improved DDPM, appendix A).

    Args:
        in_channels: input channels.
        out_channels: output channels; a 1x1 convolution maps the skip path when they differ.
        embedding_dim: size of the timestep embedding.
        dropout: dropout probability before the second convolution.
        use_scale_shift_norm: apply the embedding as ``norm(h) * (1 + scale) + shift`` (FiLM)
            instead of ``norm(h) + shift``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embedding_dim: int,
        dropout: float,
        use_scale_shift_norm: bool,
    ) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            _norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        embedding_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.embedding_layers = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, embedding_out))
        self.out_norm = _norm(out_channels)
        self.out_layers = nn.Sequential(
            nn.SiLU(),
            nn.Dropout(dropout),
            _zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if in_channels == out_channels:
            self.skip = nn.Identity()
        else:
            self.skip = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Map (B, in_channels, H, W) and a (B, embedding_dim) embedding to (B, out, H, W)."""
        h = self.in_layers(x)
        conditioning = self.embedding_layers(embedding)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = conditioning.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            # DDPM adds the embedding before this normalisation. GroupNorm then removes it from
            # every group of one channel (32 channels in 32 groups), so the block would not see
            # the step. Adding it after the normalisation keeps it for every group size.
            h = self.out_norm(h) + conditioning
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the spatial positions, with a residual connection.

    Args:
        channels: feature channels; must be divisible by ``num_heads``.
        num_heads: number of attention heads.
    """

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} does not divide the {channels} channels of an attention "
                "layer; choose num_heads that divides model_channels * channel_mult"
            )
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, H, W)."""
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x).reshape(batch, channels, height * width))
        # (B, 3C, L) -> three tensors of shape (B, heads, L, C / heads) for scaled_dot_product.
        qkv = qkv.reshape(batch, 3, self.num_heads, channels // self.num_heads, height * width)
        query, key, value = qkv.permute(1, 0, 2, 4, 3).unbind(0)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.permute(0, 1, 3, 2).reshape(batch, channels, height * width)
        return x + self.proj_out(attended).reshape(batch, channels, height, width)


class Downsample(nn.Module):
    """Halve the spatial size with a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the spatial size: nearest-neighbour upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Level(nn.Module):
    """Residual blocks of one resolution, each optionally followed by self-attention."""

    def __init__(self, resblock: ResBlock, attention: nn.Module | None) -> None:
        super().__init__()
        self.resblock = resblock
        self.attention = attention if attention is not None else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.attention(self.resblock(x, embedding))


class UNetModel(nn.Module):
    """UNet that predicts the noise of ``x_t`` from ``(x_t, t/T)``.

    Inputs whose height or width is not a multiple of ``2**(len(channel_mult) - 1)`` are
    zero-padded (split evenly between both sides) up to the next multiple, and the output is
    cropped back. For 28x28 MNIST, ``channel_mult`` of length 3 (two halvings, 28 -> 14 -> 7)
    needs no padding; length 4 pads to 32.

    Args:
        in_channels: image channels (1 or 3).
        model_channels: channels of the first level.
        out_channels: predicted channels; ``in_channels`` for an eps prediction.
        channel_mult: channel multiplier per level; the spatial size halves between levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: feature-map sizes (in pixels, computed as ``image_size // 2**level``)
            at which self-attention follows each residual block; each must match a level.
        dropout: dropout probability inside the residual blocks.
        num_heads: attention heads.
        learn_variance: double the output channels, as improved DDPM does to learn the
            variance. The DLPM and LIM methods use a fixed variance and expect an output with
            the input's shape, so this must stay false with them. The option exists only so
            that configs written for the original code still load.
        use_scale_shift_norm: FiLM conditioning in the residual blocks.
        image_size: nominal input size, used to place the attention levels.
        time_scale: factor applied to ``t`` before the sinusoidal embedding.
    """

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.0,
        num_heads: int = 4,
        learn_variance: bool = False,
        use_scale_shift_norm: bool = True,
        image_size: int = 32,
        time_scale: float = DEFAULT_TIME_SCALE,
    ) -> None:
        super().__init__()
        _check_arguments(in_channels, model_channels, out_channels, channel_mult, num_res_blocks)
        level_sizes = [image_size // 2**level for level in range(len(channel_mult))]
        unmatched = sorted(set(attn_resolutions) - set(level_sizes))
        if unmatched:
            raise ValueError(
                f"attn_resolutions {unmatched} match no level of the UNet; the feature maps of "
                f"image_size={image_size} with channel_mult={tuple(channel_mult)} are {level_sizes}"
            )

        self.in_channels = in_channels
        self.out_channels = 2 * out_channels if learn_variance else out_channels
        self.model_channels = model_channels
        self.time_scale = time_scale
        self.size_multiple = 2 ** (len(channel_mult) - 1)
        embedding_dim = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, embedding_dim),
            nn.SiLU(),
            nn.Linear(embedding_dim, embedding_dim),
        )

        def make_level(channels_in: int, channels_out: int, level: int) -> _Level:
            resblock = ResBlock(
                channels_in, channels_out, embedding_dim, dropout, use_scale_shift_norm
            )
            attend = level_sizes[level] in attn_resolutions
            return _Level(resblock, AttentionBlock(channels_out, num_heads) if attend else None)

        # Encoder: record the channels of every output kept for a skip connection.
        self.input_conv = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down_levels = nn.ModuleList()
        skip_channels = [model_channels]
        channels = model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down_levels.append(make_level(channels, mult * model_channels, level))
                channels = mult * model_channels
                skip_channels.append(channels)
            if level != len(channel_mult) - 1:
                self.down_levels.append(Downsample(channels))
                skip_channels.append(channels)

        self.middle = nn.ModuleList(
            [
                ResBlock(channels, channels, embedding_dim, dropout, use_scale_shift_norm),
                AttentionBlock(channels, num_heads),
                ResBlock(channels, channels, embedding_dim, dropout, use_scale_shift_norm),
            ]
        )

        # Decoder: each block consumes one skip tensor, in reverse order of creation.
        self.up_levels = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for block in range(num_res_blocks + 1):
                channels_in = channels + skip_channels.pop()
                self.up_levels.append(make_level(channels_in, mult * model_channels, level))
                channels = mult * model_channels
                if level != 0 and block == num_res_blocks:
                    self.up_levels.append(Upsample(channels))
        assert not skip_channels, "every skip connection must be consumed"

        self.output = nn.Sequential(
            _norm(channels),
            nn.SiLU(),
            _zero_init(nn.Conv2d(channels, self.out_channels, 3, padding=1)),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict the noise of ``x``.

        Args:
            x: noisy images, shape (B, in_channels, H, W).
            t: rescaled timesteps t/T in [0, 1), shape (B,).

        Returns:
            Tensor of shape (B, out_channels, H, W), with out_channels doubled when
            ``learn_variance`` is true.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")

        height, width = x.shape[-2:]
        pad_h = -height % self.size_multiple
        pad_w = -width % self.size_multiple
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        if pad_h or pad_w:
            x = F.pad(x, padding)

        embedding = timestep_embedding(t, self.model_channels, time_scale=self.time_scale)
        embedding = self.time_embed(embedding.to(x.dtype))

        h = self.input_conv(x)
        skips = [h]
        for module in self.down_levels:
            h = module(h, embedding) if isinstance(module, _Level) else module(h)
            skips.append(h)

        h = self.middle[0](h, embedding)
        h = self.middle[1](h)
        h = self.middle[2](h, embedding)

        for module in self.up_levels:
            if isinstance(module, _Level):
                h = module(torch.cat([h, skips.pop()], dim=1), embedding)
            else:
                h = module(h)

        out = self.output(h)
        if pad_h or pad_w:
            out = out[..., padding[2] : padding[2] + height, padding[0] : padding[0] + width]
        return out


def _check_arguments(
    in_channels: int,
    model_channels: int,
    out_channels: int,
    channel_mult: tuple[int, ...],
    num_res_blocks: int,
) -> None:
    for name, value in (
        ("in_channels", in_channels),
        ("model_channels", model_channels),
        ("out_channels", out_channels),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if len(channel_mult) == 0 or any(int(m) < 1 for m in channel_mult):
        raise ValueError(
            f"channel_mult must be a non-empty list of positive integers, got {channel_mult!r}"
        )
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be at least 1, got {num_res_blocks}")


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of ``model``."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


@dataclass(frozen=True)
class UNetConfig:
    """Config section ``model.unet``, selected by ``model_type: ddpm`` (or its alias ``unet``).

    The keys are those of :class:`UNetModel`; the channels and the image size come from the
    data. ``attn_resolutions`` is checked against the levels when the network is built, since
    the levels depend on ``data.image_size``.
    """

    model_channels: int = option(64, ge=1, help="channels of the first level")
    channel_mult: tuple[int, ...] = option(
        (1, 2, 2, 2), ge=1, help="channel multiplier per level; the feature maps halve per level"
    )
    num_res_blocks: int = option(2, ge=1, help="residual blocks per level on the way down")
    attn_resolutions: tuple[int, ...] = option(
        (16,), ge=1, help="feature-map sizes in pixels at which self-attention runs"
    )
    dropout: float = option(0.0, ge=0.0, lt=1.0, help="dropout probability in residual blocks")
    num_heads: int = option(4, ge=1, help="attention heads")
    learn_variance: bool = option(
        False, help="learn the variance (improved DDPM); must be false, the methods fix it"
    )
    use_scale_shift_norm: bool = option(True, help="FiLM time conditioning in residual blocks")

    def __post_init__(self) -> None:
        if not self.channel_mult:
            raise ValueError(
                "'channel_mult' = [] is invalid; give one positive multiplier per level,"
                " e.g. [1, 2, 2]"
            )
        if self.learn_variance:
            raise ValueError(
                "'learn_variance' = true is not supported: DLPM, DDPM and LIM predict the noise"
                " with a fixed variance; set it to false"
            )
        if self.attn_resolutions and self.model_channels % self.num_heads:
            raise ValueError(
                f"'num_heads' = {self.num_heads} does not divide 'model_channels' ="
                f" {self.model_channels}; choose a divisor"
            )


def build_unet(section: UNetConfig, item_shape: tuple[int, ...]) -> UNetModel:
    """Build a :class:`UNetModel` for images of ``item_shape`` (C, H, W) from ``model.unet``.

    Raises:
        ValueError: if the items are not images or ``attn_resolutions`` matches no level.
    """
    if len(item_shape) != 3:
        raise ValueError(
            f"the ddpm (UNet) model needs images of shape (C, H, W), got items of shape"
            f" {tuple(item_shape)}; use model_type mlp for vector data"
        )
    channels, height, width = item_shape
    model = UNetModel(
        in_channels=channels,
        model_channels=section.model_channels,
        out_channels=channels,
        channel_mult=tuple(section.channel_mult),
        num_res_blocks=section.num_res_blocks,
        attn_resolutions=tuple(section.attn_resolutions),
        dropout=section.dropout,
        num_heads=section.num_heads,
        learn_variance=section.learn_variance,
        use_scale_shift_norm=section.use_scale_shift_norm,
        image_size=max(height, width),
    )
    logger.info(
        "UNet for %dx%dx%d images: %d parameters", channels, height, width, count_parameters(model)
    )
    return model
