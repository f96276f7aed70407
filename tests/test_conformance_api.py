"""tests/conformance.py's helpers that other test modules use are public; the underscored
names they had before stay as aliases of the same functions."""
import conformance


def test_public_helpers_and_their_old_names():
    for name in ("is_expression", "allow_default_none", "schema_errors", "St2Validator"):
        assert name in conformance.__all__ and hasattr(conformance, name)
    assert conformance._is_expression is conformance.is_expression
    assert conformance._allow_default_none is conformance.allow_default_none
    assert conformance._schema_errors is conformance.schema_errors


def test_what_they_do():
    assert conformance.is_expression("{{ config_context.approval.route }}")
    assert conformance.is_expression("<% ctx(x) %>") and not conformance.is_expression("junk")
    assert not conformance.is_expression(["{{ x }}"])
    schema = {"type": "object", "properties": {
        "route": {"type": "string"}, "ttl": {"type": "integer", "required": True},
        "inner": {"type": "object", "properties": {"users": {"type": "array"}}}}}
    relaxed = conformance.allow_default_none(schema)
    assert relaxed["properties"]["route"]["type"] == ["string", "null"]
    assert relaxed["properties"]["ttl"]["type"] == "integer"  # required: stays strict
    assert relaxed["properties"]["inner"]["properties"]["users"]["type"] == ["array", "null"]
    assert schema["properties"]["route"]["type"] == "string"  # the input is not changed
    assert conformance.schema_errors(conformance.St2Validator, relaxed,
                                     {"route": None, "ttl": 5, "inner": {"users": None}}) == []
    assert conformance.schema_errors(conformance.St2Validator, relaxed, {"route": None}) == [
        "ttl: 'ttl' is a required property"]
