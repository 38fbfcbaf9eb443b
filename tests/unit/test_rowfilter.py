"""`data.rows` conditions: ordinary ones select what pandas' eval selects; anything that
could reach Python objects is refused with a message naming the construct."""

import time

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import ConfigError
from pipeline.data.load import select_rows
from pipeline.data.rowfilter import MAX_LENGTH, RowFilterError, row_mask


@pytest.fixture
def frame() -> pd.DataFrame:
    """Numbers with NaN, text with a missing value, and a column whose name needs backticks."""
    return pd.DataFrame(
        {
            "year": [1999, 2020, 2021, 2022, 2023, 2024],
            "x": [1.0, -2.0, np.nan, 3.5, 0.0, 7.0],
            "y": [2.0, 1.0, 5.0, np.nan, -1.0, 2.5],
            "dose": [50, 150, 100, 101, 99, 300],
            "site": ["a", "b", None, "c", "a", "d"],
            "dose mg": [1, 2, 3, 4, 5, 6],
            "flag": [True, False, True, False, True, False],
        }
    )


SAME_AS_PANDAS = [
    "year <= 2022",
    "year >= 2",
    "dose > 100",
    "(x > 0) & (y < 3)",
    "(x > 0) | (y < 3)",
    "x > 0 and not y < 3",
    "x > 0 or y > 2 and dose < 200",
    "not (x > 0)",
    "~(x > 0)",
    "0 < x <= 5",
    "x < y < 10",
    "2020 <= year < 2023 != dose",
    "site in ['a', 'b']",
    'site in ("a",)',
    "site not in ['a', 'b']",
    "year in [2020, 2022, -1]",
    "x in [-2, 7.0]",
    "site == 'a'",
    "site != 'a'",
    "site < 'b'",
    "`dose mg` > 3",
    "`dose mg` * 2 >= year - 2019",
    "`x` > 0",
    "x * 2 + 1 > y",
    "x - y >= -1",
    "x / 2 > 1",
    "year // 10 == 202",
    "year % 2 == 0",
    "x ** 2 > 4",
    "-x < 0",
    "+x > 0",
    "x != x",
    "x == x",
    "flag",
    "~flag & (x > 0)",
    "flag == True",
    "dose > 1e2",
    " year <= 2022 ",
]


@pytest.mark.parametrize("condition", SAME_AS_PANDAS)
def test_ordinary_conditions_select_what_pandas_eval_selects(frame, condition):
    expected = frame.eval(condition).to_numpy(dtype=bool)
    mask = row_mask(frame, condition)
    assert mask.dtype == bool and mask.shape == (len(frame),)
    np.testing.assert_array_equal(mask, expected)


def test_missing_values_compare_false_also_in_nullable_columns():
    frame = pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64"), "x": [1.0, np.nan, 3.0]})
    np.testing.assert_array_equal(row_mask(frame, "n > 0"), [True, False, True])
    np.testing.assert_array_equal(row_mask(frame, "x > 0"), [True, False, True])
    np.testing.assert_array_equal(row_mask(frame, "(n > 0) & (x < 2)"), [True, False, False])


def test_an_empty_frame_gives_an_empty_mask():
    assert row_mask(pd.DataFrame({"x": pd.Series([], dtype=float)}), "x > 0").shape == (0,)


def test_strings_and_backticks_inside_strings_are_left_alone():
    frame = pd.DataFrame({"tag": ["a@b", "a`b", "x"], "odd name!": [1, 2, 3]})
    np.testing.assert_array_equal(row_mask(frame, "tag == 'a@b'"), [True, False, False])
    np.testing.assert_array_equal(row_mask(frame, 'tag == "a`b"'), [False, True, False])
    np.testing.assert_array_equal(row_mask(frame, "`odd name!` >= 2"), [False, True, True])


