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
    titles = doc.find("title")
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
    )
