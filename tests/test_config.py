"""Config validation: defaults, one-line errors for bad keys and values, extension."""

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest

from bem.config import ConfigError, ConfigSchema, load_yaml, option, set_by_path
from dlpm.config_schema import build_schema

CONFIG_DIR = Path(__file__).resolve().parents[1] / "dlpm" / "configs"


@pytest.fixture
def p():
    return load_yaml(CONFIG_DIR / "2d_data.yml")


def _error(p) -> str:
    with pytest.raises(ConfigError) as error:
        build_schema().parse(p)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_default_config_parses(p):
    config = build_schema().parse(p)
    assert config.diffusion.alpha == 1.7
    assert config.model.mlp.nunits == 64
    assert config.training.ema_rates == (0.999,)
    assert config.p["training"]["ema_rates"] == [0.999]


def test_empty_config_gets_defaults():
    config = build_schema().parse({})
    assert config.method == "dlpm"
    assert config.run.epochs >= 1
    assert config.model.model_type == "mlp"


def test_resolved_config_is_a_fixed_point(p):
    resolved = build_schema().parse(p).p
    assert build_schema().parse(copy.deepcopy(resolved)).p == resolved


def test_unknown_top_level_key(p):
    p["trainig"] = {}
    assert "unknown config key 'trainig'" in _error(p)


def test_unknown_nested_key(p):
    p["model"]["mlp"]["units"] = 3
    message = _error(p)
    assert "model.mlp.units" in message
    assert "nunits" in message


def test_alpha_out_of_range(p):
    p["diffusion"]["alpha"] = 2.5
    message = _error(p)
    assert "diffusion.alpha" in message
    assert "2.5" in message
    assert "0 < value <= 2" in message


def test_alpha_zero_rejected(p):
    p["diffusion"]["alpha"] = 0
    assert "diffusion.alpha" in _error(p)


def test_negative_steps_rejected(p):
    p["diffusion"]["reverse_steps"] = -10
    message = _error(p)
    assert "diffusion.reverse_steps" in message
    assert "-10" in message


def test_negative_sampling_steps_rejected(p):
    p["sampling"]["reverse_steps"] = -1
    assert "sampling.reverse_steps" in _error(p)


def test_wrong_type_string_for_int(p):
    p["training"]["batch_size"] = "big"
    message = _error(p)
    assert "training.batch_size" in message
    assert "expected int" in message


def test_wrong_type_int_for_bool(p):
    p["diffusion"]["isotropic"] = 1
    assert "expected true or false" in _error(p)


def test_float_for_int_rejected(p):
    p["run"]["epochs"] = 2.5
    assert "run.epochs" in _error(p)


def test_yaml_exponent_hint(p):
    p["optim"]["lr"] = "1e-3"  # what PyYAML returns for an exponent without a dot
    assert "1.0e-3" in _error(p)


def test_choice_rejected(p):
    p["optim"]["schedule"] = "cosine"
    message = _error(p)
    assert "optim.schedule" in message
    assert "'steplr'" in message


def test_list_item_range(p):
    p["training"]["ema_rates"] = [0.9, 1.5]
    assert "training.ema_rates[1]" in _error(p)


def test_lim_accepts_config_with_dlpm_clamps(p):
    # One config file serves every method: the DLPM clamps stay, LIM reads lim.clamp_*.
    p["method"] = "lim"
    p.setdefault("diffusion", {}).update(clamp_a=20.0, clamp_eps=200.0)
    config = build_schema().parse(p)
    assert config.method == "lim"


def test_lim_rejects_dlpm_only_loss(p):
    p["method"] = "lim"
    p.setdefault("loss", {})["lploss"] = 1.0
    assert "loss.lploss" in _error(p)


def test_unknown_method(p):
    p["method"] = "flow"
    assert "method" in _error(p)


def test_unknown_model_type(p):
    p["model"]["model_type"] = "transformer"
    assert "model.model_type" in _error(p)


def test_unknown_dataset(p):
    p["data"]["dataset"] = "moons"
    assert "data.dataset" in _error(p)


def test_lploss_zero_rejected(p):
    p["loss"]["lploss"] = 0.0
    assert "lploss" in _error(p)


def test_section_must_be_mapping(p):
    p["training"] = 5
    assert "'training'" in _error(p)


def test_clip_denoised_accepts_bool_or_bound(p):
    p["sampling"]["clip_denoised"] = 3
    assert build_schema().parse(p).sampling.clip_denoised == 3.0
    p["sampling"]["clip_denoised"] = -1.0
    assert "sampling.clip_denoised" in _error(p)


def test_load_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("a: 1\nb: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 3, column 1"):
        load_yaml(bad)
    listing = tmp_path / "list.yml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must contain a mapping"):
        load_yaml(listing)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yml")


def test_load_yaml_rejects_duplicate_keys(tmp_path):
    path = tmp_path / "twice.yml"
    path.write_text("optim:\n  lr: 1.0e-3\n  lr: 5.0e-3\n")
    with pytest.raises(ConfigError, match="line 3, column 3: duplicate key 'lr'"):
        load_yaml(path)


def test_load_yaml_does_not_construct_objects(tmp_path):
    unsafe = tmp_path / "unsafe.yml"
    unsafe.write_text("x: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(unsafe)


def test_schema_extension():
    @dataclass(frozen=True)
    class Extra:
        size: int = option(3, ge=1, help="a size")

    schema = build_schema()
    schema.add_section("extra", Extra)
    assert schema.parse({"extra": {"size": 5}}).extra.size == 5
    with pytest.raises(ConfigError, match="extra.size"):
        schema.parse({"extra": {"size": 0}})
    with pytest.raises(ValueError, match="already registered"):
        schema.add_section("extra", Extra)


def test_selector_requires_known_section():
    @dataclass(frozen=True)
    class Root:
        kind: str = option("a", help="which")

    @dataclass(frozen=True)
    class A:
        x: int = option(1, help="x")

    schema = ConfigSchema(root=Root, sections={"a": A}, selector="kind")
    assert schema.parse({}).a.x == 1
    with pytest.raises(ConfigError, match="'kind' = 'b'"):
        schema.parse({"kind": "b"})


def test_set_by_path_creates_sections():
    p = {}
    set_by_path(p, "model.mlp.nunits", 8)
    assert p == {"model": {"mlp": {"nunits": 8}}}
