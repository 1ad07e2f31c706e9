"""Every shell block in README.md and docs/*.md does what the doc says (the documentation's
doc test, as Rust's doc tests or cram keep docs honest).

One daemon runs the documented default configuration (agentd.toml on free ports) in a scratch
copy of the repository; the README's blocks run first, in order (the tour), then each doc's.
A `console` block's output is compared with what the doc shows (ids, pids, times and numbers
are placeholders by shape; `...` lines and `…` skip). Blocks marked `<!-- doc-test: skip
REASON -->` (systemd, Kubernetes, a GPU, `make run`) are checked for shell syntax only; how to
mark one is in tests/docs/doc_blocks.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.doc_blocks import (
    Block,
    DocTestError,
    blocks_in,
    expected_matches,
)
from tests.docs.doc_tour import Tour, make_scratch
from tests.harness import REPO, DaemonProcess

# the order a new user reads them in: the README's tour first, the worked examples next
DOCS = [REPO / "README.md", REPO / "docs" / "loan-example.md", REPO / "docs" / "agents.md"]
DOCS += sorted(p for p in (REPO / "docs").glob("*.md") if p not in DOCS)
DOCS += sorted(REPO.glob("agentd/*/README.md")) + sorted(REPO.glob("deploy/*/README.md"))


def every_block() -> list[Block]:
    return [block for path in DOCS for block in blocks_in(path)]


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    root = tmp_path_factory.mktemp("agentd")
    scratch = make_scratch(root)
    daemon = DaemonProcess(root / "agentd.toml")
    try:
        daemon.wait_ready()
        yield Tour(scratch)
    finally:
        daemon.stop()
        daemon.close()


@pytest.mark.timeout(600)  # the README tour: many commands, one daemon (slow on a loaded host)
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_command_does_what_the_doc_says(doc: Path, tour: Tour) -> None:
    blocks = [b for b in every_block() if b.path == doc]
    for block in blocks:
        tour.run_block(block)
    failures, tour.failures[:] = list(tour.failures), []
    timings, tour.timings[:] = list(tour.timings), []
    for took, where in sorted(timings, reverse=True)[:5]:  # shown with -s, or on failure
        print(f"{took:5.1f}s {where}")
    assert not failures, f"{len(failures)} commands in {doc.name} disagree:\n" + "\n".join(failures)


def test_the_docs_have_blocks_and_most_of_them_run() -> None:
    blocks = every_block()
    runnable = [b for b in blocks if b.skip is None]
    assert len(runnable) >= 10, [b.where for b in blocks]
    assert all(b.skip.strip() for b in blocks if b.skip is not None)


def test_a_directive_the_reader_misspelt_is_an_error(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("<!-- doc-test: skipp systemd -->\n```sh\nls\n```\n")
    with pytest.raises(DocTestError, match=r"x.md:1: unknown doc-test directive 'skipp'"):
        blocks_in(doc)


def test_blocks_commands_and_expected_output_are_read_as_written(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n"
        "<!-- doc-test: let ID = echo 7 -->\n"
        '<!-- doc-test: fails "--operator carol" -->\n'
        "```console\n$ agentctl ps\nAGENT  PID\necho   12\n\n$ agentctl approve ID\n```\n"
        "```sh\nmake run   # a comment\n# only prose\nfoo \\\n  --bar\n```\n"
        "```toml\n[x]\n```\n"
    )
    first, second = blocks_in(doc)
    assert first.lets == {"ID": "echo 7"} and first.fails == ["--operator carol"]
    assert [(c.text, c.expected, c.line) for c in first.commands] == [
        ("agentctl ps", ["AGENT  PID", "echo   12"], 5),
        ("agentctl approve ID", [], 9),
    ]
    assert [c.text for c in second.commands] == ["make run   # a comment", "foo \\\n  --bar"]
    assert second.lets == {}  # directives bind to the block right below them only


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        (["agentd 0.1.0  pid 6688  up 8s"], ["agentd 0.1.0  pid 91234  up 12s"], True),
        (["agentd 0.1.0  pid 6688  up 8s"], ["agentd 0.1.0  pid 91234  down 12s"], False),
        (["echo   0fdc2bba90baa6d3  echo-0"], ["echo 9a1b2c3d4e5f6a7b echo-0"], True),
        (["state  /home/you/agentd/.agentd"], ["state  /tmp/x/.agentd"], True),
        (["state  /home/you/agentd/.agentd"], ["state  /elsewhere/.agentd"], False),
        (["{", "...", "}"], ["{", '  "a": 1', '  "b": 2', "}"], True),
        (["{", "...", "}"], ["{", '  "a": 1'], False),
        (['  "text": "hi"'], ['  "text": "ho"'], False),
        (["policy loaded: version …"], ["policy loaded: version ab12"], True),
        (["a"], ["a", "b"], False),
    ],
)
def test_output_comparison_takes_ids_and_times_as_placeholders_and_nothing_else(
    expected: list[str], actual: list[str], ok: bool
) -> None:
    assert (expected_matches(expected, actual, "/tmp/x") is None) is ok
