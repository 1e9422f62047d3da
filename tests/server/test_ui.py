"""The read-only web page (/ui/): odd and hostile path names, links, versions, sharing.

A real ``castore serve`` on 127.0.0.1 (one per module; each test writes its own folder
through a Store on the same root); the click-through in a real browser is
tests/server/test_ui_browser.py.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from castore.server import ui
from castore.store import Store

from ..server_process import castore_server

ODD = [
    "/odd/with space.txt",
    "/odd/100%.txt",
    "/odd/100%25.txt",
    "/odd/a#b.in",
    "/odd/q?x=1&y=2",
    "/odd/zażółć gęślą jaźń.txt",
    "/odd/quote\"s and 'single'",
    "/odd/<img src=x onerror=alert(1)>",
    "/odd/<script>alert(1)</script>.in",  # a folder "<script>alert(1)<" holding "script>.in"
    "/odd/amp&lt;.txt",
    "/odd/plus+semi;colon=eq,comma",
]


class Links(HTMLParser):
    """Every href of a page, with the text of its link."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), ""

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, self._text))
            self._href = None


def links(html: str) -> dict[str, str]:
    """``link text -> href`` (texts unescaped, as a person reads them)."""
    parser = Links()
    parser.feed(html)
    return {text: href for href, text in parser.links}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, httpx.Client]]:
    """A store, with every ODD path in it, and a client of a real server on it."""
    root = tmp_path_factory.mktemp("ui") / "store"
    with Store.open(root, create=True) as store:
        for path in ODD:
            store.put(path, path.encode(), 1)
        with castore_server(root) as url, httpx.Client(base_url=url) as http:
            yield store, http


@pytest.fixture
def store(served: tuple[Store, httpx.Client]) -> Store:
    return served[0]


@pytest.fixture
def client(served: tuple[Store, httpx.Client]) -> httpx.Client:
    return served[1]


