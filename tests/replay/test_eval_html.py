"""The eval's HTML report: one self-contained page, the confusion matrix as an SVG heatmap, caller words escaped."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.replay.html_report import EvalReportError, render_eval_html, write_eval_html

HOSTILE_WORDS = '<script>alert("pwned")</script> my card <img src=x onerror=alert(1)> & more'


class PageParts(HTMLParser):
    """Every start tag with its attributes, the headings, and the text inside the SVG."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headings: list[str] = []
        self.svg_texts: list[str] = []
        self.all_text: list[str] = []
        self.text_by_tag: list[tuple[str, str]] = []  # (innermost open tag, text)
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.all_text.append(data)
        if self._open:
            self.text_by_tag.append((self._open[-1], data.strip()))
        if self._open and self._open[-1] == "h2":
            self.headings.append(data.strip())
        if "svg" in self._open and self._open[-1] == "text":
            self.svg_texts.append(data.strip())

    def texts_in(self, tag: str) -> list[str]:
        return [text for name, text in self.text_by_tag if name == tag]

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(page: str) -> PageParts:
    parts = PageParts()
    parts.feed(page)
    parts.close()
    return parts


def full_summary() -> dict:
    return {
        "engine": "offline", "mode": "text", "calls": 14, "parity": 0.7143, "min_parity": 0.9,
        "per_intent": {
            "billing": {"precision": 0.8, "recall": 0.6667, "support": 6},
            "emergency": {"precision": 0.6667, "recall": 1.0, "support": 4},
            "schedule": {"precision": 0.6667, "recall": 0.5, "support": 4},
        },
        "confusion": {
            "billing": {"billing": 4, "emergency": 1, "schedule": 1},
            "emergency": {"emergency": 4},
            "schedule": {"billing": 1, "emergency": 1, "schedule": 2},
        },
        "time_to_decision_ms": {"p50": 6.459, "p90": 13.64, "p95": 13.86, "max": 20.02},
        "flex": {
            "compared": 5, "same_task": 3,
            "mismatches": [
                {"call_id": "c7", "same": False, "checks": {"intent": False, "caller_id": True},
                 "ours": {"intent": "emergency", "workflow_sid": "WW0001", "priority": 100}},
                {"call_id": "c8", "same": False, "checks": {"intent": True, "caller_id": False},
                 "ours": {"intent": "billing", "workflow_sid": "WW0002", "priority": 30}},
            ],
        },
        "per_language": {"en-US": {"parity": 0.75, "calls": 12}, "es-US": {"parity": 0.5, "calls": 2}},
        "skipped": {"no expected intent": 2},
        "disagreements": [
            {"call_id": "c3", "expected": "billing", "predicted": "emergency", "confidence": 0.41,
             "route": "flex", "words": HOSTILE_WORDS},
            {"call_id": "c4", "expected": "schedule", "predicted": "billing", "confidence": 0.55,
             "words": "i need someone on tuesday"},
        ],
    }


def minimal_summary() -> dict:
    return {
        "calls": 2, "parity": 1.0,
        "per_intent": {"billing": {"precision": 1.0, "recall": 1.0, "support": 2}},
        "confusion": {"billing": {"billing": 2}},
        "disagreements": [],
    }


def test_the_page_is_self_contained_with_nothing_to_fetch() -> None:
    page = render_eval_html(full_summary(), title="Acme replay")
    parts = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    for tag in ("script", "link", "img", "iframe", "object", "embed"):
        assert parts.named(tag) == [], f"the report has a <{tag}>"
    references = [value for _, attrs in parts.tags for key, value in attrs.items() if key in ("src", "href")]
    assert not any("http" in (value or "") for value in references)
    assert "@import" not in page and "url(" not in page  # no stylesheet or font from elsewhere
    assert len(parts.named("style")) == 1


