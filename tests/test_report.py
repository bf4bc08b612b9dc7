"""`nnrun report RUNS --html OUT`: the runs page, as HTML and in a real headless Chromium.

The browser test needs Chromium (`apt-get install chromium`; `.ci/run` installs it when it can) and skips
without it; its screenshot is kept in `tests/artifacts/report-page.png` (git-ignored).
"""

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image, ImageStat

from nnrun.report import MANIFEST, PAGE, SCRIPT, write_report
from nnrun.runs import select_runs, sort_runs
from tests.browser import Chromium, find_chromium
from tests.helpers import TINY_RUN, epoch_rows, invoke, invoke_error, train_run, write_run

ARTIFACTS = Path(__file__).parent / "artifacts"

HOSTILE_DIR = "<img src=x onerror=alert('dir')> & \"q\""
HOSTILE_NAME = "</script><script>alert('name')</script>"
HOSTILE_REASON = "<b onmouseover=alert('reason')>x</b>"
HOSTILE_TITLE = "<script>alert('study')</script>"
HOSTILE_CLAIM = "<img src=x onerror=alert('claim')>"
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "code", "nav", "a", "section",
        "div", "table", "thead", "tbody", "tr", "th", "td", "button", "span", "figure", "img", "figcaption", "script",
        "details", "summary", "br"}
"""Every element the page may hold: anything else came from a run's files."""


def fake_run(root, name, lr, seed, accuracy, hidden=(16,)):
    """A run as `nnrun train` writes it (the settings of `TINY_RUN`), with made-up metrics."""
    config = {"seed": seed, "optim": {"lr": lr}, "model": {"hidden": list(hidden)},
              "train": {"epochs": 2, "batch_size": 64}}
    return write_run(root, name, config,
                     epoch_rows([accuracy - 0.2, accuracy], [1.5, 0.5 + lr]),
                     {"status": "completed", "epochs": 2, "best_epoch": 2, "val_accuracy": accuracy,
                      "test_accuracy": accuracy - 0.01, "val_loss": 0.5, "train_loss": 0.4, "seconds": 1.25})


def study_output(folder):
    """What `nnrun study` leaves in its output folder (a study.json with one claim, its reports)."""
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({
        "study": "demo", "title": HOSTILE_TITLE, "budget": "quick",
        "claims": [{"id": "bn-helps", "verdict": "supported", "statement": HOSTILE_CLAIM}]}))
    (folder / "report.html").write_text("<!DOCTYPE html><title>demo</title><p>report</p>")
    (folder / "report.md").write_text("# demo\n")
    return folder


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Four fake runs (two learning rates, two seeds, one with a wider layer), one really trained tiny run, a
    tampered run whose folder, config name and failure reason are markup, and a study's output folder; the page
    written by the command."""
    root = tmp_path_factory.mktemp("report") / "runs"
    for i, (lr, seed) in enumerate([(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]):
        fake_run(root, f"fake-{i}", lr, seed, 0.6 + lr + seed / 100, hidden=(32,) if i == 3 else (16,))
    train_run(root / "tiny-trained", *TINY_RUN)
    hostile = fake_run(root, HOSTILE_DIR, 0.05, 0, 0.3)
    hostile.joinpath("summary.json").write_text(json.dumps(
        {"status": "failed", "reason": HOSTILE_REASON, "epochs": 2, "val_accuracy": 0.3}))
    config = hostile / "config.yaml"
    config.write_text(re.sub(r"(?m)^name: .*$", "name: " + json.dumps(HOSTILE_NAME), config.read_text()))
    study_output(root / "study-demo-quick")
    out = root.parent / "page"
    result = invoke("report", root, "--html", out)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr and (out / PAGE).as_uri() in result.stderr.replace("\n", "")
    return root, out


@pytest.fixture
def quick_figures(monkeypatch):
    """`nnrun plot`'s figures replaced by a small one naming the runs it was asked to draw (tests of the files)."""
    from nnrun import plots, report
    from nnrun.runstore import collect_runs

    def figure(paths, *, x="epoch", recursive=False, **options):
        fig = plots.new_figure(1, 1)
        fig.text(0.5, 0.5, str(len(collect_runs(paths, recursive=recursive))))
        return fig, {"metrics": ["val_accuracy"], "x": x}

    monkeypatch.setattr(report, "plot_figure", figure)


