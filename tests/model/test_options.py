"""The evaluator's switches (:class:`trajden.model.options.EvaluatorOptions`) and how they reach the evaluator."""

import pytest

from trajden.model.options import EvaluatorOptions


def test_values_from_yaml_and_the_deprecated_variables_are_normalised():
    assert EvaluatorOptions(compile=True, fused="false") == EvaluatorOptions("on", False, "auto")  # YAML's on/off
    assert EvaluatorOptions(compile="0").compile == "off" and EvaluatorOptions(compile="1").compile == "on"
    assert EvaluatorOptions.from_config({"compile": None, "aggregate": "ATOMIC"}) == EvaluatorOptions(
        aggregate="atomic")
    assert EvaluatorOptions().as_dict() == {"compile": "auto", "fused": True, "aggregate": "auto", "aot_cache": "off"}
    for bad in ({"compile": "maybe"}, {"fused": "perhaps"}, {"aggregate": "sum"}):
        with pytest.raises(ValueError, match="trajden.evaluator"):
            EvaluatorOptions(**bad)
    with pytest.raises(ValueError, match="unknown option"):
        EvaluatorOptions.from_config({"threads": 2})


def test_compile_overrides_the_frames_request():
    assert EvaluatorOptions("auto").compile_arg("auto") == "auto"
    assert EvaluatorOptions("auto").compile_arg(None) is None
    assert EvaluatorOptions("on").compile_arg(None) is True
    assert EvaluatorOptions("off").compile_arg("auto") is False
    assert EvaluatorOptions(aggregate="auto").forced_aggregate is None
    assert EvaluatorOptions(aggregate="padded").forced_aggregate == "padded"


def test_evaluate_and_fused_import_without_a_cycle():
    """``trajden.model.evaluate`` imports ``trajden.model.fused``; fused imports nothing of evaluate (the
    shared helper lives in ``trajden.model.device``)."""
    import ast
    import inspect

    import trajden.model.fused as fused

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(fused))):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert "trajden.model.device" in imported
    assert not any(m and m.startswith("trajden.model.evaluate") for m in imported), imported
