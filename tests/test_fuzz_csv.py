"""Fuzz CSV data for `evaluate`, `train` (train.dataset_path) and `data` (writing over a file):
byte order marks, CRLF, blank lines, non-digits, wrong answers, strings of 19 to 10,001 digits, other
scripts' digits, headers, binary garbage, and valid rows.
"""

from __future__ import annotations

import pytest
from fuzz import call, weird_text
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

digits = st.text(alphabet="0123456789", min_size=1, max_size=20)
good_rows = digits.map(lambda x: f"{x},{sum(map(int, x))}")
bad_rows = st.one_of(
    st.builds(lambda x, y: f"{x},{y}", digits, st.integers(-5, 200)),  # mostly a wrong answer
    st.builds(lambda x: f"{x},", digits),
    st.builds(lambda x: f",{x}", digits),
    st.builds(lambda x: f"{x},{sum(map(int, x))},1", digits),
    st.builds(lambda x: f" {x} , {sum(map(int, x))} ", digits),
    st.builds(lambda x: f'"{x}","{sum(map(int, x))}"', digits),
    st.builds(lambda x: f"+{x},{sum(map(int, x))}", digits),
    st.just("x,y"),
    st.just("١٢,٣"),  # Arabic-Indic digits: Python's \d would take them
    st.just("12;3"),
    st.just("1" * 19 + ",19"),  # valid: any length up to MAX_LENGTH
    st.just("0" * 5000 + ",0"),
    st.just("1" * 10_001 + ",10001"),  # over MAX_LENGTH
    weird_text,
)
lines = st.lists(st.one_of(good_rows, good_rows, bad_rows, st.just(""), st.just("   ")), max_size=12)


@st.composite
def csv_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["text"] * 5 + ["garbage", "empty"]))
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"\r\n", b"\xef\xbb\xbf", b"   \n\n"]))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = ending.join(draw(lines)) + draw(st.sampled_from(["", ending]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text.encode("utf-8", "surrogatepass")


@given(
    content=csv_bytes(), use=st.sampled_from(["evaluate", "evaluate", "train", "data"]), number=st.integers(0, 10**6)
)
def test_csv_files(fuzz_box, content, use, number):
    box = fuzz_box
    path = box.folder / "csv" / f"fuzzed-{number}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    if use == "evaluate":
        call(box, "csv", ["evaluate", box.checkpoint, path, "--device", "cpu"])
    elif use == "train":
        cheap = ["train.n_epochs=1", "model.hidden_size=8", "train.device=cpu", "train.num_threads=1"]
        call(box, "csv", ["train", f"train.dataset_path={path}", *cheap, "train.run_name=csv", "--overwrite"])
    else:
        call(box, "csv", ["data", path, "--lengths", "1"])
        assert path.read_text().splitlines()[:2] == ["0,0", "1,1"]
