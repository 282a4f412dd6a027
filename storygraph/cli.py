"""The ``storygraph`` command line (click + rich). Heavy modules are imported inside the commands."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from . import __version__

from .errors import InvalidInput, NotFound, Refused, StorygraphError

# the exit codes of the error kinds (storygraph.errors), for the places that name one
EXIT_FAILED = 1
EXIT_BAD_INPUT = InvalidInput.exit_code
EXIT_REFUSED = Refused.exit_code

GRAPH_HELP = ("where the story's graph lives when not in the story folder: neo4j://host:7687 (also bolt://, "
              "neo4j+s://)")
DIR_HELP = "story folder: the embedded graph, media, vector index and storygraph.toml"


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # piped: wide enough that tables keep their ids whole
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=200)
    return console


def _report(label: str, message: str) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]{escape(label)}[/] {escape(message)}", markup=True, highlight=False)


def _fail(message: str, code: int = EXIT_FAILED):
    _report("error:", message)
    sys.exit(code)


def _load_story(path: str):
    from .storyfile import load_story

    return load_story(path)


def _open_store(graph: str, story: str | None, database: str | None, create: bool = True):
    from .graphdb import open_store

    return open_store(graph, story, database=database, create=create)


class _Storygraph(click.Group):
    """The command group, and the one place where errors become exit codes: a :class:`StorygraphError` prints
    one line (no traceback) and exits with its kind's ``exit_code`` (see :mod:`storygraph.errors`)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StorygraphError as e:
            _report(e.label, str(e))
            ctx.exit(e.exit_code)


# -- where a story is: --dir DIR, --graph URI ---------------------------------------------------------------
#
# Every command that works on a story folder takes ``--dir/-d DIR``; ``--graph/-g`` says where the graph lives
# when it is not embedded in the folder (a Neo4j URI). For scripts written before ``--dir`` was everywhere, a
# folder given to ``--graph`` still means ``--dir``, and commands that took the folder as a positional argument
# still do (neither is shown in --help).


class _CompatArgument(click.Argument):
    """An optional positional argument kept for old command lines, left out of the usage line."""

    def get_usage_pieces(self, ctx: click.Context) -> list:
        return []


def _where(directory, graph, positional=None) -> tuple[Path | None, str | None]:
    """``(story folder, Neo4j URI)`` from ``--dir``, ``--graph`` and an old-style positional folder."""
    from .graphdb.neo4j import is_neo4j_uri

    folders = {str(Path(d)) for d in (directory, positional) if d is not None}
    uri = None
    if graph is not None:
        if is_neo4j_uri(graph):
            uri = graph
        else:
            folders.add(str(Path(graph)))
    if len(folders) > 1:
        raise InvalidInput(f"two story folders given ({', '.join(sorted(folders))}): pass one with --dir")
    return (Path(folders.pop()) if folders else None), uri


def _location_options(f, positional: bool):
    f = click.option("--graph", "-g", "graph_", default=None, metavar="URI", help=GRAPH_HELP)(f)
    f = click.option("--dir", "-d", "dir_", default=None, type=click.Path(file_okay=False), help=DIR_HELP)(f)
    if positional:
        f = click.argument("old_dir", required=False, cls=_CompatArgument, type=click.Path(file_okay=False))(f)
    return f


def graph_options(f):
    """``--dir``/``--graph``, ``--story`` and ``--database`` for commands that read or write a story's graph.

    The command gets ``graph``: the Neo4j URI, else the story folder (its embedded graph); and ``directory``,
    the story folder, when it names that parameter."""
    takes_dir = "directory" in inspect.signature(f).parameters

    @functools.wraps(f)
    def command(*args, dir_=None, graph_=None, **kwargs):
        folder, uri = _where(dir_, graph_)
        if folder is None and uri is None:
            raise click.UsageError("name the story: --dir DIR (or --graph neo4j://…)")
        if takes_dir:
            kwargs["directory"] = folder
        return f(*args, graph=uri or str(folder), **kwargs)

    command = click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")(command)
    command = click.option("--story", "story_id", default=None, help="story id, when the graph holds several")(command)
    return _location_options(command, positional=False)


def folder_options(positional: bool = False, default: str | None = None):
    """``--dir`` (required unless ``default``) and ``--graph`` for commands that work in a story folder; they
    get ``directory`` (a Path) and ``graph`` (a Neo4j URI or None). ``positional``: the folder may also come
    as the old positional argument."""

    def decorate(f):
        @functools.wraps(f)
        def command(*args, dir_=None, graph_=None, old_dir=None, **kwargs):
            folder, uri = _where(dir_, graph_, old_dir)
            if folder is None and default is None:
                raise click.UsageError("name the story folder: --dir DIR")
            return f(*args, directory=folder or Path(default), graph=uri, **kwargs)

        return _location_options(command, positional)

    return decorate


