"""The page's bench mode names a decode program as JSON (web/app.js DECODE_PROGRAMS ->
driver.backend_js.open_session): what it accepts and the plain-words errors for the rest."""

import pytest

from driver.decode_options import DecodeOptions, from_json


def test_from_json_builds_the_split_program():
    assert from_json('{"short_ctx": 0, "head_norm": false}') == DecodeOptions(short_ctx=0,
                                                                             head_norm=False)
    assert from_json("{}") == DecodeOptions()
    assert from_json('{"depth": 6}') == DecodeOptions(depth=6)   # the page's "deep" program
    assert from_json('{"xq": false}') == DecodeOptions(xq=False)  # the page's "noxq" program


@pytest.mark.parametrize("text, words", [
    ("not json", "is not JSON"),
    ("[1, 2]", "expected an object"),
    ('{"shortctx": 0}', "expected an object"),
    ('{"knobs": []}', "expected an object"),          # kernel overrides stay native-only
    ('{"short_ctx": -1}', "short_ctx must be an integer >= 0"),
    ('{"head_norm": "no"}', "head_norm must be true or false"),
    ('{"xq": 1}', "xq must be true or false"),
    ('{"xq_min_weights": -1}', "xq_min_weights must be an integer >= 0"),
    ('{"depth": 0}', r"depth must be an integer in \[1, 8\]"),
    ('{"depth": 9}', r"depth must be an integer in \[1, 8\]"),
    ('{"depth": 2.5}', r"depth must be an integer in \[1, 8\]"),
])
def test_from_json_refuses_in_plain_words(text, words):
    with pytest.raises(ValueError, match=words):
        from_json(text)