def test_the_confusion_matrix_is_one_svg_with_a_rect_per_cell_and_its_count() -> None:
    summary = full_summary()
    parts = parse(render_eval_html(summary, title="Acme replay"))
    assert len(parts.named("svg")) == 1
    labels = ["billing", "emergency", "schedule"]
    rects = parts.named("rect")
    assert len(rects) == len(labels) ** 2
    # Rows expected, columns predicted, left to right and top to bottom in label order.
    by_place = {(float(r["y"]), float(r["x"])): r for r in rects}
    ordered = [by_place[place] for place in sorted(by_place)]
    assert len({r["x"] for r in rects}) == len({r["y"] for r in rects}) == len(labels)
    counts = [summary["confusion"][e].get(p, 0) for e in labels for p in labels]
    nonzero = [str(count) for count in counts if count]
    assert [text for text in parts.svg_texts if text.isdigit()] == nonzero
    assert {"expected", "predicted"} <= set(parts.svg_texts)
    assert parts.svg_texts.count("billing") == 2  # a row label and a column label
    # A busier cell is darker: the 4-call diagonal against the 2-call one, off-diagonal in another hue.
    fills = dict(zip([(e, p) for e in labels for p in labels], (r["fill"] for r in ordered)))
    assert _lightness(fills["billing", "billing"]) < _lightness(fills["schedule", "schedule"])
    assert fills["billing", "emergency"] != fills["emergency", "billing"]  # 1 call against none
    assert _hue_is_blue(fills["emergency", "emergency"]) and not _hue_is_blue(fills["billing", "schedule"])


def _lightness(colour: str) -> int:
    return sum(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _hue_is_blue(colour: str) -> bool:
    red, blue = int(colour[1:3], 16), int(colour[5:7], 16)
    return blue > red


def test_forty_intents_stay_readable() -> None:
    labels = [f"intent_with_a_rather_long_name_{number:02d}" for number in range(40)]
    summary = {
        "calls": 40, "parity": 1.0, "disagreements": [],
        "per_intent": {label: {"precision": 1.0, "recall": 1.0, "support": 1} for label in labels},
        "confusion": {label: {label: 1} for label in labels},
    }
    parts = parse(render_eval_html(summary, title="many"))
    [svg] = parts.named("svg")
    assert len(parts.named("rect")) == 1600
    assert 800 <= int(svg["width"]) <= 1500
    sizes = {float(rect["width"]) for rect in parts.named("rect")}
    assert sizes == {22.0}  # cells big enough for a two-digit count
    fonts = {float(text["font-size"]) for text in parts.named("text")}
    assert min(fonts) >= 9
    assert "intent_with_a_rather_long_n…" in parts.svg_texts  # cut, with the full name in a tooltip


def test_hostile_caller_words_and_names_are_escaped() -> None:
    summary = full_summary()
    summary["confusion"]["<b>odd</b>"] = {"billing": 1}
    page = render_eval_html(summary, title="<script>title</script>")
    parts = parse(page)
    assert parts.named("script") == [] and parts.named("img") == [] and parts.named("b") == []
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page
    assert HOSTILE_WORDS in parts.all_text  # shown to the reader as the caller said it
    assert "<b>odd</b>" in parts.svg_texts


def test_the_headline_shows_parity_engine_mode_and_verdict() -> None:
    parts = parse(render_eval_html(full_summary(), title="Acme replay"))
    text = " ".join(parts.all_text)
    assert "71.4%" in text and "14 calls" in text
    details = dict(zip(parts.texts_in("dt"), parts.texts_in("dd"), strict=True))
    assert details == {"engine": "offline", "mode": "text", "minimum parity": "90.0%"}
    [verdict] = [attrs for attrs in parts.named("span") if "verdict" in (attrs.get("class") or "")]
    assert verdict["class"] == "verdict fail"
    passing = full_summary() | {"parity": 0.95}
    assert 'class="verdict pass"' in render_eval_html(passing, title="Acme replay")


def test_optional_sections_appear_only_when_their_figures_are_there() -> None:
    full = parse(render_eval_html(full_summary(), title="t"))
    assert full.headings == ["Per intent", "Confusion matrix", "Flex parity", "Time to decision",
                             "Per language", "Disagreements"]
    text = " ".join(full.all_text)
    assert "60.0%" in text and "(3 of 5)" in text  # Flex parity
    assert "c7" in text and "WW0001" in text
    assert [t for t in full.all_text if t.endswith(" ms")] == ["6.46 ms", "13.64 ms", "13.86 ms", "20.02 ms"]

    minimal = parse(render_eval_html(minimal_summary(), title="t"))
    assert minimal.headings == ["Per intent", "Confusion matrix", "Disagreements"]
    assert not any("verdict" in (attrs.get("class") or "") for attrs in minimal.named("span"))
    assert minimal.texts_in("dt") == []


def test_older_summaries_with_decide_ms_percentiles_still_show_them() -> None:
    summary = minimal_summary() | {"decide_ms_p50": 0.51, "decide_ms_p95": 1.234}
    parts = parse(render_eval_html(summary, title="t"))
    assert "Time to decision" in parts.headings
    assert [t for t in parts.all_text if t.endswith(" ms")] == ["0.51 ms", "1.23 ms"]


def test_per_intent_rows_carry_precision_recall_and_calls() -> None:
    parts = parse(render_eval_html(full_summary(), title="t"))
    cells = [t.strip() for t in parts.all_text if t.strip()]
    start = cells.index("billing")
    assert cells[start:start + 4] == ["billing", "0.80", "0.67", "6"]


def test_no_scored_calls_give_a_page_without_a_matrix() -> None:
    summary = {"calls": 0, "parity": 0.0, "per_intent": {}, "confusion": {}, "disagreements": []}
    parts = parse(render_eval_html(summary, title="empty"))
    assert parts.named("svg") == []
    assert "No calls were scored." in parts.all_text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("parity"), "summary.parity: field required"),
        (lambda s: s["per_intent"]["billing"].update(recall="high"), "summary.per_intent.billing.recall:"),
        (lambda s: s["confusion"]["billing"].update(billing=-1), "summary.confusion.billing.billing:"),
        (lambda s: s.update(parity=1.5), "summary.parity: input should be less than or equal to 1"),
        (lambda s: s["disagreements"].append({"call_id": "x"}), "summary.disagreements[0].expected:"),
    ],
)
def test_a_bad_summary_is_a_clear_error_naming_the_key(change, message: str) -> None:
    summary = minimal_summary()
    change(summary)
    with pytest.raises(EvalReportError) as raised:
        render_eval_html(summary, title="t")
    assert str(raised.value).startswith(message)


