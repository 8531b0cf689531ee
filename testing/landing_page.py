"""Reading the landing page as a person sees it: from our HTML, or from a browser's DOM dump."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def text(self) -> str:
        """The text content, whitespace folded, as a reader sees it."""
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join("".join(parts).split())

    def iter(self) -> list[Element]:
        """This element and every element below it, in document order."""
        out = [self]
        for c in self.children:
            if isinstance(c, Element):
                out += c.iter()
        return out

    def find(self, tag: str | None = None, **attrs: str) -> list[Element]:
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag) and all(e.attrs.get(k) == v for k, v in attrs.items())
        ]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self._stack[-1].children.append(element)
        if tag not in _VOID:
            self._stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, 0, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)


def parse(html: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


@dataclass(frozen=True)
class Area:
    """One status's area in the chart: its tooltip, colour class and outline's points."""

    status: str
    colour: str
    upper: list[tuple[float, float]]  # from the first point to the last
    lower: list[tuple[float, float]]  # from the last point back to the first


def _area(path: Element) -> Area:
    d = path.attrs["d"]
    assert d.startswith("M"), d
    assert d.endswith(" Z"), d
    upper, lower = d[1:-2].split(" L")

    def xy(part: str) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in (p.split(",") for p in part.split())]

    (title,) = path.find("title")
    return Area(title.text(), path.attrs.get("class", ""), xy(upper), xy(lower))


@dataclass(frozen=True)
class Landing:
    """What the landing page shows: the figures, the table, the notices."""

    title: str
    refresh: str | None
    total: str | None
    completion: str | None
    age: str | None
    rows: list[tuple[str, str, str]]  # status, tasks, share as displayed
    colours: dict[str, str]  # status -> its row's colour class
    notices: dict[str, str]  # id -> text of every notice shown (stale, unreachable)
    tags: set[str]  # every element name in the document
    oldest: str | None  # how long the oldest Pending task has waited, as displayed
    oldest_detail: str | None  # the line under it
    window: str | None  # the sentence naming the counting window's start
    chart: list[Area]  # the chart's areas, bottom first
    chart_labels: list[str]  # the chart's axis labels: counts, then times

    @property
    def counts(self) -> dict[str, int]:
        """The counts per status as a reader would copy them from the table."""
        return {status: int(n.replace(",", "")) for status, n, _ in self.rows}


def read(html: str) -> Landing:
    doc = parse(html)

    def text_of(element_id: str) -> str | None:
        found = doc.find(id=element_id)
        return found[0].text() if found else None

    tables = doc.find("table", id="counts")
    rows, colours = [], {}
    if tables:
        for body in tables[0].find("tbody"):
            for tr in body.find("tr"):
                cells = [td.text() for td in tr.find("td")]
                rows.append((cells[0], cells[1], cells[2]))
                colours[cells[0]] = tr.attrs.get("class", "")
    refresh = [m for m in doc.find("meta") if m.attrs.get("http-equiv", "").lower() == "refresh"]
    titles = [t for t in doc.find("title") if t in doc.find("head")[0].children]
    charts = doc.find("svg", id="chart")
    oldest = doc.find(id="oldest")
    return Landing(
        title=titles[0].text() if titles else "",
        refresh=refresh[0].attrs.get("content") if refresh else None,
        total=text_of("total"),
        completion=text_of("completion"),
        age=text_of("age"),
        rows=rows,
        colours=colours,
        notices={e.attrs["id"]: e.text() for e in doc.iter() if e.attrs.get("role") == "alert"},
        tags={e.tag for e in doc.iter()},
        oldest=oldest[0].text() if oldest else None,
        oldest_detail=_next_text(doc, oldest[0]) if oldest else None,
        window=text_of("window"),
        chart=[_area(p) for p in charts[0].find("path")] if charts else [],
        chart_labels=[t.text() for t in charts[0].find("text")] if charts else [],
    )


def _next_text(doc: Element, element: Element) -> str | None:
    """The text of the element right after `element` among its parent's children."""
    for parent in doc.iter():
        siblings = [c for c in parent.children if isinstance(c, Element)]
        if element in siblings:
            i = siblings.index(element)
            return siblings[i + 1].text() if i + 1 < len(siblings) else None
    return None