INJECTIONS = [
    ("(x > 0) & (@pd.core.frame.com.builtins.__import__('os').system('touch f') == 0)", "`@name`"),
    ("__import__('os').system('touch f')", "function calls are not allowed"),
    ("x.__class__", "attribute access is not allowed"),
    ("().__class__.__bases__", "attribute access is not allowed"),
    ("x[0] > 1", "subscripts"),
    ("open('f', 'w')", "function calls are not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("[a for a in x]", "comprehensions are not allowed"),
    ("(a for a in x)", "comprehensions are not allowed"),
    ("@pd", "`@name`"),
    ("x > @limit", "`@name`"),
    ("__builtins__", "double underscores"),
    ("__import__", "double underscores"),
    ("pd", "`pd` is not a column (columns: year, x, y, dose, site, dose mg, flag)"),
    ("f'{x}' == '1'", "f-strings are not allowed"),
    ("(z := 1)", "assignment expressions"),
    ("x if flag else y", "conditional expressions"),
    ("[*x]", "lists are only allowed after `in`"),
    ("x in [*y]", "the list after `in` may hold only"),
    ("{'a': 1}", "dict literals are not allowed"),
    ("x in {1, 2}", "`in` needs a list of values"),
    ("{1, 2}", "set literals are not allowed"),
    ("x << 2 > 1", "bitwise shifts"),
    ("x >> 2 > 1", "bitwise shifts"),
    ("flag ^ flag", "`^` is not allowed"),
    ("x is None", "`is` is not allowed"),
    ("x == None", "values must be numbers, strings, True or False"),
    ("x == b'1'", "values must be numbers, strings, True or False"),
    ("x == ...", "values must be numbers, strings, True or False"),
    ("x in [y]", "the list after `in` may hold only"),
    ("x in y", "`in` needs a list of values"),
    ("x in [1] < 3", "must end the comparison"),
    ("`no such` > 1", "`no such` is not a column"),
    ("x[::2]", "subscripts"),
]


@pytest.mark.parametrize("condition, construct", INJECTIONS)
def test_code_is_refused_naming_the_construct(frame, condition, construct):
    with pytest.raises(RowFilterError) as err:
        row_mask(frame, condition)
    message = str(err.value)
    assert message.startswith("`data.rows`")
    assert construct in message
    assert repr(condition) in message  # the whole expression is quoted


def test_the_refused_piece_is_quoted():
    frame = pd.DataFrame({"x": [1, 2]})
    with pytest.raises(RowFilterError, match=r"function calls are not allowed: got `len\(x\)`"):
        row_mask(frame, "len(x) > 1")


def test_injection_strings_create_no_file(frame, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    attempts = [condition for condition, _ in INJECTIONS] + [
        "(x > 0) & (open('f', 'w').write('1') > 0)",
        "(x > 0) & ((lambda: __import__('os').system('touch f'))() == 0)",
        "x > 0 or __import__('pathlib').Path('f').touch()",
        "(x > 0) & (@__builtins__['open']('f', 'w') is None)",
    ]
    for condition in attempts:
        with pytest.raises(RowFilterError):
            row_mask(frame, condition)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("condition", ["dose + 1", "x", "site", "1 < 2", "True", "'a' == 'a'", "-dose"])
def test_values_that_are_not_a_condition_per_row(frame, condition):
    with pytest.raises(RowFilterError, match='`data.rows` must be a condition on the columns, e.g. "year <= 2022"'):
        row_mask(frame, condition)


@pytest.mark.parametrize("condition", ["dose >", "x > > 1", "(x > 1", "x = 1", "x > 1; y", "'open"])
def test_syntax_errors_quote_the_expression(frame, condition):
    with pytest.raises(RowFilterError) as err:
        row_mask(frame, condition)
    assert f"`data.rows`: cannot evaluate {condition!r}" in str(err.value)


@pytest.mark.parametrize(
    "condition, problem",
    [
        ("x > 0 & y < 3", "bind tighter than comparisons"),
        ("flag & x", "`&` needs conditions"),
        ("not x", "`not` needs conditions"),
        ("site + 1 > 0", "`+` needs numbers"),
        ("site > 3", "cannot evaluate `site > 3`"),
        ("1 / 0 < x", "division by zero"),
        ("`dose mg > 1", "never closed"),
        ("x > 1.0e300 ** 2", "cannot evaluate"),
    ],
)
def test_well_formed_but_meaningless_conditions(frame, condition, problem):
    with pytest.raises(RowFilterError, match="^`data.rows`") as err:
        row_mask(frame, condition)
    assert problem in str(err.value)


@pytest.mark.parametrize("condition", ["9 ** 9 ** 9 > x", "2 ** 2 ** 2 ** 2 ** 2 ** 2 > x", "x < (10 ** 400) ** 300"])
def test_huge_powers_are_refused_quickly(frame, condition):
    start = time.perf_counter()
    with pytest.raises(RowFilterError, match="too large"):
        row_mask(frame, condition)
    assert time.perf_counter() - start < 1.0


def test_modest_powers_of_numbers_still_work(frame):
    np.testing.assert_array_equal(row_mask(frame, "dose < 2 ** 7"), frame.eval("dose < 2 ** 7").to_numpy())
    np.testing.assert_array_equal(row_mask(frame, "dose < 1 ** 10 ** 9"), np.zeros(len(frame), dtype=bool))


@pytest.mark.parametrize(
    "condition",
    [
        "x > " + "1 + " * 300 + "1",
        "-" * 900 + "x > 0",
        "(" * 150 + "x > 0" + ")" * 150,
    ],
)
def test_long_or_deep_expressions_give_a_row_filter_error(frame, condition):
    try:
        mask = row_mask(frame, condition)
    except RowFilterError as err:
        assert str(err).startswith("`data.rows`")
    else:
        np.testing.assert_array_equal(mask, frame.eval(condition).to_numpy(dtype=bool))


def test_too_long_and_not_text(frame):
    with pytest.raises(RowFilterError, match=f"at most {MAX_LENGTH}"):
        row_mask(frame, "x > 0 and " * 200 + "x > 0")
    with pytest.raises(RowFilterError, match="written as text"):
        row_mask(frame, 5)


def test_duplicate_column_names_are_named():
    frame = pd.DataFrame([[1, 2]], columns=["x", "x"])
    with pytest.raises(RowFilterError, match="more than one column named 'x'"):
        row_mask(frame, "x > 0")


def test_select_rows_turns_refusals_into_config_errors(frame):
    kept = select_rows(frame, "`dose mg` >= 5", "trial.csv")
    assert kept.index.tolist() == [4, 5]
    with pytest.raises(ConfigError) as err:
        select_rows(frame, "len(x) > 1", "trial.csv")
    (problem,) = err.value.problems
    assert problem.startswith("`data.rows`: function calls are not allowed") and "trial.csv" in problem
    with pytest.raises(ConfigError, match="`data.rows`: cannot evaluate 'dose >'"):
        select_rows(frame, "dose >", "trial.csv")
    with pytest.raises(ConfigError, match="`data.rows` must be a condition"):
        select_rows(frame, "dose + 1", "trial.csv")