class Page(HTMLParser):
    """The elements, attributes and text of a page."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self.scripts, self._in_script = [], [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def parsed(out) -> Page:
    return Page((out / PAGE).read_text(encoding="utf-8"))


def test_run_names_config_values_and_study_text_are_escaped(page):
    root, out = page
    doc = parsed(out)
    assert {tag for tag, _ in doc.tags} <= TAGS
    assert [tag for tag, _ in doc.tags].count("script") == 1 and doc.scripts == [SCRIPT]
    assert not [(tag, name) for tag, attrs in doc.tags for name in attrs if name.startswith("on")]
    text = "".join(doc.text)
    for hostile in (HOSTILE_DIR, HOSTILE_NAME, HOSTILE_REASON, HOSTILE_TITLE, HOSTILE_CLAIM):
        assert hostile in text                                   # shown as text, never as markup
    links = [attrs["href"] for tag, attrs in doc.tags if tag == "a"]
    assert all(link.startswith("#") or not re.match(r"^[a-zA-Z][\w+.-]*:", link) for link in links)
    csp = next(attrs["content"] for tag, attrs in doc.tags if attrs.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp


def test_the_table_has_the_columns_order_and_numbers_of_nnrun_runs(page, monkeypatch):
    root, out = page
    records, columns = select_runs(root)
    doc = parsed(out)
    headers = [attrs["data-column"] for tag, attrs in doc.tags if tag == "th" and "data-column" in attrs]
    assert headers == columns and "optim.lr" in columns and "val_accuracy" in columns
    rows = [attrs["data-run"] for tag, attrs in doc.tags if tag == "tr" and "data-run" in attrs]
    listing = json.loads(invoke("runs", root, "--format", "json").stdout)
    assert rows == [r["run"] for r in listing["runs"]] == [r.name for r in records]   # best first
    # The cells read as `nnrun runs` prints them (one number of decimals per metric column).
    monkeypatch.setenv("COLUMNS", "400")
    terminal = invoke("runs", root, "--columns", ",".join(columns)).stdout
    html = (out / PAGE).read_text()
    for name in ("fake-0", "fake-3", "tiny-trained"):
        row = re.search(rf'<tr data-run="{name}">(.*?)</tr>', html).group(1)
        cells = ["".join(Page(td).text) for td in re.findall(r"<td[^>]*>(.*?)</td>", row)][:len(columns)]
        line = next(line for line in terminal.splitlines() if line.startswith(f"{name} "))
        assert " ".join(cells).split() == line.split()


def test_links_are_relative_and_reach_every_run_and_its_files(page):
    root, out = page
    doc = parsed(out)
    targets = {(out / unquote(attrs["href"])).resolve() for tag, attrs in doc.tags
               if tag == "a" and not attrs["href"].startswith("#")}
    assert all(t.exists() for t in targets)
    records, _ = select_runs(root)
    for r in records:
        assert r.path.resolve() in targets
        assert (r.path / "config.yaml").resolve() in targets or r.status == "broken"
    assert (root / "tiny-trained" / "model.npz").resolve() in targets
    assert (root / "study-demo-quick" / "report.html").resolve() in targets


def test_figures_sit_beside_the_page_named_by_their_content(page):
    root, out = page
    manifest = json.loads((out / MANIFEST).read_text())
    figures = manifest["figures"]
    assert figures[0].startswith("curves-") and any(f.startswith("val-accuracy-vs-optim-lr-") for f in figures)
    assert not any("-vs-seed-" in f for f in figures)
    for name in figures:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and hashlib.sha256(data).hexdigest()[:12] in name
    sources = [attrs["src"] for tag, attrs in parsed(out).tags if tag == "img"]
    assert sources == [f"figures/{name}" for name in figures]
    assert sorted(p.name for p in out.iterdir()) == [".report.lock", "figures", "index.html", "report.json"]


def test_a_rerun_replaces_its_own_page_and_never_touches_other_files(tmp_path, quick_figures):
    root = tmp_path / "runs"
    fake_run(root, "a", 0.01, 0, 0.7)
    out = tmp_path / "page"
    first = write_report(root, out=out)
    fake_run(root, "b", 0.01, 1, 0.8)                          # another seed: curves only, no plot per key
    second = write_report(root, out=out)                        # an earlier report: replaced
    assert second["runs"] == 2 and set(first["figures"]).isdisjoint(second["figures"])
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(Path(f).name for f in second["figures"])
    page_text = (out / PAGE).read_text()
    (out / "notes.txt").write_text("mine")
    error = invoke_error("report", root, "--html", out)
    assert "notes.txt" in error and "did not write" in error
    assert (out / PAGE).read_text() == page_text and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "figures" / "mine.png").write_bytes(b"x")
    assert "figures/mine.png" in invoke_error("report", root, "--html", out)
    assert (out / "figures" / "mine.png").read_bytes() == b"x"
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("someone else's page")
    assert "did not write" in invoke_error("report", root, "--html", other)
    assert (other / "index.html").read_text() == "someone else's page" and len(list(other.iterdir())) == 1
    (tmp_path / "file").write_text("")
    assert "not a folder" in invoke_error("report", root, "--html", tmp_path / "file")
    assert "not a folder" in invoke_error("report", root, "--html", root / "a" / "config.yaml")  # a run's file


def test_two_reports_into_one_folder_take_turns(tmp_path, quick_figures, monkeypatch):
    """A report holding the folder's lock makes another wait, and give up with exit 2 when it holds on."""
    import threading

    from filelock import FileLock

    from nnrun import report

    root = tmp_path / "runs"
    fake_run(root, "a", 0.01, 0, 0.7)
    out = tmp_path / "page"
    write_report(root, out=out)
    fake_run(root, "b", 0.02, 1, 0.8)
    monkeypatch.setattr(report, "LOCK_WAIT_S", 0.2)
    with FileLock(out / report.REPORT_LOCK):                   # another process writing: refused, nothing changed
        before = (out / PAGE).read_text()
        assert "another nnrun report" in invoke_error("report", root, "--html", out)
        assert (out / PAGE).read_text() == before
    monkeypatch.setattr(report, "LOCK_WAIT_S", 30.0)
    lock = FileLock(out / report.REPORT_LOCK, thread_local=False)    # released by the timer's thread
    lock.acquire()
    threading.Timer(0.5, lock.release).start()                 # released while the second one waits
    assert write_report(root, out=out)["runs"] == 2
    assert "b" in (out / PAGE).read_text() and not lock.is_locked


