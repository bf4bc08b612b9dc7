"""`nnrun study-merge`: a study measured in parts (`--only` into separate folders) merges into the report the
whole study makes at once; bad parts exit 2 and write nothing; one report re-renders beside another budget."""

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from nnrun.cli import app

runner = CliRunner()

CLAIMS = [{"id": "init", "statement": "zeros is the pitfall", "metric": "test_accuracy",
           "arms": {"zeros": {"model.init": "zeros"}, "he": {}},
           "expect": [{"a": "he", "relation": "greater", "b": "zeros"}]},
          {"id": "width", "statement": "wider is better", "metric": "test_accuracy",
           "arms": {"narrow": {"model.hidden": [4]}, "wide": {}},
           "expect": [{"a": "wide", "relation": "greater", "b": "narrow"}]}]
STUDY = {"name": "tiny", "base": {"data": {"dataset": "digits"}, "model": {"hidden": [16]},
                                  "train": {"epochs": 2, "batch_size": 128}},
         "budgets": {"quick": {"seeds": 2, "max_minutes": 10}, "wider": {"seeds": 3, "max_minutes": 10}},
         "claims": CLAIMS}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def numbers(claim):
    """What a claim measured, without where its runs lived."""
    return {"verdict": claim["verdict"], "relations": claim["relations"],
            "arms": {name: {k: v for k, v in arm.items() if k != "runs"} for name, arm in claim["arms"].items()}}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """The tiny study at budget quick: each claim alone into a folder of its own, and both at once; one runs
    folder, so the whole study reuses the parts' runs (the same configs, the same bytes)."""
    root = tmp_path_factory.mktemp("merge")
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    runs = root / "runs"
    for name, only in (("a", "init"), ("b", "width")):
        result = invoke("study", path, "--only", only, "--out", root / name, "--runs-dir", runs, "--quiet")
        assert result.exit_code == 0, result.output
    whole = invoke("study", path, "--out", root / "whole", "--runs-dir", runs, "--json")
    assert whole.exit_code == 0, whole.output
    return root, json.loads(whole.stdout)


