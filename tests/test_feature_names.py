"""Site-aware feature names and the encoded feature key (store/models.py)."""

from __future__ import annotations

import pytest

from featuregraph.store.models import (
    SITE_CODES,
    SITE_SHORT,
    Node,
    decode_feature,
    encode_feature,
    feature_name,
)

LIMIT = 268_435_456  # 2**28, written out so the test does not borrow the module's constant


def test_contract_codes_and_short_names():
    assert SITE_CODES == {"resid": 0, "attn_z": 1, "mlp_out": 2, "transcoder": 3}
    assert SITE_SHORT == {"resid": "res", "attn_z": "att", "mlp_out": "mlp", "transcoder": "tc"}


@pytest.mark.parametrize("site,code", [("resid", 0), ("attn_z", 1), ("mlp_out", 2), ("transcoder", 3)])
@pytest.mark.parametrize("index", [0, 1, 10603, LIMIT - 1])
def test_encode_decode_round_trip(site, code, index):
    key = encode_feature(site, index)
    assert key == code * LIMIT + index
    assert decode_feature(key) == (site, index)


def test_residual_features_are_stored_plain():
    assert encode_feature("resid", 10603) == 10603
    assert decode_feature(10603) == ("resid", 10603)


@pytest.mark.parametrize(
    "site,index", [("resid", -1), ("attn_z", LIMIT), ("mlp", 3), ("hook_z", 0), ("resid", 1.5)]
)
def test_encode_rejects_bad_input(site, index):
    with pytest.raises(ValueError):
        encode_feature(site, index)


@pytest.mark.parametrize("feature", [-1, 4 * LIMIT, 4 * LIMIT + 7, 2**40])
def test_decode_rejects_unknown_codes(feature):
    with pytest.raises(ValueError, match="site code"):
        decode_feature(feature)


@pytest.mark.parametrize(
    "text,layer,site,index",
    [
        ("5.10603", 5, "resid", 10603),
        ("5.res.10603", 5, "resid", 10603),
        ("5.att.1234", 5, "attn_z", 1234),
        ("0.mlp.0", 0, "mlp_out", 0),
        ("11.tc.7", 11, "transcoder", 7),
        (" 3.att.268435455 ", 3, "attn_z", LIMIT - 1),
    ],
)
def test_parse_names(text, layer, site, index):
    node = Node.parse(text)
    assert (node.layer, node.site_kind, node.index) == (layer, site, index)
    assert node == Node(layer, SITE_CODES[site] * LIMIT + index)


@pytest.mark.parametrize(
    "node,name",
    [
        (Node(5, 10603), "5.10603"),
        (Node(5, LIMIT + 1234), "5.att.1234"),
        (Node(2, 2 * LIMIT), "2.mlp.0"),
        (Node(7, 3 * LIMIT + 9), "7.tc.9"),
    ],
)
def test_str_names(node, name):
    assert str(node) == name
    assert Node.parse(name) == node
    assert feature_name(node.layer, node.feature) == name


def test_res_alias_prints_without_site():
    assert str(Node.parse("4.res.2")) == "4.2"


def test_same_index_different_sites_are_different_nodes():
    nodes = {Node.parse(n) for n in ("0.5", "0.att.5", "0.mlp.5", "0.tc.5")}
    assert len(nodes) == 4


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "5.",
        ".5",
        "5.x.3",
        "5.att",
        "5.att.",
        "a.b",
        "5.ATT.3",
        "5.att.3.1",
        "-1.3",
        "5.-3",
        "5.att.268435456",
        "5.268435456",
        "5.hook_z.3",
        "٣.4",
    ],
)
def test_bad_names(text):
    with pytest.raises(ValueError, match="not a feature name"):
        Node.parse(text)