def test_a_summary_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(EvalReportError, match=r"summary: expected a JSON object \(got list\)"):
        render_eval_html([], title="t")  # type: ignore[arg-type]


def test_write_eval_html_writes_the_page_and_reports_an_unwritable_path(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    write_eval_html(minimal_summary(), target, title="Acme")
    assert target.read_text(encoding="utf-8") == render_eval_html(minimal_summary(), title="Acme")
    with pytest.raises(EvalReportError, match="cannot write the report"):
        write_eval_html(minimal_summary(), tmp_path, title="Acme")


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=60)
@given(labels=st.lists(_TEXT, min_size=1, max_size=6, unique=True), words=_TEXT, data=st.data())
def test_any_intent_names_and_words_render_escaped_with_one_cell_each(labels: list[str], words: str, data) -> None:
    confusion = {
        expected: {predicted: data.draw(st.integers(0, 30)) for predicted in labels} for expected in labels
    }
    summary = {
        "calls": 1, "parity": 0.5, "confusion": confusion,
        "per_intent": {label: {"precision": 0.5, "recall": 0.5, "support": 1} for label in labels},
        "disagreements": [{"call_id": "c1", "expected": labels[0], "predicted": labels[-1], "words": words}],
    }
    parts = parse(render_eval_html(summary, title=words))
    assert len(parts.named("svg")) == 1
    assert len(parts.named("rect")) == len(labels) ** 2
    assert parts.named("script") == []


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats(0, 2) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150)
@given(summary=st.dictionaries(
    st.sampled_from(["parity", "calls", "per_intent", "confusion", "disagreements", "flex", "min_parity",
                     "time_to_decision_ms", "per_language", "skipped", "engine"]),
    _ANY_JSON,
))
def test_any_summary_renders_or_is_a_clear_error(summary: dict) -> None:
    try:
        page = render_eval_html(minimal_summary() | summary, title="t")
    except EvalReportError as error:
        assert str(error).startswith("summary.")
    else:
        assert page.startswith("<!DOCTYPE html>")
