"""The chapter's table: a quick smoke run of one row, resumable and written as md + json."""

from __future__ import annotations

import json

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.reproduce import (
    FAST_CHANGES,
    FAST_DROPOUT_CHANGES,
    FAST_EXPANDED_EPOCHS,
    reproduce,
    settings_for,
)


def test_quick_reproduce_of_one_row_writes_the_table_and_skips_it_next_time(tmp_path, mnist):
    results = reproduce(tmp_path, rows=["conv1"], mode="quick", runs=2, log=print)
    row = results["rows"]["conv1"]
    assert row["published"] == 0.9878 and len(row["runs"]) == 2
    assert row["measured"] == max(r["test_accuracy"] for r in row["runs"])
    assert 0.3 < row["measured"] <= 1
    table = (tmp_path / "results.md").read_text()
    assert "| conv1 |" in table and "98.78%" in table and "cnnlab reproduce --rows conv1" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"]["conv1"]["measured"] == row["measured"]
    assert (tmp_path / "filters-conv1.png").stat().st_size > 1000
    again = reproduce(tmp_path, rows=["conv1"], mode="quick", runs=2, log=print)
    assert again["rows"]["conv1"]["runs"] == row["runs"]  # not trained again


def test_modes_change_settings_as_documented():
    chapter = settings_for("conv2-relu", "chapter", 0)
    assert (chapter.batch_size, chapter.epochs, chapter.lr, chapter.l2) == (10, 60, 0.03, 0.1)
    assert settings_for("conv2-relu", "faithful", 0).faithful
    fast = settings_for("conv2-relu", "fast", 0)
    assert fast.batch_size == FAST_CHANGES["batch_size"] and fast.schedule == "onecycle"
    assert (fast.epochs, fast.precision) == (FAST_CHANGES["epochs"], "fp32")
    dropout = settings_for("dropout", "fast", 0)
    assert dropout.expand and dropout.batch_size == FAST_CHANGES["batch_size"]
    assert dropout.epochs == FAST_DROPOUT_CHANGES["epochs"] and dropout.precision == "auto"
    assert (dropout.tta, fast.tta) == ("shifts", "none")
    assert settings_for("conv2-relu-expanded", "fast", 0).epochs == FAST_EXPANDED_EPOCHS


def test_rows_without_conv_layers_draw_no_filters(tmp_path):
    from cnnlab.reproduce import _draw_filters

    from .conftest import small_network

    small_network(arch="fc10-softmax10").save(tmp_path / "fc.safetensors")
    _draw_filters(tmp_path / "fc.safetensors", tmp_path / "filters.png")
    assert not (tmp_path / "filters.png").exists()


def test_unknown_rows_and_mixed_modes_are_refused(tmp_path, mnist):
    with pytest.raises(CnnlabError, match="--runs must be at least 1"):
        reproduce(tmp_path, rows=["conv1"], mode="quick", runs=0)
    with pytest.raises(CnnlabError, match="unknown rows"):
        reproduce(tmp_path, rows=["conv9"], mode="quick")
    (tmp_path / "results.json").write_text(json.dumps({"mode": "fast", "rows": {}}))
    with pytest.raises(CnnlabError, match="holds fast results"):
        reproduce(tmp_path, rows=["conv1"], mode="quick")
