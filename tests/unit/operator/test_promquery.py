"""promquery.value_of: one number out of a Prometheus instant-query reply, or a reason a user can act on."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_operator import promquery


def vector(*values: str) -> dict[str, Any]:
    series = [{"metric": {"queue": f"q{i}"}, "value": [1700000000.0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": series}}


def test_one_series_gives_its_value() -> None:
    assert promquery.value_of(vector("12")) == 12.0


def test_a_scalar_gives_its_value() -> None:
    reply = {"status": "success", "data": {"resultType": "scalar", "result": [1700000000.0, "3.5"]}}
    assert promquery.value_of(reply) == 3.5


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (vector(), "no series"),
        (vector("1", "2"), "2 series; aggregate"),
        (vector("NaN"), "finite number"),
        (vector("+Inf"), "finite number"),
        (vector("-1"), ">= 0"),
        (vector("twelve"), "not a number"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "not matrix"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error at char 4"}, "bad_data: parse error"),
        ({}, "refused the query"),
    ],
)
def test_anything_but_one_usable_number_is_an_error_that_says_why(reply: dict[str, Any], says: str) -> None:
    with pytest.raises(promquery.QueryError, match=says.replace("(", r"\(").replace("+", r"\+")):
        promquery.value_of(reply)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("http://prom:9090", "http://prom:9090/api/v1/query?query=sum%28x%7Bq%3D%22a%22%7D%29"),
        (
            "https://example.test/prometheus/",
            "https://example.test/prometheus/api/v1/query?query=sum%28x%7Bq%3D%22a%22%7D%29",
        ),
    ],
)
def test_the_query_url_keeps_a_path_prefix_and_encodes_the_query(server: str, expected: str) -> None:
    assert promquery.query_url(server, 'sum(x{q="a"})') == expected


def test_an_unreachable_server_is_a_query_error() -> None:
    with pytest.raises(promquery.QueryError, match="cannot be queried"):
        promquery.instant_query("http://127.0.0.1:1", "up", timeout=1)