@click.group(cls=_Storygraph, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="storygraph")
def main():
    """storygraph: a story engine for LTX-2 whose memory is a graph database."""


@main.command()
@folder_options(positional=True)
def init(directory, graph):
    """Create a story folder with a storygraph.toml holding every setting."""
    from .config import CONFIG_NAME, Config

    d = Path(directory)
    if (d / CONFIG_NAME).exists():
        _console().print(f"{d / CONFIG_NAME} already exists; left unchanged")
        return
    d.mkdir(parents=True, exist_ok=True)
    (d / "media").mkdir(exist_ok=True)
    path = Config().save(d)
    _console().print(f"created {path}\nnext: storygraph load STORY.yaml --dir {d}")


@main.command()
@click.argument("story_file", type=click.Path(dir_okay=False))
def validate(story_file):
    """Check a story file; exit 2 with file, line and field if it is broken."""
    story = _load_story(story_file)
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
    story = _load_story(story_file)
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
    except (json.JSONDecodeError, RecursionError):
        return key, value


def _timeout_option(ctx, param, value):
    from .graphdb.console import check_timeout
    from .graphdb.store import QueryError

    try:
        return check_timeout(value)
    except QueryError as e:
        raise click.BadParameter(str(e)) from None


@contextmanager
def _reading_store(graph: str, story_id, database):
    """A store to read from: the story itself or, when another process holds it open for writing, a consistent
    snapshot that process makes for us (see graphdb/holder.py)."""
    from .graphdb import StoryLocked, open_store
    from .graphdb.holder import holder_of, remote_snapshot

    try:
        store = open_store(graph, story_id, database=database, create=False)
    except StoryLocked:
        info = holder_of(graph)
        if info is None:
            raise
        with remote_snapshot(info, graph) as snapshot:
            store = open_store(snapshot, story_id, read_only=True, create=False)
            try:
                yield store
            finally:
                store.close()
        return
    try:
        yield store
    finally:
        store.close()


@main.command()
@click.argument("cypher")
@graph_options
@click.option("--param", "-p", "params", multiple=True, help="query parameter key=value (value parsed as JSON if it can be)")
@click.option("--json", "as_json", is_flag=True, help="print JSON rows instead of a table")
@click.option("--timeout", type=float, default=30.0, show_default=True, callback=_timeout_option,
              help="seconds before the query is stopped, parsing included (0.001 to 3600)")
@click.option("--max-rows", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="rows returned at most; more are cut and the output says so")
def query(cypher, graph, story_id, database, params, as_json, timeout, max_rows):
    """Run a read-only Cypher query over a story. Writes, files and settings are refused.

    On an embedded story that `storygraph run`, `resume` or `studio` holds open, the query is answered by
    that process.
    """
    from .graphdb import QueryError, ReadOnlyViolation, StoryLocked, open_store
    from .graphdb.holder import holder_of, remote_query

    values = dict(_parse_param(p) for p in params)
    try:
        try:
            store = open_store(graph, story_id, database=database, create=False)
        except StoryLocked:
            info = holder_of(graph)
            if info is None:
                raise
            result = remote_query(info, cypher, values, timeout, max_rows)
        else:
            try:
                result = store.query(cypher, values, read_only=True, timeout_s=timeout, max_rows=max_rows)
            finally:
                store.close()
    except ReadOnlyViolation as e:
        _fail(f"{e} (the graph is unchanged)", EXIT_REFUSED)
    except QueryError as e:
        _fail(f"query failed: {e}", EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps(result.records(), ensure_ascii=False, default=str))
        if result.truncated:
            _console(stderr=True).print(f"truncated: only the first {len(result.rows)} rows (--max-rows)")
        return
    from rich.table import Table

    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*(json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v for v in row))
    console = _console()
    console.print(table)
    more = f" — truncated: more rows matched (raise --max-rows)" if result.truncated else ""
    console.print(f"{len(result.rows)} row(s){more}")


@main.command()
@graph_options
def show(graph, story_id, database):
    """A summary of a story: scenes by status, characters, branches, memory."""
    with _reading_store(graph, story_id, database) as store:
        meta = store.story_meta()
        if meta is None:
            raise NotFound(f"{graph} holds no story (or several: name one with --story)")
        scenes = store.scenes()
        characters = store.characters()
        transitions = store.transitions()
        appearances = sum(1 for _ in store.appearance_keys())
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


def _engine(directory, graph=None, story_id=None, database=None, config=None):
    from .engine.engine import StoryEngine

    return StoryEngine.open(directory, graph=graph, config=config, story=story_id, database=database)


