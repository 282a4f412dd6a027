"""The ``storygraph`` command line (click + rich). Heavy modules are imported inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__

EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_FAILED = 1

GRAPH_HELP = "story folder (embedded LadybugDB) or neo4j://host:7687 (also bolt://, neo4j+s://)"


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = EXIT_FAILED):
    _console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    sys.exit(code)


def _load_story_or_exit(path: str):
    from .storyfile import StoryFileError, load_story

    try:
        return load_story(path)
    except StoryFileError as e:
        _console(stderr=True).print(f"[bold red]invalid story file[/] {e}", markup=True)
        sys.exit(EXIT_BAD_INPUT)


def _open_store(graph: str, story: str | None, database: str | None, create: bool = True):
    from .graphdb import StoreError, open_store

    try:
        return open_store(graph, story, database=database, create=create)
    except StoreError as e:
        _fail(str(e))


def graph_options(f):
    f = click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")(f)
    f = click.option("--story", "story_id", default=None, help="story id, when the graph holds several")(f)
    f = click.option("--graph", "-g", required=True, help=GRAPH_HELP)(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="storygraph")
def main():
    """storygraph: a story engine for LTX-2 whose memory is a graph database."""


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
def init(directory):
    """Create a story folder with a storygraph.toml holding every setting."""
    from .config import CONFIG_NAME, Config

    d = Path(directory)
    if (d / CONFIG_NAME).exists():
        _console().print(f"{d / CONFIG_NAME} already exists; left unchanged")
        return
    d.mkdir(parents=True, exist_ok=True)
    (d / "media").mkdir(exist_ok=True)
    path = Config().save(d)
    _console().print(f"created {path}\nnext: storygraph load STORY.yaml --graph {d}")


@main.command()
@click.argument("story_file", type=click.Path(dir_okay=False))
def validate(story_file):
    """Check a story file; exit 2 with file, line and field if it is broken."""
    story = _load_story_or_exit(story_file)
    from .timeline import place_scenes

    branches = {p.branch for p in place_scenes([s.id for s in story.scenes], list(story.transitions)).values()}
    _console().print(
        f"[green]ok[/] {story_file}: story {story.id!r}, {len(story.characters)} characters, "
        f"{len(story.environments)} environments, {len(story.scenes)} scenes, "
        f"{len(story.transitions)} transitions, {len(branches)} branch(es)", markup=True)


@main.command()
@click.argument("story_file", type=click.Path(dir_okay=False))
@graph_options
def load(story_file, graph, story_id, database):
    """Load (or update) a story file into a graph. Loading the same file twice changes nothing."""
    story = _load_story_or_exit(story_file)
    store = _open_store(graph, story_id or story.id, database)
    try:
        summary = store.load_story(story)
    finally:
        store.close()
    new = ", ".join(f"{n} {k}" for k, n in summary.created.items() if n) or "nothing new"
    _console().print(
        f"loaded {story.id!r} into {graph}: {summary.scenes} scenes, {summary.characters} characters, "
        f"{summary.environments} environments, {summary.transitions} transitions ({new})")


def _parse_param(text: str):
    if "=" not in text:
        raise click.BadParameter(f"{text!r}: expected key=value")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


@main.command()
@click.argument("cypher")
@graph_options
@click.option("--param", "-p", "params", multiple=True, help="query parameter key=value (value parsed as JSON if it can be)")
@click.option("--json", "as_json", is_flag=True, help="print JSON rows instead of a table")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="seconds before the query is stopped")
def query(cypher, graph, story_id, database, params, as_json, timeout):
    """Run a read-only Cypher query over a story. Writes are refused."""
    from .graphdb import QueryError, ReadOnlyViolation

    values = dict(_parse_param(p) for p in params)
    store = _open_store(graph, story_id, database, create=False)
    try:
        result = store.query(cypher, values, read_only=True, timeout_s=timeout)
    except ReadOnlyViolation as e:
        _fail(f"{e} (the graph is unchanged)", EXIT_REFUSED)
    except QueryError as e:
        _fail(f"query failed: {e}", EXIT_BAD_INPUT)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(result.records(), ensure_ascii=False, default=str))
        return
    from rich.table import Table

    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*(json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v for v in row))
    console = _console()
    console.print(table)
    console.print(f"{len(result.rows)} row(s)")


@main.command()
@graph_options
def show(graph, story_id, database):
    """A summary of a story: scenes by status, characters, branches, memory."""
    store = _open_store(graph, story_id, database, create=False)
    try:
        meta = store.story_meta()
        if meta is None:
            _fail(f"{graph} holds no story (or several: name one with --story)")
        scenes = store.scenes()
        characters = store.characters()
        transitions = store.transitions()
        appearances = sum(1 for _ in store.appearance_keys())
    finally:
        store.close()
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{meta['title']}[/] ({meta['id']}) in {graph}", markup=True)
    by_status: dict = {}
    for s in scenes:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    branches = {s.placement.branch for s in scenes}
    console.print(f"{len(scenes)} scenes ({', '.join(f'{n} {k}' for k, n in sorted(by_status.items()))}), "
                  f"{len(branches)} branch(es), {len(transitions)} transitions, {len(characters)} characters, "
                  f"{appearances} remembered appearances")
    table = Table()
    for name in ("scene", "clock", "branch", "status", "characters", "identity"):
        table.add_column(name, no_wrap=True)
    table.add_column("action", no_wrap=True, overflow="ellipsis", max_width=60)
    for s in scenes:
        ident = "" if s.scores.identity is None else f"{s.scores.identity:.3f}"
        table.add_row(s.id, f"{s.clock:g}", s.placement.branch, s.status, ", ".join(s.spec.characters), ident,
                      s.spec.action)
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
