"""The report site, built from the seeded database and loaded in headless Chromium."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from chromium import Browser, chromium_binary
from seedlab import Seeded

from evallab.analysis.paired import compare_runs
from evallab.report import SiteSummary, build_site
from evallab.store import Store

REPO = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    """Where page screenshots go (git-ignored): $EVALLAB_TEST_ARTIFACTS or tests/artifacts."""
    root = Path(os.environ.get("EVALLAB_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return root / "report"


def _build_site(dsn: str, out: Path) -> SiteSummary:
    with Store(dsn) as store:
        return build_site(store, out, resamples=2000)


async def _build(dsn: str, out: Path) -> tuple[SiteSummary, dict[tuple[str, str, str, str], float]]:
    conn = await asyncpg.connect(dsn)
    try:
        summary = await asyncio.to_thread(_build_site, dsn, out)
        scores = {
            (str(r["run_id"]), r["task"], r["metric"], r["filter"]): r["value"]
            for r in await conn.fetch("SELECT run_id, task, metric, filter, value FROM scores")
        }
        return summary, scores
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def site(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteSummary, Any]:
    return asyncio.run(_build(seeded.dsn, tmp_path_factory.mktemp("site") / "site"))


def test_site_is_static_and_self_contained(site: tuple[SiteSummary, Any]) -> None:
    summary, _ = site
    out = summary.out_dir
    names = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    assert "index.html" in names
    assert {"campaigns/demo.html", "campaigns/nightly.html", "models/llama-8b.html"} <= names
    assert sum(n.startswith("compare/") for n in names) == 3  # demo ft-vs-base, awq and vllm
    assert sum(n.startswith("runs/") for n in names) == summary.runs == 17
    for path in out.rglob("*.html"):
        html = path.read_text()
        assert "<script" not in html.lower(), path
        assert not re.search(r'(src|href)="(https?:)?//', html), path
        assert "<svg" in html or path.parent.name in ("runs", "compare", "campaigns"), path


def test_pages_load_in_chromium_without_errors(site: tuple[SiteSummary, Any]) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.fail(
            "chromium is not installed: apt-get install -y --no-install-recommends chromium"
        )
    summary, scores = site
    out = summary.out_dir
    shots = artifacts_dir()
    asyncio.run(_check_pages(binary, out, scores, shots))
    print(f"\nscreenshots: {shots}")
    for kind in ("index", "campaign", "model", "run"):
        assert (shots / f"{kind}.png").stat().st_size > 10_000


async def _check_pages(
    binary: str, out: Path, scores: dict[tuple[str, str, str, str], float], shots: Path
) -> None:
    async with Browser(binary) as b:
        for path in sorted(out.rglob("*.html")):
            load = await b.load(path.as_uri())
            assert load.errors == [], (path, load.errors)
            foreign = [u for u in load.requests if not u.startswith(("file://", "data:"))]
            assert foreign == [], (path, foreign)
            assert await b.evaluate("document.title") != ""
            # Every number a table shows with data-run must be the database's value.
            cells = await b.evaluate(
                """[...document.querySelectorAll('td[data-run][data-value]')].map(td => ({
                     run: td.dataset.run,
                     task: td.dataset.task || td.closest('tr').dataset.task,
                     metric: td.dataset.metric || td.closest('tr').dataset.metric,
                     filter: td.dataset.filter || td.closest('tr').dataset.filter,
                     value: td.dataset.value,
                     text: td.querySelector('a').textContent.trim()}))"""
            )
            for c in cells:
                key = (c["run"], c["task"], c["metric"], c["filter"])
                assert float(c["value"]) == pytest.approx(scores[key]), (path, c)
                assert c["text"] == f"{float(c['value']):.4f}", (path, c)
        await _index(b, out, scores, shots)
        await _campaign(b, out, shots)
        await _model(b, out, shots)
        await _run_page(b, out, scores, shots)


async def _index(b: Browser, out: Path, scores: dict[Any, float], shots: Path) -> None:
    await b.load((out / "index.html").as_uri())
    rows = await b.evaluate(
        """[...document.querySelectorAll('#leaderboard-table tbody tr')].map(tr => ({
             combo: tr.dataset.combo,
             cells: [...tr.querySelectorAll('td[data-task]')].map(td => [td.dataset.task,
                      td.dataset.run, td.dataset.value])}))"""
    )
    combos = [r["combo"] for r in rows]
    assert "tiny-ft / transformers" in combos and "llama-8b@awq / transformers" in combos
    ft = next(r for r in rows if r["combo"] == "tiny-ft / transformers")
    by_task = {t: (run, float(v)) for t, run, v in ft["cells"]}
    run, value = by_task["demo_gen"]
    assert value == pytest.approx(scores[(run, "demo_gen", "exact_match", "none")])
    problems = await b.evaluate("document.querySelector('#problem-runs').innerText")
    assert "invalid" in problems and "GPU temperature above 82" in problems and "failed" in problems
    await b.screenshot(shots / "index.png")


async def _campaign(b: Browser, out: Path, shots: Path) -> None:
    await b.load((out / "campaigns" / "nightly.html").as_uri())
    headers = await b.evaluate(
        "[...document.querySelectorAll('#matrix th[data-column]')].map(th => th.dataset.column)"
    )
    assert headers[:3] == [
        "llama-8b / transformers",
        "llama-8b@awq / transformers",
        "llama-8b / vllm-0.32",
    ]
    awq = await b.evaluate(
        """(() => { const tr = document.querySelector('#matrix tr[data-task="arc_easy"]');
             const td = tr.querySelectorAll('td[data-value]')[1];
             return {delta: td.dataset.delta, p: td.dataset.p,
                     cls: td.querySelector('.delta').className,
                     text: td.querySelector('.delta').textContent}; })()"""
    )
    assert float(awq["delta"]) < 0 and float(awq["p"]) < 0.05
    assert "bad" in awq["cls"] and "*" in awq["text"]
    await b.screenshot(shots / "campaign.png")


async def _model(b: Browser, out: Path, shots: Path) -> None:
    await b.load((out / "models" / "llama-8b.html").as_uri())
    invalid_marks = await b.evaluate("document.querySelectorAll('svg g.invalid').length")
    assert invalid_marks == 2  # the invalid nightly run, on both of its metrics
    statuses = await b.evaluate(
        "[...document.querySelectorAll('#model-runs .pill')].map(p => p.textContent)"
    )
    assert statuses.count("invalid") == 1 and statuses.count("failed") == 1
    assert statuses.count("succeeded") == 12
    await b.screenshot(shots / "model.png")


async def _run_page(b: Browser, out: Path, scores: dict[Any, float], shots: Path) -> None:
    invalid = next(
        p for p in (out / "runs").glob("*.html") if "GPU temperature above 82" in p.read_text()
    )
    await b.load(invalid.as_uri())
    canary = await b.evaluate("document.querySelector('#canary').innerText")
    assert re.search(r"drifted\s+1", canary)
    telemetry = await b.evaluate("document.querySelector('#telemetry').innerText")
    assert "sw_thermal_slowdown" in telemetry
    assert re.search(r"samples\s+30 \(1 GPU\)", telemetry)
    assert "max 89.6667 °C" in telemetry
    prov = await b.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#provenance tr[data-field]')]"
        ".map(tr => [tr.dataset.field, tr.querySelector('td').innerText]))"
    )
    assert prov["runtime_version"] == "0.32.0" and prov["gpu_name"] == "NVIDIA H100"
    assert prov["status"] == "invalid"
    await b.screenshot(shots / "run.png")


def test_comparison_page_matches_compare(seeded: Seeded, site: tuple[SiteSummary, Any]) -> None:
    summary, _ = site
    base, ft = seeded.runs["base"], seeded.runs["ft"]
    page = summary.out_dir / "compare" / f"{base}_{ft}.html"
    assert page.exists()

    with Store(seeded.dsn) as store:
        cmp = compare_runs(store, str(base), str(ft), resamples=2000)
    binary = chromium_binary()
    if binary is None:
        pytest.fail(
            "chromium is not installed: apt-get install -y --no-install-recommends chromium"
        )

    async def check() -> None:
        async with Browser(binary) as b:
            load = await b.load(page.as_uri())
            assert load.errors == []
            rows = await b.evaluate(
                """[...document.querySelectorAll('#comparison tbody tr')].map(tr => ({
                     task: tr.dataset.task, metric: tr.dataset.metric,
                     diff: tr.dataset.diff, p: tr.dataset.p,
                     cells: [...tr.querySelectorAll('td')].map(td => td.innerText)}))"""
            )
            got = {(r["task"], r["metric"]): r for r in rows}
            for row in cmp.rows:
                r = got[(row.task, row.metric)]
                assert float(r["diff"]) == pytest.approx(row.result.diff)
                assert float(r["p"]) == pytest.approx(row.result.p_value)
                assert r["cells"][3] == f"{row.result.mean_a:.4f}"
                assert r["cells"][4] == f"{row.result.mean_b:.4f}"
                assert r["cells"][6] == f"[{row.result.ci_low:+.4f}, {row.result.ci_high:+.4f}]"
            assert got[("demo_gen", "exact_match")]["cells"][10] == "B better"
            flips = await b.evaluate(
                """[...document.querySelectorAll('table.flips[data-task="demo_gen"] tbody tr')]
                   .map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText))"""
            )
            gen = next(r for r in cmp.rows if r.task == "demo_gen")
            assert len(flips) == len(gen.flips)
            assert flips[0] == [
                "0",
                "lost",
                "Say word0 2 times:",
                "word0 word0",
                "word0 word0",
                "tiny-ft wrong answer 0",
            ]
            shot = await b.screenshot(artifacts_dir() / "compare.png")
            assert shot.stat().st_size > 10_000

    asyncio.run(check())


def test_campaigns_publishing_at_once_leave_one_complete_site(
    seeded: Seeded, tmp_path: Path
) -> None:
    # Two campaign flows on two GPUs finish together and both rebuild the leaderboard into the
    # same folder: each build is rendered aside and swapped in, so both succeed and the folder
    # holds one whole site, nothing half-deleted and no staging folder left behind.
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "site"
    with ThreadPoolExecutor(max_workers=3) as pool:
        summaries = list(pool.map(lambda _: _build_site(seeded.dsn, out), range(3)))
    assert {s.out_dir for s in summaries} == {out.resolve()}
    expected = {p.relative_to(out.resolve()) for p in summaries[0].files}
    on_disk = {p.relative_to(out) for p in out.rglob("*.html")}
    assert on_disk == expected
    assert len(expected) == summaries[0].pages > 5
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["site"]
