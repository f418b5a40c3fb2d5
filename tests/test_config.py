from pathlib import Path

import pytest

from rtkp.config import Config, load_config
from rtkp.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.steps=7", "model.head=heatmap", "augment.crop_size=[64, 64]"])
    assert cfg.train.steps == 7 and cfg.model.head == "heatmap" and cfg.augment.crop_size == (64, 64)
    assert cfg.coke.temperature == Config().coke.temperature


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load_and_are_complete(path):
    import yaml

    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    # standalone profiles list every setting, so nothing silently comes from code defaults
    for section, values in cfg.to_dict().items():
        assert set(raw[section]) == set(values), f"{path.name}: section {section} incomplete"


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.steps=-1", "train.steps"),
        ("train.steps=1.5", "train.steps"),
        ("model.head=resnet", "model.head"),
        ("model.input_size=[100, 64]", "model.input_size"),
        ("coke.momentum=1.0", "coke.momentum"),
        ("augment.flip=2", "augment.flip"),
        ("train.stepz=3", "train.stepz"),
        ("nosuch.key=3", "nosuch"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert f"`{field}" in str(err.value)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_keys_with_control_characters_stay_on_one_line():
    with pytest.raises(ConfigError) as err:
        from rtkp.config import config_from_dict

        config_from_dict({"model": {"\n": 1}})
    assert "\n" not in str(err.value) and str(err.value).startswith("`model.")