def test_bad_input_exits_2_and_nested_runs_need_recursive(tmp_path, quick_figures):
    assert "does not exist" in invoke_error("report", tmp_path / "missing", "--html", tmp_path / "out")
    nested = tmp_path / "nested" / "grid"
    fake_run(nested, "a", 0.01, 0, 0.7)
    error = invoke_error("report", tmp_path / "nested", "--html", tmp_path / "out")
    assert "no run directories or study reports" in error and "--recursive" in error
    assert not (tmp_path / "out").exists()
    assert "--html" in invoke_error("report", tmp_path / "nested")
    result = invoke("report", tmp_path / "nested", "--html", tmp_path / "out", "--recursive", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"] == 1 and "grid/a" in (tmp_path / "out" / PAGE).read_text()


def test_help_names_the_option():
    result = invoke("report", "--help")
    assert result.exit_code == 0 and "--html" in result.output and "--recursive" in result.output


def _order(chrome):
    return chrome.evaluate("Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.dataset.run)")


def _click(chrome, column):
    chrome.evaluate(f"document.querySelector('th[data-column={json.dumps(column)}] button').click()")
    return chrome.evaluate("document.getElementById('runs').dataset.sorted")


def _busy(image, box):
    """Whether the part of the region `box` inside the screenshot holds more than one colour (is not blank)."""
    left, top, right, bottom = box
    crop = image.crop((round(left), round(top), min(round(right), image.width), min(round(bottom), image.height)))
    crop = crop.convert("L")
    return ImageStat.Stat(crop).stddev[0] > 5


def test_the_page_in_headless_chromium(request):
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium (apt-get install chromium) for the browser test")
    root, out = request.getfixturevalue("page")                 # built only when the test runs
    records, _ = select_runs(root)
    with Chromium(executable, width=1280, height=1000) as chrome:
        chrome.open((out / PAGE).as_uri())
        assert chrome.problems() == []                        # no console error, no blocked file, no alert
        assert chrome.evaluate("document.querySelectorAll('#runs tbody tr').length") == len(records)
        images = chrome.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) >= 2 and all(done and width > 0 for done, width in images)
        assert _order(chrome) == [r.name for r in records]
        for column in ("val_accuracy", "optim.lr", "run", "model.hidden"):   # numbers, settings, names, lists
            assert _click(chrome, column) == column
            assert _order(chrome) == [r.name for r in sort_runs(records, column)], column
            assert _click(chrome, column) == f"-{column}"
            assert _order(chrome) == [r.name for r in sort_runs(records, f"-{column}")], column
        assert chrome.problems() == []
        boxes = chrome.evaluate("['#runs', 'figure img'].map(s => { const r = document.querySelector(s)"
                                ".getBoundingClientRect(); return [r.left + scrollX, r.top + scrollY, "
                                "r.right + scrollX, r.bottom + scrollY]; })")
        shot = chrome.screenshot(ARTIFACTS / "report-page.png")
        print(f"screenshot of the runs page: {shot}")
        # The policy blocks script that escaping would have let through: an injected handler does not run.
        chrome.evaluate("document.body.insertAdjacentHTML('beforeend', "
                        "'<img src=\"missing.png\" onerror=\"window.injected = 1\">')")
        chrome.evaluate("new Promise(done => setTimeout(done, 200))")
        assert chrome.evaluate("window.injected === undefined")
    with Image.open(shot) as image:
        table, figure = boxes
        assert image.height >= figure[3] - 1 and image.width >= min(table[2], 1280) - 1
        assert _busy(image, table) and _busy(image, figure)      # the table and a figure, both drawn
