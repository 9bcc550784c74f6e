"""trajden.model.coverage: which model covers an input's elements and how they map onto its species."""

import numpy as np
import pytest

from trajden.model.coverage import (
    ONE_ELEMENT_MODEL,
    TWO_ELEMENT_MODEL,
    ModelScopeError,
    choose_model,
    distinct_elements,
    model_types,
    species_map,
)


def test_choose_model_by_number_of_elements():
    assert choose_model(None) == ONE_ELEMENT_MODEL
    assert choose_model(np.array(["Cu"] * 4)) == ONE_ELEMENT_MODEL
    assert choose_model(np.array(["Ni", "Al", "Ni"])) == TWO_ELEMENT_MODEL
    assert choose_model(np.array(["Cu", "Ni", "Al"])) is None


def test_inputs_of_exactly_a_named_model_s_elements_get_that_model(monkeypatch):
    from trajden.model import coverage

    assert choose_model(np.array(["O", "Si", "O"])) == "silica-networks"  # ELEMENT_MODELS
    monkeypatch.setattr(coverage, "ELEMENT_MODELS", {})
    assert choose_model(np.array(["O", "Si", "O"])) == TWO_ELEMENT_MODEL
    monkeypatch.setattr(coverage, "ELEMENT_MODELS", {frozenset({"Si", "O"}): "silica"})
    assert choose_model(np.array(["O", "Si", "O"])) == "silica"
    assert choose_model(np.array(["Si", "C"])) == TWO_ELEMENT_MODEL  # not silica: binary
    assert choose_model(np.array(["Si", "O", "H"])) is None
    assert choose_model(np.array(["Si"])) == ONE_ELEMENT_MODEL


def test_named_species_map_by_symbol_not_by_count():
    el = np.array(["O", "Si", "O"])
    assert species_map(el, 2, named=["Si", "O"]) == {"Si": 0, "O": 1}  # by count it would be O: 0
    assert species_map(np.array(["O", "O"]), 2, named=["Si", "O"]) == {"O": 1}
    with pytest.raises(ModelScopeError, match="knows the elements Si, O, not Ge"):
        species_map(np.array(["Ge", "O"]), 2, "model silica", named=["Si", "O"])
    with pytest.raises(ModelScopeError, match="not \\(unnamed\\)"):
        species_map(None, 2, named=["Si", "O"])


def test_named_species_of_model_files():
    from trajden.model.package import load_model

    assert load_model("binary").named_species is None  # roles swapped in training: interchangeable
    assert load_model("fcc-bcc-hcp").named_species is None
    silica = load_model("silica")
    assert silica.named_species == ["Si", "O"]
    assert silica.metadata["training_config"]["swap_roles"] is False
    networks = load_model("silica-networks")  # the model auto chooses for Si and O
    assert networks.named_species == ["Si", "O"]
    assert networks.metadata["training_config"]["swap_roles"] is False
    assert networks.metadata["training_config"]["library"] == "silica_networks.npz"
    assert networks.metadata["defect_library"]["cells"][0].startswith("beta-cristobalite-tilted")


def test_species_map_is_fixed_by_count_then_symbol():
    el = np.array(["Al", "Ni", "Ni", "Ni"])
    assert distinct_elements(el) == ["Ni", "Al"]
    assert species_map(el, 2) == {"Ni": 0, "Al": 1}
    assert species_map(np.array(["Na", "Cl"]), 2) == {"Cl": 0, "Na": 1}
    assert species_map(np.array(["Cu", "Cu"]), 1) == {"Cu": 0}
    assert species_map(None, 1) == {}


def test_a_model_with_too_few_species_is_an_error():
    with pytest.raises(ModelScopeError, match="2 elements in the input .* knows 1 species"):
        species_map(np.array(["Ni", "Al"]), 1, "model fcc-bcc-hcp")
    with pytest.raises(ModelScopeError, match="3 elements"):
        species_map(np.array(["Ni", "Al", "Cu"]), 2)


def test_model_types():
    el = np.array(["Al", "Ni", "Ni"])
    np.testing.assert_array_equal(model_types(el, species_map(el, 2), 3), [1, 0, 0])
    np.testing.assert_array_equal(model_types(None, {}, 3), [0, 0, 0])