def test_parts_merge_into_the_report_of_the_whole_study(parts, tmp_path):
    root, whole = parts
    out = tmp_path / "merged"
    # Given in the other order, the claims come in the study file's order, as the whole report has them.
    result = invoke("study-merge", root / "b", root / "a" / "study.json", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    merged = json.loads(result.stdout)
    assert [numbers(c) for c in merged["claims"]] == [numbers(c) for c in whole["claims"]]
    assert [c["id"] for c in merged["claims"]] == ["init", "width"]
    assert json.loads((out / "study.json").read_text())["claims"] == merged["claims"]
    # he and wide are one config, run once by the whole study; each part ran it, and the counts add up the parts.
    assert (whole["runs"]["distinct"], merged["runs"]["distinct"], merged["runs"]["failed"]) == (6, 8, 0)
    assert "summed over the parts" in (out / "report.md").read_text()
    assert [p["claims"] for p in merged["merged"]] == [["width"], ["init"]]
    for claim in merged["claims"]:
        assert (out / claim["figure"]).read_bytes() == (root / "whole" / claim["figure"]).read_bytes()
    markdown = (out / "report.md").read_text()
    assert "merged the reports of 2 parts" in markdown and f"Part `{root / 'b'}` (width)" in markdown
    assert markdown.split("## Summary")[1] == (root / "whole" / "report.md").read_text().split("## Summary")[1]
    assert "<html" in (out / "report.html").read_text()
    # Without the study file (moved away), the claims keep the order given.
    (root / "study.yaml").rename(root / "moved.yaml")
    try:
        again = invoke("study-merge", root / "b", root / "a", "--out", tmp_path / "again", "--json")
    finally:
        (root / "moved.yaml").rename(root / "study.yaml")
    assert [c["id"] for c in json.loads(again.stdout)["claims"]] == ["width", "init"]


def test_a_published_copy_with_its_figures_beside_study_json_merges_too(parts, tmp_path):
    root, _ = parts
    published = tmp_path / "published"
    published.mkdir()
    shutil.copy(root / "a" / "study.json", published)
    shutil.copy(root / "a" / "figures" / "init.png", published)
    result = invoke("study-merge", published, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "figures" / "init.png").read_bytes() == (published / "init.png").read_bytes()


def test_one_report_re_renders_beside_another_budget(parts, tmp_path):
    root, whole = parts
    wider = invoke("study", root / "study.yaml", "--budget", "wider", "--only", "init", "--out", tmp_path / "wider",
                   "--runs-dir", root / "runs", "--quiet")
    assert wider.exit_code == 0, wider.output
    result = invoke("study-merge", root / "whole", "--out", tmp_path / "out", "--beside", tmp_path / "wider",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (other,) = report["other_budgets"]
    assert other["budget"] == "wider" and other["seeds"] == 3 and [c["id"] for c in other["claims"]] == ["init"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Holds at which scale" in markdown and "wider (3 seeds)" in markdown
    assert f"re-rendered the report in `{root / 'whole'}`" in markdown
    assert [numbers(c) for c in report["claims"]] == [numbers(c) for c in whole["claims"]]


def edit(folder, change):
    report = json.loads((folder / "study.json").read_text())
    change(report)
    (folder / "study.json").write_text(json.dumps(report))


@pytest.mark.parametrize("prepare, message", [
    (lambda r, t: [shutil.copytree(r / "a", t / "x")], "claim 'init' is in both"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"), edit(t / "x", lambda d: d.update(budget="wider"))],
     "budget 'wider', but"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"), edit(t / "x", lambda d: d.update(study="other"))],
     "study 'other', but"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"),
                   edit(t / "x", lambda d: d["statistics"].update(level=0.9))], "statistics settings"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"), (t / "x" / "figures" / "width.png").unlink()],
     "the figure of claim 'width' is missing"),
    (lambda r, t: [(t / "x").mkdir(), (t / "x" / "study.json").write_text("{not json")], "cannot read"),
    (lambda r, t: [(t / "x").mkdir()], "no study.json there"),
    (lambda r, t: [(t / "x").mkdir(), (t / "x" / "study.json").write_text('{"claims": [1]}')],
     "is not the study.json of a finished nnrun study"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"), edit(t / "x", lambda d: d["budget_settings"].update(seeds=3))],
     "budget settings"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"), edit(t / "x", lambda d: d.pop("machine"))],
     "lacks what a study report holds"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"), edit(t / "x", lambda d: d["claims"][0].pop("verdict"))],
     "lacks what a study report holds"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"),
                   edit(t / "x", lambda d: d["claims"][0]["relations"][0].pop("verdict"))],
     "lacks what a study report holds"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"), edit(t / "x", lambda d: d.update(sessions=[{"x": 1}]))],
     "lacks what a study report holds"),
    (lambda r, t: [shutil.copytree(r / "b", t / "x"), edit(t / "x", lambda d: d["claims"][0].update(id="../../e"))],
     "is not a claim name"),
])
def test_bad_parts_exit_2_and_write_nothing(parts, tmp_path, prepare, message):
    root, _ = parts
    prepare(root, tmp_path)
    result = invoke("study-merge", root / "a", tmp_path / "x", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_the_output_folder_is_never_a_part_and_report_files_there_stay_unless_overwrite(parts, tmp_path):
    root, _ = parts
    before = (root / "a" / "report.md").read_text()
    result = invoke("study-merge", root / "a", root / "b", "--out", root / "a")
    assert result.exit_code == 2 and "holds a report being merged" in " ".join(result.output.split())
    assert (root / "a" / "report.md").read_text() == before
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("mine")
    result = invoke("study-merge", root / "a", "--out", out)
    assert result.exit_code == 2 and "already holds report.md" in result.output
    assert (out / "report.md").read_text() == "mine"
    assert invoke("study-merge", root / "a", "--out", out, "--overwrite").exit_code == 0
    assert (out / "report.md").read_text() != "mine"
    assert invoke("study-merge", "--out", out).exit_code == 2  # no report given


def test_the_newest_part_speaks_for_the_study_and_a_merged_report_merges_again(parts, tmp_path):
    root, whole = parts
    # Part b finished later than part a, though its clock read earlier: its time zone is 3 hours behind.
    shutil.copytree(root / "a", tmp_path / "a")
    shutil.copytree(root / "b", tmp_path / "b")
    edit(tmp_path / "a", lambda d: d.update(finished="2026-01-01 12:00:00 +0000"))
    edit(tmp_path / "b", lambda d: d.update(finished="2026-01-01 10:00:00 -0300", title="B's title"))
    # Part a already carries a record of the wider budget, which --beside replaces.
    stale = {"budget": "wider", "source": "stale", "finished": None, "seeds": 3, "set": {}, "claims": []}
    edit(tmp_path / "a", lambda d: d.update(other_budgets=[stale]))
    sessions = [s for p in ("a", "b") for s in json.loads((tmp_path / p / "study.json").read_text())["sessions"]]
    # Had both parts run into one folder, b's report would list a's command too: each counts once.
    edit(tmp_path / "b", lambda d: d.update(sessions=sessions))
    first = invoke("study-merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "m1", "--json")
    assert first.exit_code == 0, first.output
    m1 = json.loads(first.stdout)
    assert m1["title"] == "B's title" and m1["finished"] == "2026-01-01 10:00:00 -0300"
    assert m1["other_budgets"] == [stale]
    assert len(m1["sessions"]) == len(sessions) == 2
    assert m1["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in sessions))

    wider = invoke("study", root / "study.yaml", "--budget", "wider", "--only", "init", "--out", tmp_path / "wider",
                   "--runs-dir", root / "runs", "--quiet")
    assert wider.exit_code == 0, wider.output
    # Re-rendered beside the wider budget: still two parts (not one part that is a merge), each session once.
    again = invoke("study-merge", tmp_path / "m1", "--out", tmp_path / "m2", "--beside", tmp_path / "wider", "--json")
    assert again.exit_code == 0, again.output
    m2 = json.loads(again.stdout)
    assert [p["source"] for p in m2["merged"]] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert m2["sessions"] == m1["sessions"] and m2["wall_seconds"] == pytest.approx(m1["wall_seconds"])
    (other,) = m2["other_budgets"]
    assert other["source"] == str(tmp_path / "wider" / "study.json")
    assert [numbers(c) for c in m2["claims"]] == [numbers(c) for c in whole["claims"]]
    markdown = (tmp_path / "m2" / "report.md").read_text()
    assert "merged the reports of 2 parts" in markdown and "summed over the parts" in markdown
