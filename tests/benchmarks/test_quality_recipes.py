"""benchmarks/quality.py: the ML-1M reference SASRec+ recipe beside our preset."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shoprec.training.loop import TrainConfig

QUALITY = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", QUALITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_recipe_is_the_antklen_run(quality):
    ref = quality.recipe("ml-1m", "reference")
    # antklen/sasrec-bert4rec-recsys23 src/configs/SASRec.yaml + `dataset.max_length=200`
    assert ref["model"] == {"dropout": 0.1, "attention_dropout": 0.1, "hidden": 64, "max_len": 200,
                            "blocks": 2, "heads": 1, "ffn_multiplier": 1,
                            "block": "post_norm", "positions": "oldest"}  # its layer and positions
    assert ref["validation_users"] is None  # every user validated: nobody trains on the second-last item
    assert ref["max_epochs"] == 100
    config = TrainConfig(**ref["train"])  # the keys are TrainConfig's
    assert (config.crops, config.batching, config.learning_rate, config.schedule, config.patience,
            config.batch_size) == ("last", "random", 1e-3, "constant", 10, 128)


def test_beyond_recipe_is_the_reference_with_the_window_left_out_and_wider_layers(quality):
    beyond, ref = quality.recipe("ml-1m", "beyond"), quality.recipe("ml-1m", "reference")
    assert beyond["model"] == {**ref["model"], "ffn_multiplier": 4}
    assert beyond["train"] == {**ref["train"], "loss_leaves_out_seen": True}
    assert (beyond["validation_users"], beyond["max_epochs"]) == (None, 100)
    assert TrainConfig(**beyond["train"]).loss_leaves_out_seen
    beyond["model"]["dropout"] = 0.9  # a copy: the reference recipe is untouched
    assert quality.recipe("ml-1m", "reference")["model"]["dropout"] == 0.1


def test_preset_recipe_is_a_copy_of_the_preset(quality):
    preset = quality.recipe("ml-1m")
    assert preset["model"] == quality.PRESETS["ml-1m"]["model"]
    assert preset["validation_users"] == 2000 and preset["max_epochs"] is None
    preset["model"]["dropout"] = 0.9
    assert quality.PRESETS["ml-1m"]["model"]["dropout"] == 0.1


def test_unknown_recipes_are_refused(quality):
    with pytest.raises(ValueError, match="no reference recipe for 'ml-100k'"):
        quality.recipe("ml-100k", "reference")
    with pytest.raises(ValueError, match="no beyond recipe for 'instacart'"):
        quality.recipe("instacart", "beyond")
    with pytest.raises(ValueError, match="recipe must be one of"):
        quality.recipe("ml-1m", "paper")