def test_index_shows_usage(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", create=True) as store:
        store.put("/usage/a/1", b"x" * 100, 1)
        store.put("/usage/b/1", b"x" * 100, 1)
        store.put("/usage/b/1", b"y" * 100, 2)
    with castore_server(tmp_path / "s") as url, httpx.Client(base_url=url) as client:
        page = client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "2 (3 versions retained)" in page.text
        assert "200 B current, 300 B retained" in page.text
        assert "Browse the files" in page.text
        assert client.get("/ui", follow_redirects=True).url.path == "/ui/"


@pytest.mark.parametrize("path", ODD)
def test_odd_names_render_escaped_and_link_to_themselves(client: httpx.Client, path: str) -> None:
    folder, name = path.rsplit("/", 1)
    page = client.get("/ui/browse" + ui.quote_path(folder + "/"))
    assert page.status_code == 200
    assert "<script" not in page.text and "<img" not in page.text  # the page has no script at all
    found = links(page.text)
    assert name in found, found
    href = found[name]
    assert unquote(urlsplit(href).path) == "/ui/file" + path
    assert "#" not in href and "?" not in href and " " not in href
    file_page = client.get(href)
    assert file_page.status_code == 200
    assert "<script" not in file_page.text and "<img" not in file_page.text
    file_links = links(file_page.text)
    download = client.get(file_links["current version"])
    assert download.content == path.encode()
    assert unquote(urlsplit(file_links["current version"]).path) == "/files" + path


def test_hostile_folder_name_in_crumbs_and_report(store: Store, client: httpx.Client) -> None:
    hostile = "/x/\"><script>alert(1)</script>/f"
    store.put(hostile, b"data", 1)
    store.put("/x/other", b"data", 1)
    for url in ["/ui/browse/x/", "/ui/file" + ui.quote_path(hostile), "/ui/report?prefix=/x&by=1",
                "/ui/browse" + ui.quote_path('/x/"><script>alert(1)</')]:
        page = client.get(url)
        assert page.status_code == 200, url
        assert "<script" not in page.text, url
        assert "&lt;script&gt;" in page.text, url
    # a folder link without its last "/" is redirected to the folder, still escaped
    redirected = client.get("/ui/browse" + ui.quote_path('/x/"><script>alert(1)<'), follow_redirects=True)
    assert unquote(redirected.url.path) == '/ui/browse/x/"><script>alert(1)</'
    report = client.get("/ui/report", params={"prefix": "/x", "by": "1"})
    assert links(report.text)['/x/"><script>alert(1)</'].startswith("/ui/browse/x/%22%3E%3Cscript%3E")


def test_file_page_shows_versions_sizes_codec_and_sharing(store: Store, client: httpx.Client) -> None:
    old, new = b"1 2 3\n" * 1000, b"4 5 6\n" * 1000
    store.put("/vers/a/1.in", old, 100)
    store.put("/vers/a/1.in", new, 200)
    store.put("/vers/b/1.in", new, 50)
    store.put("/vers/b/2.in", old, 50)
    page = client.get("/ui/file/vers/a/1.in")
    assert page.status_code == 200
    rows = re.findall(r"<tr><td>(\d+)</td>", page.text)
    assert rows == ["200", "100"]
    assert "Versions (2 retained)" in page.text
    assert "zstd" in page.text and "5.9 KiB (6000 bytes)" in page.text
    found = links(page.text)
    assert found["/vers/b/1.in"] == "/ui/file/vers/b/1.in"  # shares the current content
    assert "/vers/b/2.in" not in found  # shares only the old one
    ids = re.findall(r'<td class="id">([0-9a-f]{12})</td>', page.text)
    assert len(ids) == 2 and ids[0] != ids[1]
    assert client.get("/ui/download/vers/a/1.in?version=100").content == old
    assert client.get("/ui/download/vers/a/1.in?version=200").content == new
    for info in store.versions("/vers/a/1.in"):
        assert info.key not in page.text  # the blob key is never shown


def test_no_page_shows_a_blob_key(store: Store, client: httpx.Client) -> None:
    store.put("/k/a", b"same", 1)
    store.put("/k/b", b"same", 1)
    key = store.stat("/k/a").key
    for url in ["/ui/", "/ui/browse/", "/ui/browse/k/", "/ui/file/k/a", "/ui/report?prefix=/k&by=1",
                "/ui/report?prefix=/&by=0"]:
        assert key not in client.get(url).text, url


def test_missing_and_invalid(store: Store, client: httpx.Client) -> None:
    store.put("/bad/1", b"x", 1)
    assert client.get("/ui/file/bad/2").status_code == 404
    assert client.get("/ui/browse/nope/").status_code == 404
    assert client.get("/ui/file/bad/1@1").status_code == 400
    assert client.get("/ui/browse/bad//b/").status_code == 400
    assert client.get("/ui/download/bad/1?version=x").status_code == 400
    assert client.get("/ui/download/bad/1?version=7").status_code == 404
    assert client.get("/ui/report?prefix=/a//b").status_code == 400
    assert client.get("/ui/report?by=-1").status_code == 400
    assert client.get("/ui/report?sort=bogus").status_code == 400
    page = client.get("/ui/browse/bad/1/")  # a file, not a folder
    assert page.status_code == 404 and "no folder /bad/1/" in page.text
    assert client.get("/ui/browse/bad", follow_redirects=False).headers["location"] == "/ui/browse/bad/"


def test_folder_lists_children_once_and_pages(store: Store, client: httpx.Client) -> None:
    names = ["/f/a", "/f/b/1", "/f/b/2", "/f/b-c", "/f/c/d/e", "/f/d", "/f/e/1", "/f/z"]
    names += [f"/f/m{i:03d}" for i in range(ui.FOLDER_PAGE)]
    for n in names:
        store.put(n, n.encode(), 1)
    expected = {"a", "b/", "b-c", "c/", "d", "e/", "z", *(f"m{i:03d}" for i in range(ui.FOLDER_PAGE))}
    seen: list[str] = []
    pages = 0
    url: str | None = "/ui/browse/f/"
    while url is not None:
        page = client.get(url)
        pages += 1
        found = links(page.text)
        seen += [text for text in found if text in expected]
        url = found.get("Next page")
    assert pages == 2
    assert set(seen) == expected and len(seen) == len(expected)


def test_store_children(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", create=True)
    for n in ["/r/a", "/r/b/1", "/r/b/2", "/r/b-c", "/r/c/d/e", "/r/z", "/s/1"]:
        store.put(n, b"x", 1)
    children = store.children("/r")
    assert [(name, info is None) for name, info in children] == [
        ("a", False), ("b-c", False), ("b/", True), ("c/", True), ("z", False)
    ]
    assert children[0][1] is not None and children[0][1].path == "/r/a"
    assert [n for n, _ in store.children("/r", after="b-c")] == ["b/", "c/", "z"]
    assert [n for n, _ in store.children("/r", after="b/")] == ["c/", "z"]
    assert [n for n, _ in store.children("/r", limit=2)] == ["a", "b-c"]
    assert [n for n, _ in store.children("/")] == ["r/", "s/"]
    assert store.children("/nothing") == []
    store.close()


def test_report_page(store: Store, client: httpx.Client) -> None:
    store.put("/rep/a/1", b"shared content", 1)
    store.put("/rep/b/1", b"shared content", 1)
    store.put("/rep/b/2", b"only b", 1)
    page = client.get("/ui/report", params={"prefix": "/rep", "by": "1", "sort": "freed"})
    assert page.status_code == 200
    rows = re.findall(r'<tr><td class="name"><a href="([^"]+)">', page.text)
    assert rows[:2] == ["/ui/browse/rep/b/", "/ui/browse/rep/a/"]  # b frees "only b"; a frees nothing
    assert "all of /rep/" in page.text
    assert "/rep/a/ (1), /rep/b/ (1)" in page.text


def test_under_a_url_prefix(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", create=True) as store:
        store.put("/p/a b", b"x", 1)
    with castore_server(tmp_path / "s", "--prefix", "/ft") as url, httpx.Client(base_url=url.removesuffix("/ft")) as client:
        page = client.get("/ft/ui/browse/p/")
        assert page.status_code == 200
        href = links(page.text)["a b"]
        assert href == "/ft/ui/file/p/a%20b"
        file_page = client.get(href)
        assert links(file_page.text)["current version"] == "/ft/files/p/a%20b"
        assert client.get("/ft/files/p/a%20b").content == b"x"


def _gated_reports(tmp_path: Path, folder: str) -> tuple[Store, list[tuple[str, int]], threading.Event]:
    """A store with two groups below ``folder`` whose dedup reports are noted and wait for the gate."""
    store = Store.open(tmp_path / "s", create=True)
    store.put(f"{folder}/a/1", b"shared", 1)
    store.put(f"{folder}/b/1", b"shared", 1)
    computed: list[tuple[str, int]] = []
    gate = threading.Event()
    real = store.dedup_report

    def gated(prefix: str = "/", *, depth: int = 1, top: int = 10) -> object:
        computed.append((prefix, depth))
        assert gate.wait(10)
        return real(prefix, depth=depth, top=top)

    store.dedup_report = gated  # type: ignore[method-assign]
    return store, computed, gate


def test_the_report_is_computed_once_per_interval_and_says_when(tmp_path: Path) -> None:
    """Requests for one report within ui.REPORT_TTL share one computation, run once even when they
    come together; after the interval it is computed again; the page says when it was computed."""
    import asyncio

    from starlette.applications import Starlette

    store, computed, gate = _gated_reports(tmp_path, "/r")
    now = [1000.0]
    mount = ui.ui_mount(store, clock=lambda: now[0])
    reports = mount.routes[0].endpoint.__self__.reports  # type: ignore[attr-defined]
    app = Starlette(routes=[mount])

    async def scenario() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            async def get(**params: str) -> str:
                page = await http.get("/ui/report", params={"prefix": "/r", "by": "1", **params})
                assert page.status_code == 200
                return page.text

            together = [asyncio.ensure_future(get(sort=sort)) for sort in ("name", "freed", "stored", "name")]
            for _ in range(1000):  # until the first computes and the three others wait for it
                if computed and reports.waiting(("/r/", 1)) == 3:
                    break
                await asyncio.sleep(0.01)
            assert len(computed) == 1 and reports.waiting(("/r/", 1)) == 3
            gate.set()
            pages = list(await asyncio.gather(*together))
            now[0] += ui.REPORT_TTL - 1
            pages.append(await get())
            assert len(computed) == 1
            now[0] += 2
            pages.append(await get())
            assert len(computed) == 2
            await get(by="2")
            assert computed == [("/r/", 1), ("/r/", 1), ("/r/", 2)]
            return pages

    pages = asyncio.run(scenario())
    stamp = re.compile(r"computed at (\d\d:\d\d:\d\d) UTC, (\d+) s ago")
    ages = [int(stamp.search(page).group(2)) for page in pages]  # type: ignore[union-attr]
    assert ages == [0, 0, 0, 0, int(ui.REPORT_TTL) - 1, 0]
    assert "all of /r/" in pages[0]
    store.close()


def test_the_landing_page_shows_the_totals_as_they_are_now(tmp_path: Path) -> None:
    """The landing page reads the totals the writes keep (#22): no recount, so no interval to wait for."""
    with Store.open(tmp_path / "s", create=True) as store:
        store.put("/now/1", b"one", 1)
        with castore_server(tmp_path / "s") as url, httpx.Client(base_url=url) as client:
            assert "1 (1 versions retained)" in client.get("/ui/").text
            store.put("/now/2", b"two", 1)
            assert "2 (2 versions retained)" in client.get("/ui/").text


def test_the_report_of_the_whole_store_is_computed_in_the_background(tmp_path: Path) -> None:
    """The report of / (the whole store) is never computed on a request's path (#22): the first request
    says it is being computed, later ones show the last one computed and when; once per interval."""
    import asyncio

    from starlette.applications import Starlette

    store, computed, gate = _gated_reports(tmp_path, "/w")
    now = [1000.0]
    app = Starlette(routes=[ui.ui_mount(store, clock=lambda: now[0])])

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            async def get() -> str:
                page = await http.get("/ui/report", params={"prefix": "/", "by": "1"})
                assert page.status_code == 200
                return page.text

            first = await get()  # answered while the computation is blocked
            assert "being computed" in first and computed == [("/", 1)]
            assert "being computed" in await get() and len(computed) == 1  # one computation at a time
            gate.set()
            for _ in range(1000):  # until the background computation is done
                page = await get()
                if "all of /" in page:
                    break
                await asyncio.sleep(0.01)
            assert "all of /" in page and "0 s ago" in page and len(computed) == 1
            now[0] += ui.REPORT_TTL + 5
            stale = await get()  # the last report at once, and a new one is computed meanwhile
            assert "all of /" in stale and f"{int(ui.REPORT_TTL) + 5} s ago" in stale
            for _ in range(1000):
                if len(computed) == 2 and "0 s ago" in await get():
                    break
                await asyncio.sleep(0.01)
            assert computed == [("/", 1), ("/", 1)]

    asyncio.run(scenario())
    store.close()