def _unexpected(e: Exception) -> None:
    """A model or library failure while generating: one line, not a traceback (a StorygraphError is left to the
    command group)."""
    if isinstance(e, StorygraphError):
        raise e
    _fail(f"{type(e).__name__}: {e}")


@contextmanager
def _holding(engine):
    """While this process holds an embedded story, answer other local processes' reads of it (holder.py)."""
    if getattr(engine.store, "backend", None) != "ladybug":
        yield
        return
    from .graphdb.holder import HolderService

    service = HolderService(engine.store, engine.dir).start()
    try:
        yield
    finally:
        service.close()


def _run_with_progress(engine, takes=None, until=None, note: str = "", timings=None) -> list:
    """Run unfinished scenes with a rich progress bar per scene and per stage; with ``timings`` (a path), append
    one JSON line per committed scene saying where its time went."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .engine.engine import STAGES

    if timings:
        out = Path(timings)
        out.parent.mkdir(parents=True, exist_ok=True)

        def write_timings(record):
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

        engine.on_timings(write_timings)

    todo = [s for s in engine.store.scenes() if s.status != "done"]
    console = _console()
    if note:
        console.print(f"[yellow]{note}[/]", markup=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        story_task = progress.add_task("story", total=len(todo))
        stage_task = progress.add_task("", total=len(STAGES))

        def on_stage(scene_id, stage, info):
            if stage == "plan":
                progress.update(stage_task, completed=0)
            progress.update(stage_task, description=f"{scene_id}: {stage}", completed=STAGES.index(stage) + 1)
            if stage == "commit":
                progress.advance(story_task)

        done = engine.run(until=until, takes=takes, progress=on_stage)
    return done


def _summary(engine) -> None:
    scenes = engine.store.scenes()
    by: dict = {}
    for s in scenes:
        by[s.status] = by.get(s.status, 0) + 1
    _console().print(f"{len(scenes)} scenes: " + ", ".join(f"{n} {k}" for k, n in sorted(by.items())))
    for s in scenes:
        if s.status == "failed":
            _console().print(f"[red]{s.id} failed:[/] {s.notes.strip().splitlines()[-1] if s.notes else ''}",
                             markup=True)


@main.command()
@click.argument("story_file", type=click.Path(dir_okay=False))
@folder_options()
@click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")
@click.option("--model", default=None, help="LTX-2 weights: a folder or hub id (overrides models.ltx2)")
@click.option("--takes", type=int, default=None, help="takes per scene; the best continues the timeline")
@click.option("--until", default=None, help="stop after this scene")
@click.option("--timings", type=click.Path(dir_okay=False), default=None,
              help="append one JSON line per scene to this file: seconds per stage, the generator's, memory")
def run(story_file, directory, graph, database, model, takes, until, timings):
    """Load a story and generate every scene in timeline order."""
    from .config import Config

    story = _load_story(story_file)
    config = Config.load(directory) if Path(directory).exists() else Config()
    if model:
        config = config.with_overrides(models={"ltx2": model})
    engine = _engine(directory, graph, story.id, database, config)
    try:
        with _holding(engine):
            engine.load(story)
            _run_with_progress(engine, takes=takes, until=until, timings=timings)
            _summary(engine)
    except Exception as e:  # noqa: BLE001 - a clear line for any model or library error
        _unexpected(e)
    finally:
        engine.close()


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")
@click.option("--takes", type=int, default=None, help="takes per scene; the best continues the timeline")
@click.option("--timings", type=click.Path(dir_okay=False), default=None,
              help="append one JSON line per scene to this file: seconds per stage, the generator's, memory")
def resume(directory, graph, story_id, database, takes, timings):
    """Finish a run that was stopped or killed, from the first unfinished scene."""
    _existing(directory)
    engine = _engine(directory, graph, story_id, database)
    try:
        with _holding(engine):
            _run_with_progress(engine, takes=takes, timings=timings)
            _summary(engine)
    except Exception as e:  # noqa: BLE001
        _unexpected(e)
    finally:
        engine.close()


def _existing(directory: Path) -> None:
    if not Path(directory).is_dir():
        raise click.UsageError(f"no story folder {directory}")


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--format", "fmt", type=click.Choice(["ltx-trainer"]), default="ltx-trainer", show_default=True)
@click.option("--out", default=None, help="output folder (default DIR/export)")
@click.option("--min-identity", type=float, default=None)
@click.option("--min-text-alignment", type=float, default=None)
@click.option("--min-subject-consistency", type=float, default=None)
@click.option("--min-transition-smoothness", type=float, default=None)
@click.option("--ic-lora", is_flag=True, help="add each scene's parent video as reference_path (IC-LoRA)")
def export(directory, graph, story_id, fmt, out, min_identity, min_text_alignment, min_subject_consistency,
           min_transition_smoothness, ic_lora):
    """Write a training set (dataset.json + videos, scores and embeddings beside it)."""
    from .engine.export import ExportFilter, export_ltx_trainer

    _existing(directory)
    with _reading_store(graph or directory, story_id, None) as store:
        result = export_ltx_trainer(store, out or Path(directory) / "export", ExportFilter(
            min_identity, min_text_alignment, min_subject_consistency, min_transition_smoothness), ic_lora=ic_lora)
    _console().print(f"wrote {result['entries']} entries to {result['dir']}/dataset.json "
                     f"({result['skipped']} skipped by the filters)")


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--out", default=None, help="output folder (default DIR/report)")
def report(directory, graph, story_id, out):
    """A PNG and an HTML page: identity per character and the other scores across the story."""
    from .engine.report import write_report

    _existing(directory)
    with _reading_store(graph or directory, story_id, None) as store:
        meta = store.story_meta() or {}
        result = write_report(store, out or Path(directory) / "report", title=meta.get("title", ""))
    _console().print(f"wrote {result['html']} and {result['png']}")


@main.command()
@folder_options(positional=True, default="storygraph-demo")
@click.option("--overwrite", is_flag=True, help="replace the folder if it exists")
def demo(directory, graph, overwrite):
    """The example story end to end with tiny random-weight models made on the spot (a smoke run)."""
    import shutil
    import time

    from .engine import demo as demo_mod

    d = Path(directory)
    if d.exists() and any(d.iterdir()):
        if not overwrite:
            _fail(f"{d} exists and is not empty; pass --overwrite or another folder", EXIT_BAD_INPUT)
        shutil.rmtree(d)
    t0 = time.perf_counter()
    console = _console()
    console.print(f"[bold yellow]{demo_mod.SMOKE_NOTE}[/]", markup=True)
    console.print("building tiny CLIP, DINOv2 and LTX-2 models from configs…")
    config = demo_mod.prepare(d)
    story = demo_mod.demo_story(_load_story(str(demo_mod.example_story_path())))
    engine = _engine(d, graph, config=config)
    try:
        engine.load(story)
        _run_with_progress(engine)
        _summary(engine)
        from .engine.report import write_report

        write_report(engine.store, d / "report", title=f"{story.title} (smoke run)", note=demo_mod.SMOKE_NOTE)
    finally:
        engine.close()
    console.print(f"done in {time.perf_counter() - t0:.1f} s: story in {d}, report in {d / 'report' / 'report.html'}\n"
                  f"explore it: storygraph show --dir {d} · storygraph studio --dir {d}")


def _viewer_options(f):
    f = click.option("--allow-remote", is_flag=True,
                     help="allow a non-loopback --host (anyone who reaches it and holds the token can edit)")(f)
    f = click.option("--port", type=int, default=8765, show_default=True)(f)
    f = click.option("--host", default="127.0.0.1", show_default=True)(f)
    return f


def _serve(app, host, port, allow_remote):
    from .webviz.server import serve

    try:
        serve(app, host=host, port=port, allow_remote=allow_remote, announce=lambda t: _console(stderr=True).print(t))
    except OSError as e:
        _fail(f"cannot listen on {host}:{port}: {e}")


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_file", default=None, type=click.Path(dir_okay=False),
              help="load (or update) this story file first")
@_viewer_options
def studio(directory, graph, story_file, host, port, allow_remote):
    """The live viewer and the engine in one process: watch, query, edit and generate scene by scene."""
    from .webviz import create_app

    engine = _engine(directory, graph)
    try:
        with _holding(engine):
            if story_file:
                engine.load(_load_story(story_file))
            app = create_app(engine.store, engine, story_dir=engine.dir)
            _serve(app, host, port, allow_remote)
    finally:
        engine.close()


@main.command()
@graph_options
@_viewer_options
def serve(graph, directory, story_id, database, host, port, allow_remote):
    """A viewer that follows a story's event log (read-only; several can run against Neo4j)."""
    from .webviz import create_app

    store = _open_store(graph, story_id, database, create=False)
    try:
        app = create_app(store, None, story_dir=directory)
        _serve(app, host, port, allow_remote)
    finally:
        store.close()


@main.group()
def models():
    """Model weights: what is configured and whether it is there."""


@models.command("check")
@folder_options(default=".")
def models_check_cmd(directory, graph):
    """List the configured encoder and generator models, whether their files are present, and the device."""
    from rich.table import Table

    from .config import Config
    from .engine.models import models_check

    config = Config.load(directory)
    rows = models_check(config, story_dir=directory)
    table = Table("model", "role", "source", "present", "device", "note")
    for r in rows:
        table.add_row(r["name"], r["role"], r["source"], "yes" if r["present"] else "[red]no[/]", r["device"],
                      r.get("note", ""))
    _console().print(table)
    if not all(r["present"] for r in rows):
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
